"""In-flight load: requests sent to an endpoint that its last scrape cannot reflect yet.

Scraped queue lengths are up to one scrape interval (50 ms) old, so a burst of decisions inside
one interval all see the same numbers and pile onto the same endpoint; with N EPP replicas, N
times as many do. The ledger counts, per endpoint:

- this replica's picks since the endpoint's last good scrape started (a scrape that started
  after a pick reflects it: the request is then in the engine's queue or running), at most
  `max_age_s` old (when scraping stops, the count does not grow forever);
- every peer replica's own count, as that peer last published it (a per-origin gauge: each
  replica publishes only what it sent itself, so there is nothing to merge or conflict), until
  the peer is silent for the sync's expiry (it died or is partitioned away).

`totals` is the sum per endpoint, kept up to date on every change; scorers read it through
`PoolSnapshot.inflight` and add it to the scraped waiting/running counts. It is a live mapping:
everything runs on the EPP's event loop, so it only changes between two decisions.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping

from llmd.epp.datastore import EndpointId

__all__ = ["InflightLedger"]


class InflightLedger:
    def __init__(self, max_age_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 max_peer_endpoints: int = 4096) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self.max_peer_endpoints = max_peer_endpoints
        self._local: dict[EndpointId, deque[float]] = {}
        self._peers: dict[str, tuple[float, dict[EndpointId, int]]] = {}
        self.totals: dict[EndpointId, int] = {}

    def picked(self, ep_id: EndpointId) -> None:
        """This replica sent a request to `ep_id` (the hot path: one append)."""
        self._local.setdefault(ep_id, deque()).append(self.clock())
        self.totals[ep_id] = self.totals.get(ep_id, 0) + 1

    def scraped(self, ep_id: EndpointId, started: float) -> None:
        """A good scrape of `ep_id` that started at `started` (monotonic) reflects older picks."""
        picks = self._local.get(ep_id)
        if picks:
            while picks and picks[0] < started:
                picks.popleft()
            self._recount(ep_id)

    def local(self) -> dict[EndpointId, int]:
        """This replica's own counts (what it publishes), after dropping picks too old."""
        oldest = self.clock() - self.max_age_s
        out = {}
        for ep_id, picks in list(self._local.items()):
            if picks and picks[0] < oldest:
                while picks and picks[0] < oldest:
                    picks.popleft()
                self._recount(ep_id)
            if picks:
                out[ep_id] = len(picks)
            else:
                del self._local[ep_id]
        return out

    def set_peer(self, origin: str, counts: Mapping[EndpointId, int]) -> None:
        """`origin`'s latest gauge replaces its previous one."""
        old = self._peers.get(origin)
        new = dict(list(counts.items())[: self.max_peer_endpoints])
        self._peers[origin] = (self.clock(), new)
        for ep_id in set(new) | (set(old[1]) if old else set()):
            self._recount(ep_id)

    def expire(self, silent_s: float) -> list[str]:
        """Drop the gauges of peers not heard from for `silent_s`; the origins dropped."""
        cutoff = self.clock() - silent_s
        gone = [o for o, (at, _) in self._peers.items() if at < cutoff]
        for origin in gone:
            _, counts = self._peers.pop(origin)
            for ep_id in counts:
                self._recount(ep_id)
        return gone

    def peer_total(self) -> int:
        return sum(sum(c.values()) for _, c in self._peers.values())

    def _recount(self, ep_id: EndpointId) -> None:
        n = len(self._local.get(ep_id) or ())
        for _, counts in self._peers.values():
            n += counts.get(ep_id, 0)
        if n:
            self.totals[ep_id] = n
        else:
            self.totals.pop(ep_id, None)
