"""EndpointPickerConfig: load the YAML, build the plugins, wire the scheduler.

Same file format as llm-d (`apiVersion: llm-d.ai/v1alpha1`, `kind: EndpointPickerConfig`,
`plugins`, `schedulingProfiles`, `saturationDetector`, `dataLayer`, `parser`), plus llmd's
`objectives`. Like llm-d, the loader fills in `single-profile-handler`, `max-score-picker`, the
data producers scorers need, the `utilization-detector`, `metrics-data-source` →
`core-metrics-extractor` and `openai-parser` when the file leaves them out (see
`_config_datalayer` for `dataLayer`, `parser` and the unimplemented `flowControl`). Every
problem is reported at once, each line naming the file, the path, the bad value and what is
allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmd.config import config_error, did_you_mean
from llmd.epp import _config_datalayer as datalayer
from llmd.epp._config_datalayer import UNIMPLEMENTED, MetricsBinding
from llmd.epp._config_models import (
    DEPRECATED_API_VERSIONS,
    EndpointPickerConfigFile,
    ObjectivesFile,
    PluginSpec,
    ProfilePluginRef,
    ProfileSpec,
)
from llmd.epp.plugins import (
    PLUGINS,
    DataProducer,
    DataSource,
    Decider,
    Filter,
    MetricsExtractor,
    Parser,
    Picker,
    PluginRegistry,
    PreRequest,
    ProfileHandler,
    ProfileRefs,
    ResponseHeaderHook,
    SaturationDetector,
    Scorer,
)
from llmd.epp.plugins.keys import PREFIX_MATCH
from llmd.epp.plugins.picker.max_score import MaxScorePicker
from llmd.epp.plugins.profile.single import SingleProfileHandler
from llmd.epp.plugins.saturation.utilization import UtilizationDetector
from llmd.epp.scheduling import Scheduler, SchedulerProfile, WeightedScorer
from llmd.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG", "EndpointPickerConfig", "load_config", "load_objectives", "plugin_catalog",
]

log = logging.getLogger(__name__)

_DEFAULT_PRODUCERS = {PREFIX_MATCH: "approx-prefix-cache-producer"}

DEFAULT_CONFIG = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
"""
"""llm-d's default (`pkg/epp/config/loader/defaults.go`), used when no file is given."""


@dataclass(frozen=True)
class EndpointPickerConfig:
    """The loaded config: plugin instances by name, the scheduler, the detector, objectives,
    the request parser and what the scraper polls (`metrics` None: no scraping)."""

    source: str
    plugins: Mapping[str, Any]
    scheduler: Scheduler
    detector: SaturationDetector
    objectives: Mapping[str, int]
    parser: Parser
    metrics: MetricsBinding | None

    def describe(self) -> str:
        """One line per profile, for the startup log."""
        lines = [f"handler {self.scheduler.handler.name}"]
        for p in self.scheduler.profiles.values():
            scorers = ", ".join(f"{w.scorer.name}×{w.weight:g}" for w in p.scorers)
            filters = ", ".join(f.name for f in p.filters) or "-"
            lines.append(f"profile {p.name}: filters [{filters}] scorers [{scorers}] "
                         f"picker {p.picker.name}")
        return "; ".join(lines)


def load_config(
    path: Path | None = None,
    *,
    text: str | None = None,
    registry: PluginRegistry = PLUGINS,
) -> EndpointPickerConfig:
    """Load `path` (or `text`, or llm-d's default when both are None); ConfigError on problems."""
    if path is not None:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    elif text is not None:
        source = "<config text>"
    else:
        source, text = "<default config>", DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    try:
        spec = EndpointPickerConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source) from exc
    if spec.api_version in DEPRECATED_API_VERSIONS:
        log.warning("%s: apiVersion %s is deprecated, use llm-d.ai/v1alpha1",
                    source, spec.api_version)
    return _Builder(spec, source, registry).build()


def plugin_catalog(registry: PluginRegistry = PLUGINS) -> list[str]:
    """One line per plugin type: `type  param=default, ...` (for `llmd epp --list-plugins`)."""
    lines = []
    for name in sorted(registry):
        fields = registry[name].Params.model_fields
        params = ", ".join(f"{f.alias or n}={_shown(f.get_default(call_default_factory=True))!r}"
                           for n, f in fields.items())
        lines.append(f"{name:32} {params or '(no parameters)'}")
    return lines


def load_objectives(path: Path) -> dict[str, int]:
    """`objectives: [{name, priority}]` from a YAML file → {name: priority}."""
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = ObjectivesFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read objectives: {exc}") from exc
    except ValidationError as exc:
        raise config_error(exc, str(path)) from exc
    return {o.name: o.priority for o in parsed.objectives}


class _Builder:
    def __init__(self, spec: EndpointPickerConfigFile, source: str,
                 registry: PluginRegistry) -> None:
        self.spec, self.source, self.registry = spec, source, registry
        self.problems: list[str] = []
        self.plugins: dict[str, Any] = {}
        self.index: dict[str, int] = {}  # plugin name → its position in plugins[]
        self.broken: set[str] = set()  # declared plugins that failed to build (reported)

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def build(self) -> EndpointPickerConfig:
        for i, ps in enumerate(self.spec.plugins):
            self._instantiate(i, ps)
        self._add_required_producers()
        handler = self._profile_handler()
        profiles = self._profiles(handler)
        if isinstance(handler, ProfileRefs):
            self._check_refs(handler)
        detector = self._detector()
        datalayer.check_flow_control(self.spec, self.fail)
        parser = datalayer.parser(self.spec, self.plugins, self.broken, self.registry, self.fail)
        metrics = datalayer.data_layer(self.spec, self.plugins, self.broken, self.registry,
                                       self.fail)
        objectives = {}
        for i, o in enumerate(self.spec.objectives):
            if o.name in objectives:
                self.fail(f"objectives[{i}].name", f"{o.name!r} is defined twice")
            objectives[o.name] = o.priority
        if self.problems:
            raise ConfigError(self.problems)
        assert handler is not None and detector is not None and parser is not None
        producers = [p for p in self.plugins.values() if isinstance(p, DataProducer)]
        hooks = [p for p in self.plugins.values() if isinstance(p, PreRequest)]
        # Every declared plugin, referenced by a profile or not, as llm-d hands the response
        # to every configured plugin.
        response_hooks = [p for p in self.plugins.values() if isinstance(p, ResponseHeaderHook)]
        scheduler = Scheduler(handler, profiles, producers, hooks, response_hooks)
        return EndpointPickerConfig(self.source, dict(self.plugins), scheduler, detector,
                                    objectives, parser, metrics)

    def _instantiate(self, i: int, ps: PluginSpec) -> None:
        cls = self.registry.get(ps.type)
        if cls is None and ps.type in UNIMPLEMENTED:
            self.broken.add(ps.ref)
            same = sorted(t for t in self.registry if t.endswith(ps.type.rsplit("-", 1)[-1]))
            self.fail(f"plugins[{i}].type", f"{ps.type!r} is an llm-d {UNIMPLEMENTED[ps.type]} "
                      f"that llmd does not implement (llmd has: {', '.join(same)})")
            return
        if cls is None:
            types = sorted(self.registry)
            hint = did_you_mean(ps.type, types) or f" (allowed: {', '.join(types)})"
            self.fail(f"plugins[{i}].type", f"{ps.type!r} is not a plugin type{hint}")
            return
        if ps.ref in self.plugins:
            self.fail(f"plugins[{i}].name", f"{ps.ref!r} is defined twice")
            return
        try:
            params = cls.Params.model_validate(ps.parameters or {})
        except ValidationError as exc:
            self.broken.add(ps.ref)
            lines = config_error(exc, self.source, ("plugins", i, "parameters")).problems
            for line, detail in zip(lines, exc.errors(include_url=False), strict=True):
                if detail["type"] == "extra_forbidden":
                    key = str(detail["loc"][-1])
                    fields = _fields_at(cls.Params, detail["loc"][:-1])
                    owner = ".".join(str(p) for p in (ps.type, *detail["loc"][:-1]))
                    line += did_you_mean(key, fields) or (
                        f" (parameters of {owner}: {', '.join(fields) or 'none'})")
                self.problems.append(line)
            return
        replaced_by = getattr(cls, "replaced_by", None)
        if replaced_by is not None:
            log.warning("%s: plugins[%d].type: %s is deprecated, use %s", self.source, i,
                        ps.type, replaced_by)
        self.plugins[ps.ref] = cls(ps.ref, params)
        self.index[ps.ref] = i

    def _add_required_producers(self) -> None:
        have = {k for p in self.plugins.values() for k in getattr(p, "produces", ())}
        for plugin in list(self.plugins.values()):
            for key in getattr(plugin, "consumes", ()):
                needed = _DEFAULT_PRODUCERS.get(key)
                if key not in have and needed is not None and needed in self.registry:
                    cls = self.registry[needed]
                    self.plugins.setdefault(needed, cls(needed, cls.Params()))
                    have.add(key)

    def _profile_handler(self) -> ProfileHandler | None:
        handlers = [p for p in self.plugins.values() if isinstance(p, ProfileHandler)]
        if len(handlers) > 1:
            self.fail("plugins", "more than one profile handler: "
                      + ", ".join(h.name for h in handlers))
            return None
        if handlers:
            return handlers[0]
        if any(hasattr(self.registry.get(ps.type), "process_results") for ps in self.spec.plugins):
            return None  # the declared handler failed to build (already reported)
        handler = SingleProfileHandler(SingleProfileHandler.type, SingleProfileHandler.Params())
        self.plugins.setdefault(handler.name, handler)
        return handler

    def _profiles(self, handler: ProfileHandler | None) -> dict[str, SchedulerProfile]:
        specs = self.spec.scheduling_profiles or [self._implicit_profile()]
        profiles: dict[str, SchedulerProfile] = {}
        for i, ps in enumerate(specs):
            if ps.name in profiles:
                self.fail(f"schedulingProfiles[{i}].name", f"{ps.name!r} is defined twice")
                continue
            profile = self._profile(i, ps)
            if profile is not None:
                profiles[ps.name] = profile
        limit = getattr(handler, "max_profiles", None)
        if handler is not None and limit is not None and len(specs) > limit:
            self.fail("schedulingProfiles", f"{handler.type} runs exactly {limit} profile, "
                      f"got {len(specs)} ({', '.join(p.name for p in specs)})")
        return profiles

    def _check_refs(self, handler: ProfileRefs) -> None:
        """The handler's profile and decider names must exist; every profile must be one it runs."""
        at = f"plugins[{self.index[handler.name]}].parameters"
        kind = handler.type
        names = [p.name for p in self.spec.scheduling_profiles]
        runs = set(handler.profile_refs().values())
        missing = runs - set(names)
        for path, profile in handler.profile_refs().items():
            if profile in missing:
                self.fail(f"{at}.{path}", f"{profile!r} is not a scheduling profile (profiles: "
                          f"{', '.join(names) or 'none'}){did_you_mean(profile, names)}")
        for i, name in enumerate(names):
            if name not in runs and not missing:  # a misnamed ref is the one problem to report
                hint = "" if handler.decider_refs() else (
                    "; without a prefill decider only the decode profile runs")
                self.fail(f"schedulingProfiles[{i}].name", f"profile {name!r} never runs: "
                          f"{kind} runs {', '.join(map(repr, sorted(runs)))}{hint}")
        deciders = {n: p for n, p in self.plugins.items() if isinstance(p, Decider)}
        types = sorted(t for t, c in self.registry.items() if hasattr(c, "disaggregate"))
        bound: dict[str, Decider] = {}
        for path, ref in handler.decider_refs().items():
            plugin = self.plugins.get(ref)
            declared = ", ".join(deciders) or "none"
            if ref in self.broken:
                continue
            if plugin is None:
                self.fail(f"{at}.{path}", f"{ref!r} is not defined (deciders: {declared}; "
                          f"decider types: {', '.join(types)}){did_you_mean(ref, deciders)}")
            elif not isinstance(plugin, Decider):
                self.fail(f"{at}.{path}", f"{ref!r} is a {_kind(plugin)}, not a decider "
                          f"(deciders: {declared}; decider types: {', '.join(types)})")
            else:
                bound[path] = plugin
        handler.bind(bound)

    def _implicit_profile(self) -> ProfileSpec:
        usable = [n for n, p in self.plugins.items()
                  if _kind(p) in ("filter", "scorer", "picker")]
        return ProfileSpec(name="default", plugins=[ProfilePluginRef(plugin_ref=n) for n in usable])

    def _profile(self, i: int, ps: ProfileSpec) -> SchedulerProfile | None:
        filters: list[Filter] = []
        scorers: list[WeightedScorer] = []
        pickers: list[Picker] = []
        ok = True
        for j, ref in enumerate(ps.plugins):
            path = f"schedulingProfiles[{i}].plugins[{j}]"
            plugin = self.plugins.get(ref.plugin_ref)
            if plugin is None:
                defined = ", ".join(self.plugins) or "none"
                self.fail(f"{path}.pluginRef", f"{ref.plugin_ref!r} is not defined (defined: "
                          f"{defined}){did_you_mean(ref.plugin_ref, self.plugins)}")
                ok = False
                continue
            kind = _kind(plugin)
            if kind == "scorer":
                scorers.append(WeightedScorer(plugin, 1.0 if ref.weight is None else ref.weight))
            elif ref.weight is not None:
                self.fail(f"{path}.weight", f"only scorers take a weight ({ref.plugin_ref!r} "
                          f"is a {kind})")
                ok = False
            elif kind == "filter" or (kind == "saturation detector"
                                      and isinstance(plugin, Filter)):
                filters.append(plugin)
            elif kind == "picker":
                pickers.append(plugin)
            else:
                self.fail(f"{path}.pluginRef", f"{ref.plugin_ref!r} is a {kind}; a profile takes "
                          "filters, scorers and one picker")
                ok = False
        if len(pickers) > 1:
            self.fail(f"schedulingProfiles[{i}].plugins", "more than one picker: "
                      + ", ".join(p.name for p in pickers))
            return None
        if not ok:
            return None
        picker = pickers[0] if pickers else self._default_picker()
        return SchedulerProfile(ps.name, tuple(filters), tuple(scorers), picker)

    def _default_picker(self) -> Picker:
        existing = self.plugins.get(MaxScorePicker.type)
        if isinstance(existing, MaxScorePicker):
            return existing
        picker = MaxScorePicker(MaxScorePicker.type, MaxScorePicker.Params())
        self.plugins.setdefault(picker.name, picker)
        return picker

    def _detector(self) -> SaturationDetector | None:
        ref = self.spec.saturation_detector
        if ref is not None:
            plugin = self.plugins.get(ref.plugin_ref)
            if not isinstance(plugin, SaturationDetector):
                detectors = [n for n, p in self.plugins.items()
                             if isinstance(p, SaturationDetector)]
                what = "is not defined" if plugin is None else "is not a saturation detector"
                self.fail("saturationDetector.pluginRef", f"{ref.plugin_ref!r} {what} "
                          f"(saturation detectors: {', '.join(detectors) or 'none'})")
                return None
            return plugin
        found = [p for p in self.plugins.values() if isinstance(p, SaturationDetector)]
        if found:
            return found[0]
        return UtilizationDetector(UtilizationDetector.type, UtilizationDetector.Params())


# Checked in order: a SaturationDetector is also a Filter, but is configured through
# saturationDetector, so it is named by its own kind.
_KINDS: tuple[tuple[type, str], ...] = (
    (ProfileHandler, "profile handler"), (Decider, "decider"), (Scorer, "scorer"),
    (Picker, "picker"), (SaturationDetector, "saturation detector"), (Filter, "filter"),
    (DataProducer, "data producer"), (Parser, "parser"), (DataSource, "data source"),
    (MetricsExtractor, "extractor"),
)


def _kind(plugin: object) -> str:
    return next((name for cls, name in _KINDS if isinstance(plugin, cls)), "plugin")


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The parameter names of the (nested) model at `loc`, as written in YAML."""
    for part in loc:
        inner = next((f.annotation for n, f in model.model_fields.items()
                      if part in (n, f.alias)), None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _shown(default: object) -> object:
    return default.model_dump(by_alias=True) if isinstance(default, BaseModel) else default
