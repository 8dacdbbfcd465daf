"""Fallback endpoints: the destination header names the next-best candidates too (GIE's
comma-separated form) so a gateway can retry on them; P/D keeps retries engine-compatible."""

from __future__ import annotations

import json

import pytest

from llmd.engines import ENGINE_TYPE_LABEL, ROLE_LABEL, EndpointMetrics
from llmd.epp import PREFILLER_HEADER, Datastore, Director, EndpointSpec, load_config

BODY = json.dumps({"model": "m", "prompt": "Summarise this report. " * 20}).encode()
PD_CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: disagg-profile-handler
  parameters: {deciders: {prefill: pd}}
- {name: pd, type: always-disagg-pd-decider}
- type: decode-filter
- type: prefill-filter
- type: decode-engine-filter
- type: queue-scorer
schedulingProfiles:
- name: decode
  plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}]
- name: prefill
  plugins: [{pluginRef: prefill-filter}, {pluginRef: decode-engine-filter},
            {pluginRef: queue-scorer}]
"""


def _store(endpoints: list[tuple[int, int, dict[str, str]]]) -> Datastore:
    store = Datastore()
    specs = [EndpointSpec("10.0.0.1", port, labels) for port, _, labels in endpoints]
    store.set_endpoints(specs)
    for spec, (_, waiting, _) in zip(specs, endpoints, strict=True):
        store.update_metrics(spec.id, EndpointMetrics(waiting=waiting))
    return store


@pytest.mark.parametrize(("fallbacks", "expected"), [
    pytest.param(0, "10.0.0.1:8003", id="none-a-single-ip-port"),
    pytest.param(2, "10.0.0.1:8003,10.0.0.1:8001,10.0.0.1:8002", id="two-best-first"),
    pytest.param(9, "10.0.0.1:8003,10.0.0.1:8001,10.0.0.1:8002,10.0.0.1:8000",
                 id="more-than-the-pool"),
])
def test_fallbacks_follow_the_destination_best_first(fallbacks: int, expected: str) -> None:
    store = _store([(8000, 30, {}), (8001, 1, {}), (8002, 9, {}), (8003, 0, {})])
    director = Director(store, load_config(), fallback_endpoints=fallbacks)
    decision = director.decide("r", "/v1/completions", {}, BODY)
    assert decision.endpoint == "10.0.0.1:8003"
    assert decision.destination_value == expected


def test_unhealthy_endpoints_are_never_fallbacks() -> None:
    store = _store([(8000, 0, {}), (8001, 1, {}), (8002, 2, {})])
    store.set_healthy("10.0.0.1:8001", False)
    director = Director(store, load_config(), fallback_endpoints=2)
    value = director.decide("r", "/v1/completions", {}, BODY).destination_value
    assert value == "10.0.0.1:8000,10.0.0.1:8002"
    headers_only = director.decide("r", "/v1/models", {}, None).destination_value
    assert sorted(headers_only.split(",")) == ["10.0.0.1:8000", "10.0.0.1:8002"]


def test_pd_fallbacks_keep_the_decode_engine_and_list_prefill_candidates() -> None:
    def labels(role: str, engine: str) -> dict[str, str]:
        return {ROLE_LABEL: role, ENGINE_TYPE_LABEL: engine}

    store = _store([
        (8000, 0, labels("decode", "vllm")), (8001, 1, labels("decode", "sglang")),
        (8002, 2, labels("decode", "vllm")),
        (9000, 0, labels("prefill", "vllm")), (9001, 0, labels("prefill", "sglang")),
        (9002, 3, labels("prefill", "vllm")),
    ])
    director = Director(store, load_config(text=PD_CONFIG), fallback_endpoints=2)
    decision = director.decide("r", "/v1/completions", {}, BODY)
    # The SGLang decode endpoint scores second but cannot take a vLLM prefill's KV.
    assert decision.destination_value == "10.0.0.1:8000,10.0.0.1:8002"
    assert decision.result.headers[PREFILLER_HEADER] == "10.0.0.1:9000,10.0.0.1:9002"
