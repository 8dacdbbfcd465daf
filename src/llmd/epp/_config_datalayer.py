"""The loader's `dataLayer` and `parser` sections (llm-d's top-level fields).

- `dataLayer.sources[].pluginRef` names a data source (`metrics-data-source`) and each
  `extractors[].pluginRef` an extractor (`core-metrics-extractor`). llmd scrapes one metrics
  source per endpoint, read by one extractor. Without `dataLayer.sources`, as llm-d does, the
  declared source and extractor are used, or default ones are created; `dataLayer: {sources:
  []}` turns scraping off (endpoints then have no metrics and count as saturated).
- `dataLayer.crossReplica` and peer discovery: `_config_replica`.
- `requestHandler.parsers` (`_config_v1`; v1alpha1 `parser.pluginRef`) names the parser;
  without it `openai-parser`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from llmd.config import did_you_mean
from llmd.epp._config_models import EndpointPickerConfigFile
from llmd.epp._config_plugins import ConfigPlugins
from llmd.epp._config_unsupported import unsupported_message
from llmd.epp.plugins import DataSource, MetricsExtractor, Parser
from llmd.epp.plugins.datalayer.core_metrics import CoreMetricsExtractor
from llmd.epp.plugins.datalayer.metrics_source import MetricsDataSource
from llmd.epp.plugins.parser.openai import OpenAIParser
from llmd.epp.plugins.registry import DATA_SOURCE, METRICS_EXTRACTOR, PARSER, Kind

__all__ = ["MetricsBinding", "data_layer", "parser"]

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class MetricsBinding:
    """The metrics source the scraper polls and the extractor that reads its pages."""

    source: DataSource
    extractor: MetricsExtractor


def parser(plugins: ConfigPlugins, ref: tuple[str, str] | None) -> Parser | None:
    """The parser `ref` (path, pluginRef) names, or a default `openai-parser` (None: reported
    as a problem)."""
    if ref is None:
        existing = plugins.get(OpenAIParser.type)
        found = existing.as_(PARSER) if existing is not None else None
        if found is not None:
            return found
        created = plugins.add(OpenAIParser.type)
        return created.as_(PARSER) if created is not None else None
    return _ref(ref[1], ref[0], PARSER, plugins)


def data_layer(spec: EndpointPickerConfigFile, plugins: ConfigPlugins) -> MetricsBinding | None:
    """What the scraper polls; None when nothing is (or a problem was reported)."""
    if spec.data_layer is None or spec.data_layer.sources is None:
        return _implicit(plugins)
    binding: MetricsBinding | None = None
    fail = plugins.fail
    for i, src in enumerate(spec.data_layer.sources):
        at = f"dataLayer.sources[{i}]"
        if src.plugin_ref in plugins.broken:
            continue  # already reported; its extractors would only repeat it
        source = _ref(src.plugin_ref, f"{at}.pluginRef", DATA_SOURCE, plugins)
        extractors = [_ref(e.plugin_ref, f"{at}.extractors[{j}].pluginRef", METRICS_EXTRACTOR,
                           plugins)
                      for j, e in enumerate(src.extractors)]
        if not src.extractors and source is not None:
            fail(f"{at}.extractors", f"{src.plugin_ref!r} has no extractor, so its metrics "
                 f"would never be read (extractors: {plugins.names_of(METRICS_EXTRACTOR)}; "
                 f"extractor types: {plugins.types_of(METRICS_EXTRACTOR)})")
        elif len(src.extractors) > 1:
            fail(f"{at}.extractors", "llmd reads a metrics source with one extractor, got "
                 + ", ".join(e.plugin_ref for e in src.extractors))
        if i > 0:
            fail(f"{at}.pluginRef", f"llmd scrapes one metrics source per endpoint; "
                 f"{src.plugin_ref!r} would be a second after "
                 f"{spec.data_layer.sources[0].plugin_ref!r}")
        elif source is not None and len(extractors) == 1 and extractors[0] is not None:
            binding = MetricsBinding(source, extractors[0])
    return binding


def _implicit(plugins: ConfigPlugins) -> MetricsBinding | None:
    """llm-d without `dataLayer`: the declared source and extractor, or default ones."""
    sources = plugins.of_kind(DATA_SOURCE)
    extractors = plugins.of_kind(METRICS_EXTRACTOR)
    for found, what in (([c for c, _ in sources], "data sources"),
                        ([c for c, _ in extractors], "extractors")):
        if len(found) > 1:
            plugins.fail("dataLayer", f"missing, and the plugins declare several {what} "
                         f"({', '.join(c.name for c in found)}): say which to use in "
                         "dataLayer.sources")
            return None
    source = sources[0][1] if sources else _added(plugins, MetricsDataSource.type, DATA_SOURCE)
    extractor = extractors[0][1] if extractors else _added(plugins, CoreMetricsExtractor.type,
                                                           METRICS_EXTRACTOR)
    if source is None or extractor is None:
        return None
    return MetricsBinding(source, extractor)


def _added(plugins: ConfigPlugins, plugin_type: str, kind: Kind[P]) -> P | None:
    created = plugins.add(plugin_type)
    return created.as_(kind) if created is not None else None


def _ref(ref: str, path: str, kind: Kind[P], plugins: ConfigPlugins) -> P | None:
    """The plugin `ref` names if it is a `kind`; otherwise report at `path` and return None."""
    if ref in plugins.broken:
        return None  # its parameters were already reported
    what = kind.name
    c = plugins.get(ref)
    found = c.as_(kind) if c is not None else None
    if found is not None:
        return found
    allowed = f"{what}s: {plugins.names_of(kind)}; {what} types: {plugins.types_of(kind)}"
    if c is None and (unsupported := unsupported_message(ref)) is not None:
        plugins.fail(path, f"{unsupported} ({allowed})")
    elif c is None:
        plugins.fail(path, f"{ref!r} is not defined ({allowed})"
                     f"{did_you_mean(ref, plugins.names())}")
    else:
        article = "an" if what[0] in "aeiou" else "a"
        plugins.fail(path, f"{ref!r} is a {c.type} plugin, not {article} {what} ({allowed})")
    return None
