"""Flow control (llm-d's `flowControl` feature gate): requests wait in the EPP, by priority and
fairly between tenants, until the pool has room, instead of piling into the engines' queues.

`FlowController.admit` runs for each request after parsing and before scheduling:

- an empty pool (no healthy endpoint) answers 503 at once, gate or not;
- with nothing queued and the pool not saturated (the saturation detector, against the band's
  usage limit), the request goes on at once, without touching a queue;
- otherwise it joins its band's queue (`flow_queue`), or is refused with 429 when that band or
  the whole queue is full (`x-llm-d-request-dropped-reason: rejected-saturated`), and waits.

`run` (a root task) dispatches queued requests one at a time while the pool is not saturated
and evicts those whose TTL ran out (429, `rejected-ttl-expired`; 503 when the pool has no
endpoint at that moment, llm-d's `EvictedNoEndpoints`). It re-checks when `poke`d (each good
scrape: new metrics; a response that ended, where the EPP sees responses), at the next TTL
deadline, and every `tick_s` anyway. Each dispatch waits until the request's decision is
recorded (`Ticket.settle`, naming its endpoint) before the next saturation check, and the
detector sees each request released from the queue as one more waiting at its endpoint until
that endpoint's next scrape (`PoolSnapshot.inflight`), so one scrape interval cannot release
the whole queue at once. Requests that pass at once are not counted that way: an idle pool at
a high request rate would otherwise look saturated between two scrapes.
A request whose client went away while queued (its ext_proc stream cancelled) leaves the queue.
At shutdown the queue is answered with 503 (`rejected-shutting-down`).

TTL: `defaultRequestTTL` (llm-d's default 60 s; `0s`: none) capped at the EPP's `max_wait_s`
(8 s), because Envoy gives up on an ext_proc answer after its message timeout (15 s in llmd's
gateway) and would then apply the pool's failure mode to a request that is only queued.

Difference from llm-d: 429 for a request whose TTL ran out (llm-d v1 documents it as a
retryable backpressure error; older llm-d answered 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from prometheus_client import Histogram

from llmd.epp.datastore import Datastore, EndpointId, PoolSnapshot
from llmd.epp.flow_queue import FlowControlConfig, FlowQueues
from llmd.epp.metrics import FlowControlMetrics
from llmd.epp.plugins.base import SaturationDetector
from llmd.epp.plugins.flowcontrol._policy import QueueItem
from llmd.epp.request import InferenceRequest
from llmd.errors import NoEndpointError, RequestError, RequestShedError

__all__ = ["DEFAULT_FLOW", "DROPPED_REASON_HEADER", "FAIRNESS_HEADERS", "FlowController",
           "Ticket"]

log = logging.getLogger(__name__)

FAIRNESS_HEADERS = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
"""The flow a request belongs to: llm-d v1's header, then GIE's older name."""
DEFAULT_FLOW = "default-flow"
DROPPED_REASON_HEADER = "x-llm-d-request-dropped-reason"
"""llm-d's response header naming why flow control dropped a request."""


@dataclass(eq=False, slots=True)
class _Waiter:
    item: QueueItem
    done: asyncio.Future[RequestError | None]
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    endpoint: EndpointId | None = None


class Ticket:
    """A request flow control let through; `settle(endpoint)` once its decision is recorded
    (`endpoint`: where it went; None: it failed or ended), which lets the dispatcher check
    saturation again. Idempotent."""

    __slots__ = ("_waiter",)

    def __init__(self, waiter: _Waiter | None = None) -> None:
        self._waiter = waiter

    def settle(self, endpoint: EndpointId | None = None) -> None:
        if self._waiter is not None:
            self._waiter.endpoint = endpoint
            self._waiter.settled.set()
            self._waiter = None


_PASSED = Ticket()


class FlowController:
    def __init__(self, config: FlowControlConfig, store: Datastore,
                 detector: SaturationDetector, metrics: FlowControlMetrics | None = None, *,
                 max_wait_s: float = math.inf, tick_s: float = 0.05,
                 settle_timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.store, self.detector, self.metrics = config, store, detector, metrics
        self.ttl_s = min(config.default_ttl_s, max_wait_s)
        self.tick_s, self.settle_timeout_s, self.clock = tick_s, settle_timeout_s, clock
        self.queues = FlowQueues(config)
        self._waiters: dict[QueueItem, _Waiter] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._dispatching: _Waiter | None = None
        self._children: dict[tuple[int, str], Histogram] = {}
        self._released: dict[EndpointId, deque[float]] = {}
        """Release times of queued requests sent to each endpoint, until its next scrape."""

    def poke(self) -> None:
        """Something changed that may free capacity: check again now."""
        self._wake.set()

    async def admit(self, request: InferenceRequest, size_bytes: int) -> Ticket:
        """Return when `request` may be scheduled; raise NoEndpointError (503) or
        RequestShedError (429). Cancellation (the client left) takes it out of the queue."""
        started = self.clock()
        priority = request.priority
        pool = self._snapshot()
        if not pool.candidates:
            self._observe(priority, "RejectedNoEndpoints", 0.0)
            raise NoEndpointError("no endpoint in the inference pool can serve the request")
        if not self.queues.requests and self._dispatching is None \
                and not self._saturated(pool, priority):
            self._observe(priority, "Dispatched", 0.0)
            return _PASSED
        reason = self.queues.full(priority, size_bytes)
        if reason is not None:
            self._observe(priority, "RejectedCapacity", 0.0)
            raise RequestShedError(f"the inference pool is saturated and {reason}; retry later",
                                   headers={DROPPED_REASON_HEADER: "rejected-saturated"})
        item = QueueItem(request.request_id, _flow_id(request), priority, size_bytes, started,
                         self.ttl_s, next(self._seq))
        waiter = _Waiter(item, asyncio.get_running_loop().create_future())
        self._waiters[item] = waiter
        self.queues.push(item)
        self._gauges(priority)
        self.poke()
        try:
            error = await waiter.done
        except asyncio.CancelledError:
            if self.queues.discard(item):
                self._gauges(priority)
                self._observe(priority, "EvictedContextCancelled", self.clock() - started)
            waiter.settled.set()
            raise
        finally:
            self._waiters.pop(item, None)
        if error is not None:
            raise error
        return Ticket(waiter)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch and evict until `stop`; then answer what is still queued with 503."""
        try:
            while not stop.is_set():
                now = self.clock()
                self._expire(now)
                waiter = self._next()
                if waiter is not None:
                    await self._dispatch(waiter)
                    continue
                self._wake.clear()
                timeout = max(0.0, min(self.tick_s, self.queues.next_deadline() - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            for item in self.queues.drain():
                self._answer(item, "EvictedOther", NoEndpointError(
                    "the endpoint picker is shutting down; retry",
                    headers={DROPPED_REASON_HEADER: "rejected-shutting-down"}))

    def _next(self) -> _Waiter | None:
        if not self.queues.requests:
            return None
        pool = self._snapshot()
        if not pool.candidates:
            return None  # wait for endpoints (or the TTL)
        saturation = self.detector.saturation(pool)
        if self.metrics is not None:
            self.metrics.pool_saturation.set(saturation)
        limit = self.config.usage_limit
        item = self.queues.pop(lambda p: saturation < limit.ceiling(p, saturation))
        if item is None:
            return None
        self._gauges(item.priority)
        return self._waiters.get(item)

    async def _dispatch(self, waiter: _Waiter) -> None:
        item = waiter.item
        self._observe(item.priority, "Dispatched", self.clock() - item.enqueued_at)
        if waiter.done.done():  # cancelled in the same loop turn
            return
        waiter.done.set_result(None)
        self._dispatching = waiter
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settle_timeout_s):
                    await waiter.settled.wait()
        finally:
            self._dispatching = None
        if waiter.endpoint is not None:
            self._released.setdefault(waiter.endpoint, deque()).append(self.clock())

    def _snapshot(self) -> PoolSnapshot:
        """The pool, counting the requests released from the queue since each endpoint's
        last scrape as in flight there (on top of what the datastore counts)."""
        pool = self.store.snapshot()
        if not self._released:
            return pool
        extra: dict[EndpointId, int] = {}
        for ep_id, times in list(self._released.items()):
            ep = self.store.get(ep_id)
            scraped = ep.metrics_at if ep is not None and ep.metrics_at is not None else None
            while times and (ep is None or (scraped is not None and times[0] <= scraped)):
                times.popleft()
            if times:
                extra[ep_id] = len(times)
            else:
                del self._released[ep_id]
        if not extra:
            return pool
        merged = dict(pool.inflight)
        for ep_id, n in extra.items():
            merged[ep_id] = merged.get(ep_id, 0) + n
        return replace(pool, inflight=merged)

    def _expire(self, now: float) -> None:
        expired = self.queues.expired(now)
        if not expired:
            return
        empty = not self._snapshot().candidates
        for item in expired:
            self._gauges(item.priority)
            if empty:
                self._answer(item, "EvictedNoEndpoints", NoEndpointError(
                    f"no endpoint in the inference pool came up within the request's "
                    f"{self.ttl_s:g} s in the queue"))
            else:
                self._answer(item, "EvictedTTL", RequestShedError(
                    f"the inference pool stayed saturated for the request's {self.ttl_s:g} s "
                    "in the queue; retry later",
                    headers={DROPPED_REASON_HEADER: "rejected-ttl-expired"}))

    def _answer(self, item: QueueItem, outcome: str, error: RequestError) -> None:
        self._observe(item.priority, outcome, self.clock() - item.enqueued_at)
        waiter = self._waiters.get(item)
        if waiter is not None and not waiter.done.done():
            waiter.done.set_result(error)

    def _saturated(self, pool: PoolSnapshot, priority: int) -> bool:
        saturation = self.detector.saturation(pool)
        if self.metrics is not None:
            self.metrics.pool_saturation.set(saturation)
        return saturation >= self.config.usage_limit.ceiling(priority, saturation)

    def _gauges(self, priority: int) -> None:
        if self.metrics is None:
            return
        for p, requests, size in self.queues.bands():
            if p == priority:
                label = str(p)
                self.metrics.queue_size.labels(label).set(requests)
                self.metrics.queue_bytes.labels(label).set(size)

    def _observe(self, priority: int, outcome: str, seconds: float) -> None:
        if self.metrics is None:
            return
        child = self._children.get((priority, outcome))
        if child is None:  # priorities come from the config: the set stays bounded
            child = self._children[(priority, outcome)] = \
                self.metrics.queue_duration.labels(str(priority), outcome)
        child.observe(seconds)


def _flow_id(request: InferenceRequest) -> str:
    for name in FAIRNESS_HEADERS:
        value = request.headers.get(name)
        if value:
            return value
    return DEFAULT_FLOW
