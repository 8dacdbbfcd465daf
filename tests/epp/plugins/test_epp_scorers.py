"""Every scorer on plain data: scores per endpoint id."""

from __future__ import annotations

import base64

import pytest
from _pool import ep, pool, req

from llmd.engines import LoraState
from llmd.epp import SESSION_HEADER
from llmd.epp.plugins import (
    KvCacheUtilizationScorer,
    LoadAwareScorer,
    LoraAffinityScorer,
    ProfileResult,
    QueueScorer,
    RunningRequestsSizeScorer,
    SchedulingResult,
    SessionAffinityScorer,
)
from llmd.epp.plugins.scorer.session_affinity import session_token

A, B, C = 8001, 8002, 8003
IDS = {p: f"10.0.0.1:{p}" for p in (A, B, C)}


def _by_port(scores: dict[str, float]) -> dict[int, float]:
    return {int(k.rpartition(":")[2]): round(v, 4) for k, v in scores.items()}


@pytest.mark.parametrize(("waiting", "expected"), [
    pytest.param((0, 5, 10), {A: 1.0, B: 0.5, C: 0.0}, id="min-max-normalised"),
    pytest.param((3, 3, 3), {A: 1.0, B: 1.0, C: 1.0}, id="all-equal-score-one"),
])
def test_queue_scorer(waiting: tuple[int, int, int], expected: dict[int, float]) -> None:
    p = pool(*(ep(port, waiting=w) for port, w in zip((A, B, C), waiting, strict=True)))
    s = QueueScorer("q", QueueScorer.Params())
    assert _by_port(dict(s.score(req(), p))) == expected


@pytest.mark.parametrize(("running", "expected"), [
    pytest.param((2, 4, 6), {A: 1.0, B: 0.5, C: 0.0}, id="fewest-running-wins"),
    pytest.param((0, 0, 0), {A: 1.0, B: 1.0, C: 1.0}, id="idle-pool"),
])
def test_running_requests_size_scorer(running: tuple[int, int, int],
                                      expected: dict[int, float]) -> None:
    p = pool(*(ep(port, running=r) for port, r in zip((A, B, C), running, strict=True)))
    s = RunningRequestsSizeScorer("r", RunningRequestsSizeScorer.Params())
    assert _by_port(dict(s.score(req(), p))) == expected


def test_kv_cache_utilization_scorer() -> None:
    p = pool(ep(A, kv=0.0), ep(B, kv=0.25), ep(C, kv=1.0))
    s = KvCacheUtilizationScorer("kv", KvCacheUtilizationScorer.Params())
    assert _by_port(dict(s.score(req(), p))) == {A: 1.0, B: 0.75, C: 0.0}


@pytest.mark.parametrize(("threshold", "waiting", "expected"), [
    pytest.param(128, (0, 64, 500), {A: 0.5, B: 0.25, C: 0.0}, id="default-threshold"),
    pytest.param(10, (0, 5, 10), {A: 0.5, B: 0.25, C: 0.0}, id="custom-threshold"),
])
def test_load_aware_scorer(threshold: int, waiting: tuple[int, int, int],
                           expected: dict[int, float]) -> None:
    p = pool(*(ep(port, waiting=w) for port, w in zip((A, B, C), waiting, strict=True)))
    s = LoadAwareScorer("l", LoadAwareScorer.Params(threshold=threshold))
    assert _by_port(dict(s.score(req(), p))) == expected


@pytest.mark.parametrize(("lora", "expected"), [
    pytest.param(LoraState(2, ("ad",), ()), 1.0, id="adapter-running"),
    pytest.param(LoraState(2, ("other",), ()), 0.8, id="free-slot"),
    pytest.param(LoraState(1, ("other",), ("ad",)), 0.6, id="adapter-waiting"),
    pytest.param(LoraState(1, ("other",), ()), 0.0, id="full-without-adapter"),
    pytest.param(None, 0.0, id="no-lora-metrics-sglang"),
])
def test_lora_affinity_scorer(lora: LoraState | None, expected: float) -> None:
    s = LoraAffinityScorer("lora", LoraAffinityScorer.Params())
    assert s.score(req(model="ad"), pool(ep(A, lora=lora))) == {IDS[A]: expected}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("token", "expected"), [
    pytest.param(_b64(IDS[B]), {A: 0.0, B: 1.0}, id="token-names-b"),
    pytest.param(None, {A: 0.0, B: 0.0}, id="no-token"),
    pytest.param("%%%not-base64", {A: 0.0, B: 0.0}, id="garbage-token"),
    pytest.param(_b64("10.9.9.9:8000"), {A: 0.0, B: 0.0}, id="foreign-endpoint"),
    pytest.param(base64.b64encode(b"\xff").decode(), {A: 0.0, B: 0.0}, id="not-utf8"),
])
def test_session_affinity_scorer(token: str | None, expected: dict[int, float]) -> None:
    s = SessionAffinityScorer("s", SessionAffinityScorer.Params())
    r = req(**({"x_session_token": token} if token else {}))
    assert _by_port(dict(s.score(r, pool(ep(A), ep(B))))) == expected


@pytest.mark.parametrize(("token", "expected"), [
    pytest.param(_b64("llm/qwen-1"), {A: 0.0, B: 1.0}, id="pod-name-as-llm-d-writes-it"),
    pytest.param(_b64(IDS[B]), {A: 0.0, B: 1.0}, id="ip-port-still-matches"),
    pytest.param(_b64("llm/qwen-9"), {A: 0.0, B: 0.0}, id="pod-gone"),
])
def test_session_affinity_with_kubernetes_names(token: str,
                                                expected: dict[int, float]) -> None:
    s = SessionAffinityScorer("s", SessionAffinityScorer.Params())
    p = pool(ep(A, name="llm/qwen-0"), ep(B, name="llm/qwen-1"))
    assert _by_port(dict(s.score(req(x_session_token=token), p))) == expected


@pytest.mark.parametrize(("name", "decoded"), [
    pytest.param(None, IDS[B], id="static-endpoint-ip-port"),
    pytest.param("llm/qwen-1", "llm/qwen-1", id="kubernetes-namespace-name"),
])
def test_session_token_names_the_destination(name: str | None, decoded: str) -> None:
    """The echoed token is exactly what the scorer matches on the next request."""
    s = SessionAffinityScorer("s", SessionAffinityScorer.Params())
    target = ep(B, name=name)
    result = SchedulingResult({"default": ProfileResult((target,))}, primary="default")
    headers = s.response_headers(req(), result)
    assert headers == {SESSION_HEADER: session_token(target)} == {SESSION_HEADER: _b64(decoded)}
    again = req(x_session_token=headers[SESSION_HEADER])
    assert _by_port(dict(s.score(again, pool(ep(A), target)))) == {A: 0.0, B: 1.0}
