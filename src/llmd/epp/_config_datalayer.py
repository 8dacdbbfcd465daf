"""The loader's `dataLayer`, `parser` and `flowControl` sections (llm-d's top-level fields).

- `dataLayer.sources[].pluginRef` names a data source (`metrics-data-source`) and each
  `extractors[].pluginRef` an extractor (`core-metrics-extractor`). llmd scrapes one metrics
  source per endpoint, read by one extractor. Without `dataLayer`, as llm-d does, the declared
  source and extractor are used, or default ones are created; `dataLayer: {sources: []}` turns
  scraping off (endpoints then have no metrics and count as saturated).
- `parser.pluginRef` names a parser; without it `openai-parser` (llm-d's fallback).
- `flowControl` (queueing) is not implemented: a non-empty section or the `flowControl` feature
  gate is an error rather than a silently unqueued EPP; an empty section without the gate
  configures nothing and loads.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmd.config import did_you_mean
from llmd.epp._config_models import EndpointPickerConfigFile
from llmd.epp.plugins import DataSource, MetricsExtractor, Parser, PluginRegistry
from llmd.epp.plugins.datalayer.core_metrics import CoreMetricsExtractor
from llmd.epp.plugins.datalayer.metrics_source import MetricsDataSource
from llmd.epp.plugins.parser.openai import OpenAIParser

__all__ = ["UNIMPLEMENTED", "MetricsBinding", "check_flow_control", "data_layer", "parser"]

Fail = Callable[[str, str], None]

UNIMPLEMENTED = {
    "vllmgrpc-parser": "parser (vLLM's gRPC API)",
    "vertexai-parser": "parser (Vertex AI's gRPC API)",
}
"""llm-d plugin types llmd knows of but does not implement: named in the error, not 'unknown'."""

_FLOW_CONTROL = (
    "llmd does not implement llm-d's flow control (request queueing behind the flowControl "
    "feature gate); remove it: without it llmd sheds sheddable requests (priority < 0) with "
    "429 while the saturation detector reports the pool saturated")


@dataclass(frozen=True, slots=True)
class MetricsBinding:
    """The metrics source the scraper polls and the extractor that reads its pages."""

    source: DataSource
    extractor: MetricsExtractor


def check_flow_control(spec: EndpointPickerConfigFile, fail: Fail) -> None:
    for i, gate in enumerate(spec.feature_gates):
        if gate == "flowControl":
            fail(f"featureGates[{i}]", f"'flowControl': {_FLOW_CONTROL}")
    if spec.flow_control:
        fail("flowControl", _FLOW_CONTROL)


def parser(spec: EndpointPickerConfigFile, plugins: dict[str, Any], broken: Collection[str],
           registry: PluginRegistry, fail: Fail) -> Parser | None:
    """The configured parser, or a default `openai-parser` (None: reported as a problem)."""
    if spec.parser is None:
        existing = plugins.get(OpenAIParser.type)
        if isinstance(existing, Parser):
            return existing
        created = OpenAIParser(OpenAIParser.type, OpenAIParser.Params())
        plugins.setdefault(created.name, created)
        return created
    found = _ref(spec.parser.plugin_ref, "parser.pluginRef", Parser, "parser", plugins, broken,
                 registry, fail)
    return found if isinstance(found, Parser) else None


def data_layer(spec: EndpointPickerConfigFile, plugins: dict[str, Any], broken: Collection[str],
               registry: PluginRegistry, fail: Fail) -> MetricsBinding | None:
    """What the scraper polls; None when nothing is (or a problem was reported)."""
    if spec.data_layer is None:
        return _implicit(plugins, fail)
    binding: MetricsBinding | None = None
    for i, src in enumerate(spec.data_layer.sources):
        at = f"dataLayer.sources[{i}]"
        source = _ref(src.plugin_ref, f"{at}.pluginRef", DataSource, "data source", plugins,
                      broken, registry, fail)
        extractors = [_ref(e.plugin_ref, f"{at}.extractors[{j}].pluginRef", MetricsExtractor,
                           "extractor", plugins, broken, registry, fail)
                      for j, e in enumerate(src.extractors)]
        if not src.extractors and source is not None:
            fail(f"{at}.extractors", f"{src.plugin_ref!r} has no extractor, so its metrics "
                 f"would never be read (extractors: {_names(plugins, MetricsExtractor)}; "
                 f"extractor types: {_types(registry, MetricsExtractor)})")
        elif len(src.extractors) > 1:
            fail(f"{at}.extractors", "llmd reads a metrics source with one extractor, got "
                 + ", ".join(e.plugin_ref for e in src.extractors))
        if i > 0:
            fail(f"{at}.pluginRef", f"llmd scrapes one metrics source per endpoint; "
                 f"{src.plugin_ref!r} would be a second after "
                 f"{spec.data_layer.sources[0].plugin_ref!r}")
        elif isinstance(source, DataSource) and len(extractors) == 1 and isinstance(
                extractors[0], MetricsExtractor):
            binding = MetricsBinding(source, extractors[0])
    return binding


def _implicit(plugins: dict[str, Any], fail: Fail) -> MetricsBinding | None:
    """llm-d without `dataLayer`: the declared source and extractor, or default ones."""
    sources = [p for p in plugins.values() if isinstance(p, DataSource)]
    extractors = [p for p in plugins.values() if isinstance(p, MetricsExtractor)]
    for found, what in ((sources, "data sources"), (extractors, "extractors")):
        if len(found) > 1:
            fail("dataLayer", f"missing, and the plugins declare several {what} "
                 f"({', '.join(p.name for p in found)}): say which to use in "
                 "dataLayer.sources")
            return None
    source = sources[0] if sources else MetricsDataSource(
        MetricsDataSource.type, MetricsDataSource.Params())
    extractor = extractors[0] if extractors else CoreMetricsExtractor(
        CoreMetricsExtractor.type, CoreMetricsExtractor.Params())
    plugins.setdefault(source.name, source)
    plugins.setdefault(extractor.name, extractor)
    return MetricsBinding(source, extractor)


def _ref(ref: str, path: str, kind: type, what: str, plugins: dict[str, Any],
         broken: Collection[str], registry: PluginRegistry, fail: Fail) -> object | None:
    """The plugin `ref` names if it is a `kind`; otherwise report at `path` and return None."""
    if ref in broken:
        return None  # its parameters were already reported
    plugin = plugins.get(ref)
    if isinstance(plugin, kind):
        return plugin
    allowed = (f"{what}s: {_names(plugins, kind)}; {what} types: {_types(registry, kind)}")
    if plugin is None and ref in UNIMPLEMENTED:
        fail(path, f"{ref!r} is an llm-d {UNIMPLEMENTED[ref]} that llmd does not implement "
             f"({allowed})")
    elif plugin is None:
        fail(path, f"{ref!r} is not defined ({allowed}){did_you_mean(ref, plugins)}")
    else:
        article = "an" if what[0] in "aeiou" else "a"
        fail(path, f"{ref!r} is a {type(plugin).type} plugin, not {article} {what} ({allowed})")
    return None


def _names(plugins: dict[str, Any], kind: type) -> str:
    return ", ".join(n for n, p in plugins.items() if isinstance(p, kind)) or "none"


def _types(registry: PluginRegistry, kind: type) -> str:
    """Registry types whose instances are a `kind` (checked on a default-built instance, which
    is cheap: plugins do no I/O when built; only error messages call this)."""
    found = []
    for t, cls in registry.items():
        try:
            plugin = cls(t, cls.Params())
        except ValidationError:
            continue  # a type without defaults for every parameter (test fakes)
        if isinstance(plugin, kind):
            found.append(t)
    return ", ".join(sorted(found)) or "none"
