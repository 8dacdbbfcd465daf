"""Flow-control policies and the concurrency detector, on plain data."""

from __future__ import annotations

import math

import pytest
from _pool import ep, pool, req

from llmd.epp import PoolSnapshot
from llmd.epp.plugins import (
    ConcurrencyDetector,
    EdfOrderingPolicy,
    FcfsOrderingPolicy,
    GlobalStrictFairnessPolicy,
    NoParams,
    QueueItem,
    RoundRobinFairnessPolicy,
    StaticUsageLimitPolicy,
)


def _item(seq: int, at: float, ttl_s: float = math.inf, flow: str = "a") -> QueueItem:
    return QueueItem(f"r{seq}", flow, 0, 10, at, ttl_s, seq)


class _Flow:
    def __init__(self, *items: QueueItem) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def head(self) -> QueueItem:
        return self.items[0]


def test_fcfs_orders_by_arrival_then_sequence() -> None:
    fcfs = FcfsOrderingPolicy("fcfs", NoParams())
    items = [_item(2, 5.0), _item(1, 5.0), _item(0, 7.0)]
    assert [i.seq for i in sorted(items, key=fcfs.sort_key)] == [1, 2, 0]


def test_edf_orders_by_deadline_and_puts_requests_without_ttl_last() -> None:
    edf = EdfOrderingPolicy("edf", NoParams())
    items = [_item(0, 1.0, ttl_s=10.0), _item(1, 2.0, ttl_s=2.0), _item(2, 0.0),
             _item(3, 3.0, ttl_s=1.0)]
    # deadlines 11, 4, inf, 4: ties by arrival
    assert [i.seq for i in sorted(items, key=edf.sort_key)] == [1, 3, 0, 2]


def test_round_robin_serves_flows_in_turn_and_survives_a_flow_leaving() -> None:
    rr = RoundRobinFairnessPolicy("rr", NoParams())
    fcfs = FcfsOrderingPolicy("fcfs", NoParams())
    state: dict[str, str] = {}
    flows = {"b": _Flow(_item(0, 0.0)), "a": _Flow(_item(1, 1.0)), "c": _Flow(_item(2, 2.0))}
    assert [rr.pick(flows, fcfs, state) for _ in range(4)] == ["a", "b", "c", "a"]
    del flows["b"]  # the next after "a" has left: "c" comes next
    assert rr.pick(flows, fcfs, state) == "c"
    flows = {"a": _Flow(_item(3, 0.0))}
    assert rr.pick(flows, fcfs, state) == "a"  # wraps around


def test_global_strict_serves_the_best_head_across_flows() -> None:
    strict = GlobalStrictFairnessPolicy("strict", NoParams())
    fcfs = FcfsOrderingPolicy("fcfs", NoParams())
    flows = {"a": _Flow(_item(0, 5.0)), "b": _Flow(_item(1, 1.0)), "c": _Flow(_item(2, 3.0))}
    assert strict.pick(flows, fcfs, {}) == "b"


def test_static_usage_limit_is_one_ceiling_for_every_priority() -> None:
    policy = StaticUsageLimitPolicy("s", StaticUsageLimitPolicy.Params(threshold=0.8))
    assert policy.ceiling(-5, 0.1) == policy.ceiling(100, 2.0) == 0.8
    assert StaticUsageLimitPolicy.Params().threshold == 1.0


@pytest.mark.parametrize(("endpoints", "inflight", "expected"), [
    pytest.param([ep(1), ep(2)], {}, 0.0, id="idle"),
    pytest.param([ep(1, running=3, waiting=1), ep(2, running=4)], {}, 0.8, id="aggregate"),
    pytest.param([ep(1, running=4)], {"10.0.0.1:1": 1}, 1.0, id="sent-since-scrape-counts"),
    pytest.param([], {}, 1.0, id="empty-pool-is-saturated"),
])
def test_concurrency_detector_is_aggregate_load_over_aggregate_capacity(
        endpoints: list, inflight: dict[str, int], expected: float) -> None:
    detector = ConcurrencyDetector("c", ConcurrencyDetector.Params(max_concurrency=5))
    snapshot = PoolSnapshot(tuple(endpoints), 1000.0, inflight=inflight)
    assert detector.saturation(snapshot) == pytest.approx(expected)


def test_concurrency_detector_filters_endpoints_at_their_limit_and_fails_open() -> None:
    detector = ConcurrencyDetector("c", ConcurrencyDetector.Params(max_concurrency=2,
                                                                   headroom=0.5))
    busy, free = ep(1, running=3), ep(2, running=2)
    assert [e.id for e in detector.filter(req(), pool(busy, free))] == [free.id]
    assert len(detector.filter(req(), pool(busy))) == 1  # all over: keep them all


def test_concurrency_detector_counts_requests_only() -> None:
    with pytest.raises(ValueError, match="concurrency_mode|concurrencyMode"):
        ConcurrencyDetector.Params.model_validate({"concurrencyMode": "tokens"})
