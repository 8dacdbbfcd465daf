"""Flow control's queues: priority bands, one queue per flow in each, limits and TTL order.

Synchronous and clock-free (times come in as arguments), so ordering, fairness and limits are
tested with plain numbers; `llmd.epp.flow_control` drives it from the event loop.

- A request joins the band of its priority (a configured `priorityBands[]` entry, else one
  made from `defaultNegativePriorityBand` for priority < 0 or `defaultPriorityBand`), in the
  queue of its flow (fairness id). Flows live while they hold requests; bands stay (their
  number is bounded by the configured objectives' priorities).
- Limits: a request is refused when its band would exceed `maxRequests` or `maxBytes`, or the
  whole queue the global ones (0: no global limit), as llm-d counts them: requests waiting.
- Dispatch is strict by priority: the highest band holding a request that its usage limit lets
  dispatch goes first; within it the fairness policy picks the flow and the ordering policy
  the flow's request.
- Removal (dispatch, TTL, a client gone) is O(log n): heaps skip items no longer queued.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from llmd.epp.plugins.flowcontrol._policy import (
    FairnessPolicy,
    OrderingPolicy,
    QueueItem,
    UsageLimitPolicy,
)

__all__ = ["BandConfig", "FlowControlConfig", "FlowQueues"]


@dataclass(frozen=True, slots=True)
class BandConfig:
    """One priority band's limits and policies (`priority` None: a template)."""

    priority: int | None
    max_bytes: int
    max_requests: int
    fairness: FairnessPolicy
    ordering: OrderingPolicy


@dataclass(frozen=True, slots=True)
class FlowControlConfig:
    """The loaded `flowControl` section. Global limits of 0 mean none; `default_ttl_s` inf
    means no TTL (`defaultRequestTTL: 0s`)."""

    max_bytes: int
    max_requests: int
    default_ttl_s: float
    bands: Mapping[int, BandConfig]
    default_band: BandConfig
    default_negative_band: BandConfig | None
    usage_limit: UsageLimitPolicy

    def band_for(self, priority: int) -> BandConfig:
        band = self.bands.get(priority)
        if band is not None:
            return band
        if priority < 0 and self.default_negative_band is not None:
            return self.default_negative_band
        return self.default_band

    def describe(self) -> str:
        def limit(n: int) -> str:
            return str(n) if n else "unlimited"

        bands = ", ".join(f"{p}: {b.fairness.name}/{b.ordering.name} max {b.max_requests} "
                          f"requests" for p, b in sorted(self.bands.items(), reverse=True))
        ttl = "none" if math.isinf(self.default_ttl_s) else f"{self.default_ttl_s:g}s"
        return (f"max {limit(self.max_requests)} requests, {limit(self.max_bytes)} bytes, "
                f"TTL {ttl}; bands [{bands or 'defaults only'}]")


class _Flow:
    """One flow's queue in one band, ordered by the band's ordering policy."""

    __slots__ = ("_heap", "length")

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, ...], int, QueueItem]] = []
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def push(self, key: tuple[float, ...], item: QueueItem) -> None:
        heapq.heappush(self._heap, (key, item.seq, item))
        self.length += 1

    def head(self) -> QueueItem:
        heap = self._heap
        while not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][2]

    def pop(self) -> QueueItem:
        item = self.head()
        heapq.heappop(self._heap)
        return item


@dataclass(slots=True)
class _Band:
    config: BandConfig
    priority: int
    flows: dict[str, _Flow] = field(default_factory=dict)
    requests: int = 0
    bytes: int = 0
    state: dict[str, str] = field(default_factory=dict)


class FlowQueues:
    def __init__(self, config: FlowControlConfig) -> None:
        self.config = config
        self._bands: dict[int, _Band] = {}
        self._order: list[int] = []  # band priorities, highest first
        self._deadlines: list[tuple[float, int, QueueItem]] = []
        self.requests = 0
        self.bytes = 0

    def full(self, priority: int, size_bytes: int) -> str | None:
        """Why a request of `priority` and `size_bytes` cannot join, or None."""
        c = self.config
        band = self._bands.get(priority)
        cfg = band.config if band is not None else c.band_for(priority)
        requests, used = (band.requests, band.bytes) if band is not None else (0, 0)
        if requests + 1 > cfg.max_requests:
            return f"priority band {priority} holds its maximum of {cfg.max_requests} requests"
        if used + size_bytes > cfg.max_bytes:
            return f"priority band {priority} holds its maximum of {cfg.max_bytes} bytes"
        if c.max_requests and self.requests + 1 > c.max_requests:
            return f"the queue holds its maximum of {c.max_requests} requests"
        if c.max_bytes and self.bytes + size_bytes > c.max_bytes:
            return f"the queue holds its maximum of {c.max_bytes} bytes"
        return None

    def push(self, item: QueueItem) -> None:
        """Queue `item` (the caller checked `full` first)."""
        band = self._band(item.priority)
        flow = band.flows.get(item.flow_id)
        if flow is None:
            flow = band.flows[item.flow_id] = _Flow()
        item.queued = True
        flow.push(band.config.ordering.sort_key(item), item)
        band.requests += 1
        band.bytes += item.size_bytes
        self.requests += 1
        self.bytes += item.size_bytes
        if not math.isinf(item.ttl_s):
            heapq.heappush(self._deadlines, (item.deadline, item.seq, item))

    def discard(self, item: QueueItem) -> bool:
        """Take `item` out of its queue; False when it was not queued (already dispatched)."""
        if not item.queued:
            return False
        band = self._bands[item.priority]
        flow = band.flows[item.flow_id]
        item.queued = False
        flow.length -= 1
        self._left(band, item)
        if not flow.length:
            del band.flows[item.flow_id]
        return True

    def pop(self, may_dispatch: Callable[[int], bool]) -> QueueItem | None:
        """The next request to dispatch, taken out of the queue; None when no band that holds
        requests may dispatch (`may_dispatch(priority)`)."""
        for priority in self._order:
            band = self._bands[priority]
            if not band.requests or not may_dispatch(priority):
                continue
            cfg = band.config
            flow_id = cfg.fairness.pick(band.flows, cfg.ordering, band.state)
            flow = band.flows[flow_id]
            item = flow.pop()
            item.queued = False
            flow.length -= 1
            if not flow.length:
                del band.flows[flow_id]
            self._left(band, item)
            return item
        return None

    def next_deadline(self) -> float:
        """The earliest TTL deadline of a queued request (inf: none)."""
        heap = self._deadlines
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def expired(self, now: float) -> list[QueueItem]:
        """Take out and return every request whose TTL ran out by `now`."""
        out = []
        while self.next_deadline() <= now:
            item = heapq.heappop(self._deadlines)[2]
            self.discard(item)
            out.append(item)
        return out

    def drain(self) -> list[QueueItem]:
        """Take out every queued request (shutdown)."""
        out = [item for _, _, item in self._deadlines if item.queued]
        for band in self._bands.values():
            for flow in band.flows.values():
                out.extend(i for _, _, i in flow._heap if i.queued and math.isinf(i.ttl_s))
        for item in out:
            self.discard(item)
        return out

    def bands(self) -> Iterator[tuple[int, int, int]]:
        """(priority, requests, bytes) of every band seen so far."""
        for priority in self._order:
            band = self._bands[priority]
            yield priority, band.requests, band.bytes

    def _band(self, priority: int) -> _Band:
        band = self._bands.get(priority)
        if band is None:
            band = self._bands[priority] = _Band(self.config.band_for(priority), priority)
            self._order = sorted(self._bands, reverse=True)
        return band

    def _left(self, band: _Band, item: QueueItem) -> None:
        band.requests -= 1
        band.bytes -= item.size_bytes
        self.requests -= 1
        self.bytes -= item.size_bytes
