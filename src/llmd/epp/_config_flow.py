"""The loader's `flowControl` section and the `flowControl` feature gate (llm-d v1).

Shape (llm-d's `apix/config` `FlowControlConfig`): `maxBytes`, `maxRequests` (Kubernetes
quantities such as `1Gi`, `500M`, `1k`, or integers; 0 or unset: no global limit),
`defaultRequestTTL` (60 s when unset; `0s`: none), `defaultPriorityBand`,
`defaultNegativePriorityBand`, `priorityBands[{priority, maxBytes, maxRequests,
fairnessPolicyRef, orderingPolicyRef}]` (per band 1G bytes and 5000 requests when unset or 0),
`usageLimitPolicyPluginRef`, `saturationDetector.pluginRef` and `enableEviction`.

- The section takes effect only with `featureGates: [flowControl]`; without the gate it is
  ignored with a warning, except `saturationDetector`, which the legacy admission path uses too
  (as llm-d). v1alpha1's top-level `saturationDetector` still loads; naming a different
  detector in both places is an error.
- Policy refs name a plugin of the config, or a policy type, built with its defaults (llm-d's
  defaults are type names: `global-strict-fairness-policy`, `fcfs-ordering-policy`,
  `static-usage-limit-policy`).
- `enableEviction: true` is an error: llm-d evicts requests already dispatched, which needs
  the response path that llmd's gateway does not send to the EPP.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Annotated, TypeVar

from pydantic import BeforeValidator, Field, model_validator

from llmd.config import LlmdModel, parse_duration_s
from llmd.epp.flow_queue import BandConfig, FlowControlConfig
from llmd.epp.plugins.flowcontrol.fcfs import FcfsOrderingPolicy
from llmd.epp.plugins.flowcontrol.global_strict import GlobalStrictFairnessPolicy
from llmd.epp.plugins.flowcontrol.static_usage_limit import StaticUsageLimitPolicy
from llmd.epp.plugins.registry import FAIRNESS_POLICY, ORDERING_POLICY, USAGE_LIMIT_POLICY, Kind

if TYPE_CHECKING:  # _config_models imports this module's models
    from llmd.epp._config_models import EndpointPickerConfigFile, PluginRefSpec
    from llmd.epp._config_plugins import ConfigPlugins, Fail

__all__ = ["FLOW_CONTROL_GATE", "FlowControlSpec", "PriorityBandSpec", "detector_ref",
           "flow_control", "parse_quantity"]

log = logging.getLogger("llmd.epp.config")

FLOW_CONTROL_GATE = "flowControl"
DEFAULT_TTL_S = 60.0
BAND_MAX_BYTES = 1_000_000_000
BAND_MAX_REQUESTS = 5000

P = TypeVar("P")

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?(?:[eE]\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SUFFIX = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
           "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
           "Ei": 2**60}


def parse_quantity(value: int | str) -> int:
    """A Kubernetes quantity (`100`, `1k`, `500M`, `1Gi`) or an integer → a whole number ≥ 0;
    ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("must be a number or a quantity like 1k, 500M or 1Gi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be >= 0")
        return value
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a quantity like 100, 1k, 500M or 1Gi")
    return math.ceil(float(m.group(1)) * _SUFFIX[m.group(2)])


def _ttl(value: str | float) -> float:
    seconds = parse_duration_s(value)
    if seconds < 0:
        raise ValueError("must be >= 0")
    return seconds


Quantity = Annotated[int, BeforeValidator(parse_quantity)]
TTL = Annotated[float, BeforeValidator(_ttl)]


class PriorityBandSpec(LlmdModel):
    """One band, or a template (`defaultPriorityBand`: `priority` is not used)."""

    priority: int | None = None
    max_bytes: Quantity | None = None
    max_requests: Quantity | None = None
    fairness_policy_ref: str | None = Field(default=None, min_length=1)
    ordering_policy_ref: str | None = Field(default=None, min_length=1)


class SaturationDetectorRef(LlmdModel):
    plugin_ref: str = Field(min_length=1)


class FlowControlSpec(LlmdModel):
    max_bytes: Quantity | None = None
    max_requests: Quantity | None = None
    default_request_ttl: TTL | None = Field(default=None, alias="defaultRequestTTL")
    default_priority_band: PriorityBandSpec | None = None
    default_negative_priority_band: PriorityBandSpec | None = None
    priority_bands: list[PriorityBandSpec] = Field(default_factory=list)
    usage_limit_policy_plugin_ref: str | None = Field(default=None, min_length=1)
    saturation_detector: SaturationDetectorRef | None = None
    enable_eviction: bool = False

    @model_validator(mode="after")
    def _bands(self) -> FlowControlSpec:
        seen: set[int] = set()
        for i, band in enumerate(self.priority_bands):
            if band.priority is None:
                raise ValueError(f"priorityBands[{i}].priority is required")
            if band.priority in seen:
                raise ValueError(f"priorityBands[{i}].priority: {band.priority} is defined twice")
            seen.add(band.priority)
        return self


def gate_on(spec: EndpointPickerConfigFile) -> bool:
    return FLOW_CONTROL_GATE in spec.feature_gates


def detector_ref(spec: EndpointPickerConfigFile, fail: Fail) -> tuple[str, PluginRefSpec] | None:
    """The saturation detector the config names, with the path naming it (None: default)."""
    top = spec.saturation_detector
    nested = spec.flow_control.saturation_detector if spec.flow_control is not None else None
    if nested is None:
        return ("saturationDetector", top) if top is not None else None
    if top is not None and top.plugin_ref != nested.plugin_ref:
        fail("saturationDetector.pluginRef", f"{top.plugin_ref!r} differs from "
             f"flowControl.saturationDetector.pluginRef {nested.plugin_ref!r}; name one "
             "detector (llm-d v1 keeps it under flowControl)")
    from llmd.epp._config_models import PluginRefSpec  # a cycle at import time

    return "flowControl.saturationDetector", PluginRefSpec(plugin_ref=nested.plugin_ref)


def flow_control(spec: EndpointPickerConfigFile, plugins: ConfigPlugins
                 ) -> FlowControlConfig | None:
    """The flow-control config when the gate is on (None when off, or a problem reported)."""
    fc = spec.flow_control
    if not gate_on(spec):
        if fc is not None and fc.model_dump(exclude_defaults=True, exclude={"saturation_detector"}):
            log.warning("%s: flowControl is ignored without featureGates: [%s] (only its "
                        "saturationDetector is used)", plugins.source, FLOW_CONTROL_GATE)
        return None
    fc = fc or FlowControlSpec()
    fail = plugins.fail
    if fc.enable_eviction:
        fail("flowControl.enableEviction", "llmd cannot evict dispatched requests: its gateway "
             "does not send responses through the EPP; remove it (queued requests still "
             "leave at their TTL)")
    usage = _policy(plugins, fc.usage_limit_policy_plugin_ref, StaticUsageLimitPolicy.type,
                    "flowControl.usageLimitPolicyPluginRef", USAGE_LIMIT_POLICY)
    default = _band(plugins, fc.default_priority_band, "flowControl.defaultPriorityBand", None)
    negative = (None if fc.default_negative_priority_band is None else
                _band(plugins, fc.default_negative_priority_band,
                      "flowControl.defaultNegativePriorityBand", None, default))
    bands = {b.priority: _band(plugins, b, f"flowControl.priorityBands[{i}]", b.priority,
                               default)
             for i, b in enumerate(fc.priority_bands) if b.priority is not None}
    if usage is None or default is None or any(b is None for b in bands.values()) or (
            fc.default_negative_priority_band is not None and negative is None):
        return None
    ttl = DEFAULT_TTL_S if fc.default_request_ttl is None else fc.default_request_ttl
    return FlowControlConfig(
        max_bytes=fc.max_bytes or 0, max_requests=fc.max_requests or 0,
        default_ttl_s=ttl if ttl > 0 else math.inf,
        bands={p: b for p, b in bands.items() if b is not None},
        default_band=default, default_negative_band=negative, usage_limit=usage)


def _band(plugins: ConfigPlugins, spec: PriorityBandSpec | None, path: str,
          priority: int | None, template: BandConfig | None = None) -> BandConfig | None:
    """A band from `spec`; what it leaves out comes from `template`, else llm-d's defaults."""
    spec = spec or PriorityBandSpec()
    fairness = (_policy(plugins, spec.fairness_policy_ref, "", f"{path}.fairnessPolicyRef",
                        FAIRNESS_POLICY) if spec.fairness_policy_ref else
                template.fairness if template is not None else
                _policy(plugins, None, GlobalStrictFairnessPolicy.type, path, FAIRNESS_POLICY))
    ordering = (_policy(plugins, spec.ordering_policy_ref, "", f"{path}.orderingPolicyRef",
                        ORDERING_POLICY) if spec.ordering_policy_ref else
                template.ordering if template is not None else
                _policy(plugins, None, FcfsOrderingPolicy.type, path, ORDERING_POLICY))
    if fairness is None or ordering is None:
        return None
    # llm-d: per-band limits are always bounded; 0 or unset takes the default.
    max_bytes = spec.max_bytes or (template.max_bytes if template else BAND_MAX_BYTES)
    max_requests = spec.max_requests or (template.max_requests if template
                                         else BAND_MAX_REQUESTS)
    return BandConfig(priority, max_bytes, max_requests, fairness, ordering)


def _policy(plugins: ConfigPlugins, ref: str | None, default_type: str, path: str,
            kind: Kind[P]) -> P | None:
    """The plugin `ref` names (a declared plugin, else a registered type of `kind` built with
    its defaults), or the `default_type`; None when reported as a problem."""
    name = ref or default_type
    if name in plugins.broken:
        return None
    c = plugins.get(name)
    if c is None and kind in plugins.registry.kinds_of(name):
        c = plugins.add(name)
        if c is None:
            return None
    found = c.as_(kind) if c is not None else None
    if found is None:
        article = "an" if kind.name[0] in "aeiou" else "a"
        what = ("is not defined" if c is None
                else f"is a {c.kind_name}, not {article} {kind.name}")
        plural = kind.name[:-1] + "ies"  # every policy kind ends in "policy"
        plugins.fail(path, f"{name!r} {what} ({plural}: {plugins.names_of(kind)}; "
                     f"{kind.name} types: {plugins.types_of(kind)})")
    return found
