"""Endpoints of the pool, their labels, latest metrics and health; a frozen snapshot per request.

The datastore is written by discovery (the endpoint set) and the scraper (metrics, health) and
read by the scheduler through `snapshot()`. The endpoint tuples are rebuilt lazily: at most once
per snapshot after writes, so a large pool scraped every 50 ms costs O(N) per snapshot, not O(N)
per scrape.

Health is the filter every request passes whatever the config: an endpoint the scraper marked
unhealthy (its scrape was refused or reset, or it has had no good scrape for longer than the
staleness limit) is a member of the pool but not a candidate, until its next good scrape.
A new endpoint is healthy until its scraper says otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from llmd.engines import DEFAULT_ENGINE, ENGINE_TYPE_LABEL, ROLE_LABEL, EndpointMetrics

__all__ = ["Datastore", "Endpoint", "EndpointId", "EndpointSpec", "PoolSnapshot"]

log = logging.getLogger(__name__)

EndpointId = str
"""`ip:port` (`[v6]:port` for IPv6): the value Envoy's ORIGINAL_DST cluster connects to."""

_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


def endpoint_id(address: str, port: int) -> EndpointId:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint as discovery reports it: where it is, its pod labels and, under Kubernetes
    discovery, llm-d's name for it (`namespace/pod`; `namespace/pod-rank-<i>` when the pool has
    several target ports, i = the port's index there). Static endpoints have no name."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    name: str | None = None

    @property
    def id(self) -> EndpointId:
        return endpoint_id(self.address, self.port)

    @property
    def engine(self) -> str:
        """The `llm-d.ai/engine-type` label; llm-d's default (vllm) when unlabelled."""
        return self.labels.get(ENGINE_TYPE_LABEL) or DEFAULT_ENGINE

    @property
    def role(self) -> str | None:
        return self.labels.get(ROLE_LABEL)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint with its latest scrape. `metrics_at` is `time.monotonic()` of that scrape;
    `healthy` False means the scraper took it out of scheduling (see the module docstring)."""

    id: EndpointId
    spec: EndpointSpec
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    metrics_at: float | None = None
    healthy: bool = True

    @property
    def labels(self) -> Mapping[str, str]:
        return self.spec.labels

    def age_s(self, now: float) -> float:
        """Seconds since the last successful scrape; infinite if never scraped."""
        return float("inf") if self.metrics_at is None else now - self.metrics_at


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The pool as one request sees it: immutable, so scoring needs no locks.

    `candidates` starts as every healthy endpoint; filters narrow it (a new snapshot per
    filter). `members` is every endpoint of the pool, healthy or not (default: the
    candidates). `generation` changes whenever the endpoint set changes (plugins prune
    per-endpoint state).
    """

    candidates: tuple[Endpoint, ...]
    now: float
    generation: int = 0
    members: tuple[Endpoint, ...] | None = None
    inflight: Mapping[EndpointId, int] = field(default_factory=lambda: _NO_COUNTS)
    """Requests sent to each endpoint that its last scrape does not reflect yet, by this
    replica and its peers (`llmd.epp.inflight`; empty without `dataLayer.crossReplica`).
    Load scorers add it to the scraped counts."""

    def with_candidates(self, candidates: Iterable[Endpoint]) -> PoolSnapshot:
        return replace(self, candidates=tuple(candidates),
                       members=self.candidates if self.members is None else self.members)

    def ids(self) -> frozenset[EndpointId]:
        """Every member's id: per-endpoint state lives as long as the endpoint is in the pool,
        through an unhealthy spell."""
        return frozenset(ep.id for ep in (self.candidates if self.members is None
                                          else self.members))


class Datastore:
    """The pool's endpoints, bounded by `max_endpoints` (extra endpoints are dropped and logged)."""

    def __init__(
        self, max_endpoints: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_endpoints = max_endpoints
        self._clock = clock
        self._by_id: dict[EndpointId, Endpoint] = {}
        self._tuple: tuple[Endpoint, ...] | None = ()
        self._healthy: tuple[Endpoint, ...] | None = ()
        self.generation = 0
        self.inflight: Mapping[EndpointId, int] = _NO_COUNTS
        self._on_scraped: Callable[[EndpointId, float], None] | None = None
        self._on_change: Callable[[], None] | None = None

    def attach_inflight(self, totals: Mapping[EndpointId, int],
                        on_scraped: Callable[[EndpointId, float], None]) -> None:
        """Hand snapshots the in-flight `totals`; `on_scraped(ep_id, started)` after each good
        scrape (an `InflightLedger`'s `totals` and `scraped`)."""
        self.inflight, self._on_scraped = totals, on_scraped

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every write (endpoint set, metrics, health): flow control
        re-checks saturation then. One callback; cheap and synchronous."""
        self._on_change = callback

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def set_endpoints(self, specs: Iterable[EndpointSpec]) -> None:
        """Replace the endpoint set; metrics of endpoints that stay are kept."""
        new: dict[EndpointId, Endpoint] = {}
        for spec in specs:
            if len(new) >= self.max_endpoints:
                log.error("pool has more than %d endpoints; ignoring the rest", self.max_endpoints)
                break
            old = self._by_id.get(spec.id)
            new[spec.id] = replace(old, spec=spec) if old else Endpoint(spec.id, spec)
        if new.keys() != self._by_id.keys():
            self.generation += 1
            log.info("pool endpoints: %s", ", ".join(new) or "(none)")
        self._by_id = new
        self._tuple = self._healthy = None
        self._changed()

    def update_metrics(self, ep_id: EndpointId, metrics: EndpointMetrics,
                       started: float | None = None) -> None:
        """Record a successful scrape (which also makes the endpoint healthy); ignored if the
        endpoint left meanwhile. `started`: when the scrape began (monotonic), for in-flight
        accounting."""
        old = self._by_id.get(ep_id)
        if old is None:
            return
        if self._on_scraped is not None:
            self._on_scraped(ep_id, self._clock() if started is None else started)
        self._by_id[ep_id] = replace(old, metrics=metrics, metrics_at=self._clock(),
                                     healthy=True)
        self._tuple = self._healthy = None
        self._changed()

    def set_healthy(self, ep_id: EndpointId, healthy: bool) -> None:
        """Put an endpoint into scheduling or take it out; ignored if it left meanwhile."""
        old = self._by_id.get(ep_id)
        if old is None or old.healthy == healthy:
            return
        self._by_id[ep_id] = replace(old, healthy=healthy)
        self._tuple = self._healthy = None
        self._changed()

    def get(self, ep_id: EndpointId) -> Endpoint | None:
        return self._by_id.get(ep_id)

    def endpoints(self) -> tuple[Endpoint, ...]:
        if self._tuple is None:
            self._tuple = tuple(self._by_id.values())
        return self._tuple

    def healthy(self) -> tuple[Endpoint, ...]:
        if self._healthy is None:
            members = self.endpoints()
            self._healthy = tuple(ep for ep in members if ep.healthy)
        return self._healthy

    def snapshot(self) -> PoolSnapshot:
        """The healthy endpoints as candidates, every endpoint as members."""
        return PoolSnapshot(self.healthy(), self._clock(), self.generation, self.endpoints(),
                            self.inflight)
