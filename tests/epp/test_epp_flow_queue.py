"""Flow control's queues with plain numbers: strict priority between bands, fairness between
flows, ordering within a flow, band and global limits, TTL order, removal."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from llmd.epp.flow_queue import BandConfig, FlowControlConfig, FlowQueues
from llmd.epp.plugins import (
    EdfOrderingPolicy,
    FcfsOrderingPolicy,
    GlobalStrictFairnessPolicy,
    NoParams,
    QueueItem,
    RoundRobinFairnessPolicy,
    StaticUsageLimitPolicy,
)

RR = RoundRobinFairnessPolicy("rr", NoParams())
STRICT = GlobalStrictFairnessPolicy("strict", NoParams())
FCFS = FcfsOrderingPolicy("fcfs", NoParams())
EDF = EdfOrderingPolicy("edf", NoParams())


def _config(*, fairness: object = RR, ordering: object = FCFS, max_requests: int = 5000,
            max_bytes: int = 10**9, global_requests: int = 0, global_bytes: int = 0,
            bands: dict[int, int] | None = None) -> FlowControlConfig:
    default = BandConfig(None, max_bytes, max_requests, fairness, ordering)  # type: ignore[arg-type]
    return FlowControlConfig(
        max_bytes=global_bytes, max_requests=global_requests, default_ttl_s=math.inf,
        bands={p: BandConfig(p, max_bytes, n, fairness, ordering)  # type: ignore[arg-type]
               for p, n in (bands or {}).items()},
        default_band=default, default_negative_band=None,
        usage_limit=StaticUsageLimitPolicy("s", StaticUsageLimitPolicy.Params()))


class _Queues:
    def __init__(self, queues: FlowQueues) -> None:
        self.queues, self.seq = queues, 0

    def add(self, flow: str = "a", priority: int = 0, at: float = 0.0, size: int = 1,
            ttl_s: float = math.inf) -> QueueItem:
        item = QueueItem(f"r{self.seq}", flow, priority, size, at, ttl_s, self.seq)
        self.seq += 1
        assert self.queues.full(priority, size) is None
        self.queues.push(item)
        return item

    def drain(self) -> list[QueueItem]:
        out = []
        while (item := self.queues.pop(lambda p: True)) is not None:
            out.append(item)
        return out


def test_higher_priority_bands_dispatch_first_whatever_the_arrival_order() -> None:
    q = _Queues(FlowQueues(_config()))
    low, mid, high = q.add(priority=-1), q.add(priority=0), q.add(priority=10)
    assert q.drain() == [high, mid, low]


def test_a_band_its_usage_limit_holds_back_lets_lower_bands_go() -> None:
    q = _Queues(FlowQueues(_config()))
    q.add(priority=10)
    low = q.add(priority=-1)
    assert q.queues.pop(lambda p: p < 0) is low
    assert q.queues.pop(lambda p: False) is None and q.queues.requests == 1


def test_round_robin_shares_a_band_between_flows_whatever_their_backlog() -> None:
    """40 requests of a noisy flow queued before 10 of a quiet one: round robin serves them
    alternately, so the quiet flow gets exactly half of the first 20 dispatches."""
    q = _Queues(FlowQueues(_config(fairness=RR)))
    for i in range(40):
        q.add("noisy", at=i)
    for i in range(10):
        q.add("quiet", at=100 + i)
    first = Counter(item.flow_id for item in q.drain()[:20])
    assert first == {"noisy": 10, "quiet": 10}


def test_global_strict_serves_arrival_order_across_flows() -> None:
    q = _Queues(FlowQueues(_config(fairness=STRICT)))
    items = [q.add("noisy" if i % 5 else "quiet", at=i) for i in range(20)]
    assert q.drain() == items


def test_edf_dispatches_the_earliest_deadline_first() -> None:
    q = _Queues(FlowQueues(_config(ordering=EDF)))
    late = q.add(at=0.0, ttl_s=10.0)
    soon = q.add(at=1.0, ttl_s=1.0)
    never = q.add(at=0.5)
    assert q.drain() == [soon, late, never]


@pytest.mark.parametrize(("config", "fill", "probe", "message"), [
    pytest.param(_config(bands={-1: 2}), [(-1, 1)] * 2, (-1, 1),
                 "priority band -1 holds its maximum of 2 requests", id="band-requests"),
    pytest.param(_config(max_bytes=100), [(0, 60)], (0, 50),
                 "priority band 0 holds its maximum of 100 bytes", id="band-bytes"),
    pytest.param(_config(global_requests=3), [(0, 1), (5, 1), (-1, 1)], (9, 1),
                 "the queue holds its maximum of 3 requests", id="global-requests"),
    pytest.param(_config(global_bytes=10), [(0, 6)], (1, 5),
                 "the queue holds its maximum of 10 bytes", id="global-bytes"),
])
def test_limits_refuse_a_request_that_would_exceed_them(
        config: FlowControlConfig, fill: list[tuple[int, int]], probe: tuple[int, int],
        message: str) -> None:
    q = _Queues(FlowQueues(config))
    for priority, size in fill:
        q.add(priority=priority, size=size)
    assert q.queues.full(*probe) == message
    q.drain()
    assert q.queues.full(*probe) is None  # room again once dispatched


def test_other_bands_keep_their_own_limit() -> None:
    q = _Queues(FlowQueues(_config(bands={-1: 1})))
    q.add(priority=-1)
    assert q.queues.full(-1, 1) is not None
    assert q.queues.full(0, 1) is None


def test_expired_requests_leave_in_deadline_order_and_counts_follow() -> None:
    q = _Queues(FlowQueues(_config()))
    a = q.add(at=0.0, ttl_s=2.0, size=3)
    b = q.add(at=0.5, ttl_s=1.0, size=4)
    c = q.add(at=0.0)
    assert q.queues.next_deadline() == 1.5
    assert q.queues.expired(1.9) == [b]
    assert q.queues.expired(5.0) == [a]
    assert (q.queues.requests, q.queues.bytes) == (1, 1)
    assert q.queues.next_deadline() == math.inf
    assert q.drain() == [c]


def test_a_discarded_request_is_skipped_and_uncounted() -> None:
    q = _Queues(FlowQueues(_config()))
    a, b = q.add(ttl_s=1.0), q.add()
    assert q.queues.discard(a) and not q.queues.discard(a)
    assert list(q.queues.bands()) == [(0, 1, 1)]
    assert q.queues.expired(10.0) == []
    assert q.drain() == [b]
    assert not q.queues.discard(b)  # dispatched: nothing to discard
    assert q.queues.drain() == [] and q.queues.requests == 0
