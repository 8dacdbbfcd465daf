"""The loader's wiring: the config's plugins → profile handler, profiles, detector, scheduler.

Roles come from the registry's declarations (`Configured.as_(KIND)`), never from an instance's
methods. Every problem is collected (`ConfigPlugins.fail`) and raised at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from llmd.config import did_you_mean
from llmd.epp import _config_datalayer as datalayer
from llmd.epp._config_data import wire_data
from llmd.epp._config_datalayer import MetricsBinding
from llmd.epp._config_flow import detector_ref, flow_control
from llmd.epp._config_models import EndpointPickerConfigFile, ProfilePluginRef, ProfileSpec
from llmd.epp._config_plugins import ConfigPlugins, Configured
from llmd.epp._config_replica import ReplicaSyncConfig, cross_replica
from llmd.epp._config_v1 import (
    check_feature_gates,
    endpoint_discovery,
    parser_ref,
    share_prefill_rates,
)
from llmd.epp.flow_queue import FlowControlConfig
from llmd.epp.plugins import (
    Background,
    Decider,
    EndpointDiscovery,
    Filter,
    Parser,
    Picker,
    Plugin,
    PluginRegistry,
    ProfileHandler,
    ProfileRefs,
    SaturationDetector,
)
from llmd.epp.plugins.picker.max_score import MaxScorePicker
from llmd.epp.plugins.profile.single import SingleProfileHandler
from llmd.epp.plugins.registry import (
    BACKGROUND,
    DECIDER,
    FILTER,
    PICKER,
    PRE_REQUEST,
    PROFILE_HANDLER,
    PROFILE_REFS,
    RESPONSE_HEADERS,
    SATURATION_DETECTOR,
    SCORER,
)
from llmd.epp.plugins.saturation.utilization import UtilizationDetector
from llmd.epp.scheduling import Scheduler, SchedulerProfile, WeightedScorer
from llmd.errors import ConfigError

__all__ = ["EndpointPickerConfig", "build"]


@dataclass(frozen=True)
class EndpointPickerConfig:
    """The loaded config: plugin instances by name, the scheduler, the detector, objectives,
    the request parser and what the scraper polls (`metrics` None: no scraping)."""

    source: str
    plugins: Mapping[str, Plugin]
    scheduler: Scheduler
    detector: SaturationDetector
    objectives: Mapping[str, int]
    parser: Parser
    metrics: MetricsBinding | None
    background: tuple[Background, ...] = ()
    """Plugins the EPP runs beside scheduling (`Background.run`)."""
    replica_sync: ReplicaSyncConfig | None = None
    """`dataLayer.crossReplica` and peer discovery (None: one replica, nothing shared)."""
    discovery: EndpointDiscovery | None = None
    """`dataLayer.discovery.endpoints` (None: the endpoints come from `llmd epp`'s flags)."""
    flow_control: FlowControlConfig | None = None
    """`flowControl` with the `flowControl` feature gate (None: off)."""

    def describe(self) -> str:
        """One line per profile, for the startup log."""
        lines = [f"handler {self.scheduler.handler.name}"]
        for p in self.scheduler.profiles.values():
            scorers = ", ".join(f"{w.scorer.name}×{w.weight:g}" for w in p.scorers)
            filters = ", ".join(f.name for f in p.filters) or "-"
            fallback = f" fallback {p.fallback.name}" if p.fallback is not None else ""
            lines.append(f"profile {p.name}: filters [{filters}] scorers [{scorers}] "
                         f"picker {p.picker.name}{fallback}")
        return "; ".join(lines)


def build(spec: EndpointPickerConfigFile, source: str, registry: PluginRegistry
          ) -> EndpointPickerConfig:
    """The config `spec` (read from `source`) describes; ConfigError listing every problem."""
    return _Builder(spec, source, registry).build()


class _Builder:
    def __init__(self, spec: EndpointPickerConfigFile, source: str,
                 registry: PluginRegistry) -> None:
        self.spec, self.source, self.registry = spec, source, registry
        self.problems: list[str] = []
        self.plugins = ConfigPlugins(registry, source, self.problems)
        self.fail = self.plugins.fail
        self.fallback_only: set[str] = set()

    def build(self) -> EndpointPickerConfig:
        for i, ps in enumerate(self.spec.plugins):
            self.plugins.declare(i, ps)
        producers = wire_data(self.plugins)
        share_prefill_rates(self.plugins)
        handler = self._profile_handler()
        profiles = self._profiles(handler)
        refs = handler.as_(PROFILE_REFS) if handler is not None else None
        if refs is not None:
            self._check_refs(refs)
        detector = self._detector()
        check_feature_gates(self.spec, self.fail)
        flow = flow_control(self.spec, self.plugins)
        parser = datalayer.parser(self.plugins, parser_ref(self.spec, self.fail))
        metrics = datalayer.data_layer(self.spec, self.plugins)
        replica_sync = cross_replica(self.spec, self.plugins)
        discovery = endpoint_discovery(self.spec, self.plugins)
        objectives = {}
        for i, o in enumerate(self.spec.objectives):
            if o.name in objectives:
                self.fail(f"objectives[{i}].name", f"{o.name!r} is defined twice")
            objectives[o.name] = o.priority
        if self.problems:
            raise ConfigError(self.problems)
        main = handler.as_(PROFILE_HANDLER) if handler is not None else None
        assert main is not None and detector is not None and parser is not None
        hooks = [p for _, p in self.plugins.of_kind(PRE_REQUEST)]
        # Every declared plugin, referenced by a profile or not, as llm-d hands the response
        # to every configured plugin.
        response_hooks = [p for _, p in self.plugins.of_kind(RESPONSE_HEADERS)]
        scheduler = Scheduler(main, profiles, producers, hooks, response_hooks)
        background = tuple(p for _, p in self.plugins.of_kind(BACKGROUND))
        return EndpointPickerConfig(self.source, self.plugins.instances(), scheduler, detector,
                                    objectives, parser, metrics, background, replica_sync,
                                    discovery, flow)

    def _profile_handler(self) -> Configured | None:
        handlers = [c for c, _ in self.plugins.of_kind(PROFILE_HANDLER)]
        if len(handlers) > 1:
            self.fail("plugins", "more than one profile handler: "
                      + ", ".join(h.name for h in handlers))
            return None
        if handlers:
            return handlers[0]
        if any(PROFILE_HANDLER in self.registry.kinds_of(t)
               for t in self.plugins.broken.values()):
            return None  # the declared handler failed to build (already reported)
        return self.plugins.add(SingleProfileHandler.type)

    def _profiles(self, handler: Configured | None) -> dict[str, SchedulerProfile]:
        """The profiles the handler runs, each with its `fallbackProfile` bound; a profile
        that is only some profile's fallback runs only as that."""
        specs = self.spec.scheduling_profiles or [self._implicit_profile()]
        built: dict[str, SchedulerProfile] = {}
        for i, ps in enumerate(specs):
            if ps.name in built:
                self.fail(f"schedulingProfiles[{i}].name", f"{ps.name!r} is defined twice")
                continue
            profile = self._profile(i, ps)
            if profile is not None:
                built[ps.name] = profile
        refs = handler.as_(PROFILE_REFS) if handler is not None else None
        run_by_handler = set(refs.profile_refs().values()) if refs is not None else set()
        self.fallback_only = {ps.fallback_profile for ps in specs
                              if ps.fallback_profile} - run_by_handler
        names = [ps.name for ps in specs]
        for i, ps in enumerate(specs):
            target = ps.fallback_profile
            if target is None:
                continue
            at = f"schedulingProfiles[{i}].fallbackProfile"
            if target == ps.name:
                self.fail(at, f"{target!r} is this profile itself")
            elif target not in names:
                self.fail(at, f"{target!r} is not a scheduling profile (profiles: "
                          f"{', '.join(names)}){did_you_mean(target, names)}")
            elif (fb := next(p for p in specs if p.name == target)).fallback_profile:
                self.fail(at, f"{target!r} has a fallbackProfile of its own "
                          f"({fb.fallback_profile!r}); llmd follows one fallback")
            elif ps.name in built and target in built:
                built[ps.name] = replace(built[ps.name], fallback=built[target])
        profiles = {n: p for n, p in built.items() if n not in self.fallback_only}
        main: ProfileHandler | None = handler.as_(PROFILE_HANDLER) if handler else None
        limit = main.max_profiles if main is not None else None
        runs = [p for p in specs if p.name not in self.fallback_only]
        if main is not None and limit is not None and len(runs) > limit:
            self.fail("schedulingProfiles", f"{main.type} runs exactly {limit} profile, "
                      f"got {len(runs)} ({', '.join(p.name for p in runs)})")
        return profiles

    def _check_refs(self, handler: ProfileRefs) -> None:
        """The handler's profile and decider names must exist; every profile must be one it runs."""
        configured = self.plugins.get(handler.name)
        at = f"{configured.path if configured else 'plugins'}.parameters"
        kind = handler.type
        names = [p.name for p in self.spec.scheduling_profiles]
        runs = set(handler.profile_refs().values())
        missing = runs - set(names)
        for path, profile in handler.profile_refs().items():
            if profile in missing:
                self.fail(f"{at}.{path}", f"{profile!r} is not a scheduling profile (profiles: "
                          f"{', '.join(names) or 'none'}){did_you_mean(profile, names)}")
        for i, name in enumerate(names):
            # A misnamed ref is the one problem to report.
            if name not in runs and name not in self.fallback_only and not missing:
                hint = "" if handler.decider_refs() else (
                    "; without a prefill decider only the decode profile runs")
                self.fail(f"schedulingProfiles[{i}].name", f"profile {name!r} never runs: "
                          f"{kind} runs {', '.join(map(repr, sorted(runs)))}{hint}")
        deciders = {c.name: d for c, d in self.plugins.of_kind(DECIDER)}
        allowed = (f"deciders: {', '.join(deciders) or 'none'}; "
                   f"decider types: {self.plugins.types_of(DECIDER)}")
        bound: dict[str, Decider] = {}
        for path, ref in handler.decider_refs().items():
            c = self.plugins.get(ref)
            if ref in self.plugins.broken:
                continue
            if c is None:
                self.fail(f"{at}.{path}", f"{ref!r} is not defined ({allowed})"
                          f"{did_you_mean(ref, deciders)}")
            elif (decider := c.as_(DECIDER)) is None:
                self.fail(f"{at}.{path}", f"{ref!r} is a {c.kind_name}, not a decider "
                          f"({allowed})")
            else:
                bound[path] = decider
        handler.bind(bound)

    def _implicit_profile(self) -> ProfileSpec:
        usable = [c.name for c in self.plugins if c.kind_name in ("filter", "scorer", "picker")]
        return ProfileSpec(name="default",
                           plugins=[ProfilePluginRef(plugin_ref=n) for n in usable])

    def _profile(self, i: int, ps: ProfileSpec) -> SchedulerProfile | None:
        filters: list[Filter] = []
        scorers: list[WeightedScorer] = []
        pickers: list[Picker] = []
        ok = True
        for j, ref in enumerate(ps.plugins):
            path = f"schedulingProfiles[{i}].plugins[{j}]"
            c = self.plugins.get(ref.plugin_ref)
            if c is None:
                defined = ", ".join(self.plugins.names()) or "none"
                self.fail(f"{path}.pluginRef", f"{ref.plugin_ref!r} is not defined (defined: "
                          f"{defined}){did_you_mean(ref.plugin_ref, self.plugins.names())}")
                ok = False
                continue
            scorer, filter_, picker = c.as_(SCORER), c.as_(FILTER), c.as_(PICKER)
            if scorer is not None:
                scorers.append(WeightedScorer(scorer, 1.0 if ref.weight is None else ref.weight))
            elif ref.weight is not None:
                self.fail(f"{path}.weight", f"only scorers take a weight ({ref.plugin_ref!r} "
                          f"is a {c.kind_name})")
                ok = False
            elif filter_ is not None:  # utilization-detector is one too
                filters.append(filter_)
            elif picker is not None:
                pickers.append(picker)
            else:
                self.fail(f"{path}.pluginRef", f"{ref.plugin_ref!r} is a {c.kind_name}; a "
                          "profile takes filters, scorers and one picker")
                ok = False
        if len(pickers) > 1:
            self.fail(f"schedulingProfiles[{i}].plugins", "more than one picker: "
                      + ", ".join(p.name for p in pickers))
            return None
        if not ok:
            return None
        picker = pickers[0] if pickers else self._default_picker()
        if picker is None:
            return None
        return SchedulerProfile(ps.name, tuple(filters), tuple(scorers), picker)

    def _default_picker(self) -> Picker | None:
        c = self.plugins.add(MaxScorePicker.type)
        return c.as_(PICKER) if c is not None else None

    def _detector(self) -> SaturationDetector | None:
        named = detector_ref(self.spec, self.fail)
        if named is not None:
            at, ref = named
            c = self.plugins.get(ref.plugin_ref)
            if c is None and SATURATION_DETECTOR in self.registry.kinds_of(ref.plugin_ref):
                c = self.plugins.add(ref.plugin_ref)  # a type: built with its defaults
            found = c.as_(SATURATION_DETECTOR) if c is not None else None
            if found is None:
                what = "is not defined" if c is None else "is not a saturation detector"
                self.fail(f"{at}.pluginRef", f"{ref.plugin_ref!r} {what} "
                          f"(saturation detectors: {self.plugins.names_of(SATURATION_DETECTOR)})")
            return found
        found_all = self.plugins.of_kind(SATURATION_DETECTOR)
        if found_all:
            return found_all[0][1]
        # The default detector sheds but is not one of the config's plugins (as before).
        return self.plugins.build(UtilizationDetector.type).as_(SATURATION_DETECTOR)
