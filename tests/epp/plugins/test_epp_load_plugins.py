"""The v1 load plugins on plain data: inflight-load-producer, token-load-scorer,
active-request-scorer, prefix-cache-affinity-filter and the peakPrefillThroughput shapes."""

from __future__ import annotations

import random

import pytest
from _pool import NOW, ep, pool, req
from pydantic import ValidationError

from llmd.engines import ENGINE_TYPE_LABEL
from llmd.epp import PoolSnapshot
from llmd.epp.plugins import (
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    ActiveRequestScorer,
    EndpointLoad,
    InflightLoad,
    InflightLoadProducer,
    PrefixCacheAffinityFilter,
    PrefixMatch,
    ProfileResult,
    SchedulingResult,
    TokenLoadScorer,
)
from llmd.epp.plugins._throughput import PrefillThroughput

A, B, C = 8001, 8002, 8003
ID = {p: f"10.0.0.1:{p}" for p in (A, B, C)}
SGLANG = {ENGINE_TYPE_LABEL: "sglang"}


def _ports(scores: object) -> dict[int, float]:
    assert isinstance(scores, dict)
    return {int(k.rpartition(":")[2]): round(v, 4) for k, v in scores.items()}


def _with_load(loads: dict[int, tuple[int, float]], uncached: dict[int, int] | None = None,
               matched: dict[int, float] | None = None, prompt: str = "x" * 400):
    r = req(prompt=prompt)
    r.state.put(INFLIGHT_LOAD, InflightLoad(
        {ID[p]: EndpointLoad(n, t) for p, (n, t) in loads.items()},
        {ID[p]: u for p, u in (uncached or {}).items()}))
    if matched is not None:
        r.state.put(PREFIX_MATCH, PrefixMatch(16, 10, {ID[p]: m for p, m in matched.items()}))
    return r


# --- peakPrefillThroughput -------------------------------------------------------------------

@pytest.mark.parametrize(("value", "port_labels", "expected"), [
    pytest.param(20000, {}, 20000.0, id="number-pool-wide"),
    pytest.param({"vllm": 15928, "sglang": 30720}, SGLANG, 30720.0, id="engine-shorthand"),
    pytest.param({"vllm": 15928, "sglang": 30720}, {}, 15928.0, id="unlabelled-is-vllm"),
    pytest.param({"sglang": 30720}, {}, 15928.0, id="engine-missing-uses-default"),
    pytest.param({"default": 10000, "engines": {"sglang": 30000},
                  "labels": [{"matchLabels": {"gpu": "h200"}, "value": 41000}],
                  "endpoints": {"10.0.0.1:8001": 50000}},
                 {"gpu": "h200", **SGLANG}, 50000.0, id="endpoint-wins"),
    pytest.param({"engines": {"sglang": 30000},
                  "labels": [{"matchLabels": {"gpu": "h200"}, "value": 41000}]},
                 {"gpu": "h200", **SGLANG}, 41000.0, id="label-before-engine"),
    pytest.param({"endpoints": {"ns/pod-a": 12345}}, {}, 12345.0, id="by-name"),
])
def test_prefill_throughput_shapes(value: object, port_labels: dict[str, str],
                                   expected: float) -> None:
    t = PrefillThroughput.model_validate(value)
    assert t.of(ep(A, labels=port_labels, name="ns/pod-a")) == expected


@pytest.mark.parametrize(("value", "message"), [
    pytest.param(0, "greater than 0", id="zero"),
    pytest.param({"trtllm": 5}, "trtllm", id="unknown-engine-key"),
    pytest.param({"engines": {"tgi": 5}}, "'vllm' or 'sglang'", id="unknown-engine"),
    pytest.param(True, "valid dictionary", id="bool"),
])
def test_prefill_throughput_rejects(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PrefillThroughput.model_validate(value)


# --- token-load-scorer / active-request-scorer -------------------------------------------------

def test_token_load_counts_inflight_plus_the_requests_uncached_tokens() -> None:
    s = TokenLoadScorer("t", TokenLoadScorer.Params(queue_threshold_tokens=1000))
    r = _with_load({A: (0, 0), B: (2, 100), C: (4, 900)}, {A: 0, B: 10, C: 200})
    assert _ports(s.score(r, pool(ep(A), ep(B), ep(C)))) == {A: 1.0, B: 0.89, C: 0.0}


def test_token_load_per_engine_throughput_halves_a_fast_endpoints_load() -> None:
    params = TokenLoadScorer.Params.model_validate(
        {"queueThresholdTokens": 1000,
         "peakPrefillThroughput": {"default": 10000, "engines": {"sglang": 20000}}})
    s = TokenLoadScorer("t", params)
    r = _with_load({A: (1, 400), B: (1, 400)})
    scores = _ports(s.score(r, pool(ep(A), ep(B, labels=SGLANG))))
    # The same tokens: the SGLang endpoint drains them twice as fast (threshold at 10k tok/s).
    assert scores == {A: 0.6, B: 0.8}


def test_token_load_without_data_scores_nothing() -> None:
    s = TokenLoadScorer("t", TokenLoadScorer.Params())
    assert s.score(req(), pool(ep(A))) == {}


@pytest.mark.parametrize(("params", "expected"), [
    pytest.param({}, {A: 1.0, B: 0.5, C: 0.0}, id="defaults"),
    pytest.param({"idleThreshold": 2, "maxBusyScore": 0.5}, {A: 1.0, B: 1.0, C: 0.0},
                 id="idle-threshold"),
])
def test_active_request_scorer(params: dict[str, float], expected: dict[int, float]) -> None:
    s = ActiveRequestScorer("a", ActiveRequestScorer.Params.model_validate(params))
    r = _with_load({A: (0, 0), B: (2, 100), C: (4, 900)})
    assert _ports(s.score(r, pool(ep(A), ep(B), ep(C)))) == expected


# --- inflight-load-producer ---------------------------------------------------------------------

def _decide(producer: InflightLoadProducer, prompt: str, p: PoolSnapshot, to: int,
            prefill: int | None = None) -> None:
    r = req(prompt=prompt)
    producer.produce(r, p)
    by_id = {e.id: e for e in p.candidates}
    results = {"decode": ProfileResult((by_id[ID[to]],))}
    if prefill is not None:
        results["prefill"] = ProfileResult((by_id[ID[prefill]],))
    producer.pre_request(r, SchedulingResult(results, primary="decode"), p)


def _load(producer: InflightLoadProducer, p: PoolSnapshot, prompt: str = "") -> InflightLoad:
    r = req(prompt=prompt)
    producer.produce(r, p)
    load = r.state.get(INFLIGHT_LOAD)
    assert load is not None
    return load


def test_producer_charges_uncached_tokens_and_drains_at_the_endpoints_rate() -> None:
    producer = InflightLoadProducer("i", InflightLoadProducer.Params.model_validate(
        {"peakPrefillThroughput": {"vllm": 1000, "sglang": 2000}}))
    endpoints = (ep(A, running=1, age_s=5), ep(B, running=1, labels=SGLANG, age_s=5))
    _decide(producer, "x" * 4000, pool(*endpoints), A)  # 1000 tokens
    _decide(producer, "x" * 4000, pool(*endpoints), B)
    load = _load(producer, pool(*endpoints), prompt="y" * 400)
    assert load.of(ID[A]) == EndpointLoad(2, 1000.0)  # 1 scraped running + 1 sent since
    assert load.uncached(ID[A]) == 100
    later = PoolSnapshot(endpoints, NOW + 0.25)
    drained = _load(producer, later)
    assert drained.of(ID[A]).tokens == pytest.approx(750.0)
    assert drained.of(ID[B]).tokens == pytest.approx(500.0)  # twice as fast


def test_producer_discounts_cached_tokens() -> None:
    producer = InflightLoadProducer("i", InflightLoadProducer.Params())
    r = req(prompt="x" * 4000)  # 1000 tokens; 10 blocks of 16 cached on A
    r.state.put(PREFIX_MATCH, PrefixMatch(16, 63, {ID[A]: 10}))
    producer.produce(r, pool(ep(A), ep(B)))
    load = r.state.get(INFLIGHT_LOAD)
    assert load is not None and load.uncached(ID[A]) == 840 and load.uncached(ID[B]) == 1000


def test_an_idle_scrape_clears_tokens_and_reflects_sent_requests() -> None:
    producer = InflightLoadProducer("i", InflightLoadProducer.Params())
    _decide(producer, "x" * 40000, pool(ep(A, age_s=5)), A)
    assert _load(producer, pool(ep(A, age_s=5))).of(ID[A]).requests == 1
    scraped = PoolSnapshot((ep(A, age_s=-0.1),), NOW + 0.2)  # scraped idle after the charge
    assert _load(producer, scraped).of(ID[A]) == EndpointLoad(0, 0.0)


def test_pd_charges_tokens_to_prefill_and_the_request_to_both() -> None:
    producer = InflightLoadProducer("i", InflightLoadProducer.Params())
    p = pool(ep(A, age_s=5), ep(B, age_s=5))
    _decide(producer, "x" * 4000, p, A, prefill=B)
    load = _load(producer, p)
    assert load.of(ID[A]) == EndpointLoad(1, 0.0)
    assert load.of(ID[B]) == EndpointLoad(1, 1000.0)


def test_producer_state_leaves_with_the_endpoint() -> None:
    producer = InflightLoadProducer("i", InflightLoadProducer.Params())
    _decide(producer, "x" * 400, pool(ep(A, age_s=5), ep(B, age_s=5)), A)
    _decide(producer, "x" * 400, pool(ep(B, age_s=5), generation=1), B)
    assert set(producer._backlog) == {ID[B]}


def test_output_token_estimate_is_refused() -> None:
    with pytest.raises(ValidationError, match="outlen-bucket"):
        InflightLoadProducer.Params.model_validate({"addEstimatedOutputTokens": True})


# --- prefix-cache-affinity-filter ------------------------------------------------------------

def _affinity(**params: object) -> PrefixCacheAffinityFilter:
    return PrefixCacheAffinityFilter(
        "f", PrefixCacheAffinityFilter.Params.model_validate(params), random.Random(0))


def _kept(f: PrefixCacheAffinityFilter, r: object, p: PoolSnapshot) -> set[int]:
    return {e.spec.port for e in f.filter(r, p)}  # type: ignore[arg-type]


@pytest.mark.parametrize(("matched", "loads", "params", "kept"), [
    pytest.param({A: 9, B: 2}, {A: (1, 0), B: (1, 0)}, {}, {A}, id="sticky-only"),
    pytest.param({A: 9, B: 9}, {A: (1, 0), B: (1, 0)}, {}, {A, B}, id="all-sticky"),
    pytest.param({A: 2, B: 2}, {A: (1, 0), B: (1, 0)}, {}, {A, B}, id="none-sticky"),
    pytest.param({A: 9}, {A: (9, 200_000), B: (0, 0)}, {"maxTTFTPenaltyMs": 5000}, {A, B},
                 id="ttft-gate-breaks"),  # 200k tokens / 15928 tok/s = 12.6 s > 5 s
    pytest.param({A: 9}, {A: (9, 50_000), B: (0, 0)}, {"maxTTFTPenaltyMs": 5000}, {A},
                 id="ttft-gate-holds"),  # 3.1 s
    pytest.param({A: 9}, {A: (9, 200_000), B: (0, 0)}, {"maxTTFTPenaltyMs": 0}, {A},
                 id="gate-off-always-sticks"),
    pytest.param({A: 9}, {A: (9, 300_000), B: (0, 0)},
                 {"maxTTFTPenaltyMs": 0, "maxTokensInFlightPenalty": 286720}, {A, B},
                 id="token-gate-breaks"),
    pytest.param({A: 9}, {A: (9, 100_000), B: (0, 0)},
                 {"maxTTFTPenaltyMs": 5000, "peakPrefillThroughput": {"sglang": 30720}},
                 {A}, id="fast-engine-holds-longer"),  # A is SGLang: 3.3 s
])
def test_affinity_filter(matched: dict[int, float], loads: dict[int, tuple[int, float]],
                         params: dict[str, object], kept: set[int]) -> None:
    r = _with_load(loads, matched=matched)
    p = pool(ep(A, labels=SGLANG), ep(B))
    assert _kept(_affinity(**params), r, p) == kept


def test_affinity_filter_without_load_data_keeps_all() -> None:
    r = req(prompt="x")
    r.state.put(PREFIX_MATCH, PrefixMatch(16, 10, {ID[A]: 9}))
    assert _kept(_affinity(), r, pool(ep(A), ep(B))) == {A, B}


def test_affinity_filter_exploration_skips_the_gate() -> None:
    r = _with_load({A: (0, 0), B: (0, 0)}, matched={A: 9})
    assert _kept(_affinity(explorationProbability=1.0), r, pool(ep(A), ep(B))) == {A, B}


@pytest.mark.parametrize(("params", "message"), [
    pytest.param({"ttftSource": "latencyPredictor"}, "latency-predictor sidecars",
                 id="latency-predictor"),
    pytest.param({"prefillCalibrationFile": "/etc/cal.json"}, "llmd calibrate",
                 id="calibration-record"),
    pytest.param({"affinityThreshold": 1.5}, "less than or equal to 1", id="threshold-range"),
])
def test_affinity_filter_rejects(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PrefixCacheAffinityFilter.Params.model_validate(params)
