"""The `flowControl` section and its feature gate, as llm-d v1 writes them (field names from
llm-d's `apix/config` `FlowControlConfig` / `PriorityBandConfig`)."""

from __future__ import annotations

import logging
import math

import pytest

from llmd.epp import load_config
from llmd.epp._config_flow import parse_quantity
from llmd.epp.plugins import (
    ConcurrencyDetector,
    EdfOrderingPolicy,
    FcfsOrderingPolicy,
    GlobalStrictFairnessPolicy,
    RoundRobinFairnessPolicy,
    StaticUsageLimitPolicy,
    UtilizationDetector,
)
from llmd.errors import ConfigError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
GATE = "featureGates: [flowControl]\n"

V1 = HEAD + GATE + """\
plugins:
- type: queue-scorer
- type: concurrency-detector
  parameters: {maxConcurrency: 8}
- {type: round-robin-fairness-policy, name: fair}
- {type: static-usage-limit-policy, name: limit, parameters: {threshold: 0.9}}
flowControl:
  maxBytes: 1Gi
  maxRequests: 2k
  defaultRequestTTL: 30s
  usageLimitPolicyPluginRef: limit
  saturationDetector: {pluginRef: concurrency-detector}
  defaultPriorityBand: {maxRequests: 100, fairnessPolicyRef: fair}
  defaultNegativePriorityBand: {maxRequests: 5}
  priorityBands:
  - {priority: 100, maxBytes: 500M, fairnessPolicyRef: fair, orderingPolicyRef: edf-ordering-policy}
  - {priority: 0}
"""


def test_a_v1_flow_control_section_loads_with_llm_ds_defaults_filled_in() -> None:
    config = load_config(text=V1)
    flow = config.flow_control
    assert flow is not None
    assert (flow.max_bytes, flow.max_requests, flow.default_ttl_s) == (2**30, 2000, 30.0)
    assert isinstance(config.detector, ConcurrencyDetector)
    assert isinstance(flow.usage_limit, StaticUsageLimitPolicy)
    assert flow.usage_limit.ceiling(0, 0.5) == 0.9
    top = flow.bands[100]
    assert (top.max_bytes, top.max_requests) == (500_000_000, 100)  # requests: the template's
    assert isinstance(top.fairness, RoundRobinFairnessPolicy)
    assert isinstance(top.ordering, EdfOrderingPolicy)
    zero = flow.bands[0]  # all from defaultPriorityBand, which takes llm-d's defaults
    assert isinstance(zero.fairness, RoundRobinFairnessPolicy)
    assert isinstance(zero.ordering, FcfsOrderingPolicy)
    assert zero.max_bytes == 1_000_000_000
    assert flow.band_for(7).max_requests == 100  # unconfigured: the default template
    assert flow.band_for(-3).max_requests == 5  # negative: its own template


def test_the_gate_alone_gives_llm_ds_defaults() -> None:
    config = load_config(text=HEAD + GATE)
    flow = config.flow_control
    assert flow is not None and isinstance(config.detector, UtilizationDetector)
    assert (flow.max_bytes, flow.max_requests, flow.default_ttl_s) == (0, 0, 60.0)
    band = flow.band_for(0)
    assert (band.max_bytes, band.max_requests) == (1_000_000_000, 5000)
    assert isinstance(band.fairness, GlobalStrictFairnessPolicy)
    assert isinstance(band.ordering, FcfsOrderingPolicy)
    assert flow.usage_limit.ceiling(0, 0.0) == 1.0


def test_a_zero_ttl_means_no_ttl() -> None:
    flow = load_config(text=HEAD + GATE + "flowControl: {defaultRequestTTL: 0s}\n").flow_control
    assert flow is not None and math.isinf(flow.default_ttl_s)


def test_without_the_gate_the_section_is_ignored_but_its_detector_used(
        caplog: pytest.LogCaptureFixture) -> None:
    text = HEAD + """\
plugins:
- type: concurrency-detector
flowControl:
  maxRequests: 10
  saturationDetector: {pluginRef: concurrency-detector}
"""
    with caplog.at_level(logging.WARNING, "llmd.epp.config"):
        config = load_config(text=text)
    assert config.flow_control is None
    assert isinstance(config.detector, ConcurrencyDetector)  # legacy admission uses it
    assert "flowControl is ignored without featureGates: [flowControl]" in caplog.text


def test_v1alpha1s_top_level_saturation_detector_still_loads() -> None:
    text = ("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n" + GATE + """\
plugins:
- {type: concurrency-detector, name: cd}
saturationDetector: {pluginRef: cd}
flowControl: {maxRequests: 10}
""")
    config = load_config(text=text)
    assert isinstance(config.detector, ConcurrencyDetector) and config.flow_control is not None


@pytest.mark.parametrize(("body", "message"), [
    pytest.param("flowControl: {enableEviction: true}\n",
                 "flowControl.enableEviction: llmd cannot evict dispatched requests",
                 id="eviction"),
    pytest.param("flowControl:\n  priorityBands: [{priority: 1, fairnessPolicyRef: fifo}]\n",
                 "flowControl.priorityBands[0].fairnessPolicyRef: 'fifo' is not defined "
                 "(fairness policies: global-strict-fairness-policy; fairness policy types: "
                 "global-strict-fairness-policy, round-robin-fairness-policy)",
                 id="unknown-fairness"),
    pytest.param("plugins: [{type: queue-scorer}]\nflowControl:\n  priorityBands:\n"
                 "  - {priority: 1, orderingPolicyRef: queue-scorer}\n",
                 "flowControl.priorityBands[0].orderingPolicyRef: 'queue-scorer' is a scorer, "
                 "not an ordering policy (ordering policies: fcfs-ordering-policy",
                 id="wrong-kind"),
    pytest.param("flowControl:\n  priorityBands: [{priority: 1}, {priority: 1}]\n",
                 "flowControl: priorityBands[1].priority: 1 is defined twice",
                 id="duplicate-band"),
    pytest.param("flowControl:\n  priorityBands: [{maxRequests: 3}]\n",
                 "priorityBands[0].priority is required", id="band-without-priority"),
    pytest.param("flowControl: {maxBytes: 1 gig}\n",
                 "'1 gig' is not a quantity like 100, 1k, 500M or 1Gi", id="bad-quantity"),
    pytest.param("flowControl: {defaultRequestTTL: soon}\n",
                 "'soon' is not a duration like 200ms, 2s or 1m", id="bad-ttl"),
    pytest.param("flowControl: {maxRequest: 3}\n", "flowControl.maxRequest", id="typo"),
    pytest.param("plugins: [{type: concurrency-detector}]\n"
                 "saturationDetector: {pluginRef: utilization-detector}\n"
                 "flowControl: {saturationDetector: {pluginRef: concurrency-detector}}\n",
                 "saturationDetector.pluginRef: 'utilization-detector' differs from "
                 "flowControl.saturationDetector.pluginRef 'concurrency-detector'",
                 id="two-detectors"),
    pytest.param("plugins:\n- type: concurrency-detector\n  parameters: "
                 "{concurrencyMode: tokens}\n", "plugins[0].parameters.concurrencyMode",
                 id="token-mode"),
])
def test_flow_control_errors_name_the_path(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(text=HEAD + GATE + body)
    assert message in str(err.value)


@pytest.mark.parametrize(("value", "expected"), [
    (100, 100), ("100", 100), ("1k", 1000), ("500M", 500_000_000), ("1Gi", 2**30),
    ("1.5Ki", 1536), ("1e3", 1000),
])
def test_quantities_are_read_as_kubernetes_writes_them(value: int | str, expected: int) -> None:
    assert parse_quantity(value) == expected
