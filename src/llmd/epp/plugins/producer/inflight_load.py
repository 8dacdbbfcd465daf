"""`inflight-load-producer`: per endpoint, the requests and uncached prompt tokens this EPP has
in flight there, as typed cycle data (`INFLIGHT_LOAD`) for `token-load-scorer`,
`active-request-scorer` and `prefix-cache-affinity-filter`.

After each decision (PreRequest) the chosen endpoint is charged the request and its prompt
tokens that endpoint has not cached (from `PREFIX_MATCH`: `prefixMatchInfoProducerName` names
its producer; unset, the config's, the approximate one by default). With P/D the prefill
endpoint is charged the tokens and the decode endpoint only the request.

Release, where llmd differs from llm-d: llm-d releases the tokens at the first response byte
and the request at the last, which its ext_proc stream sees. llmd's gateway runs ext_proc in
BUFFERED mode and the stream ends with the decision, so llmd models both:

- tokens drain at the endpoint's `peakPrefillThroughput` (per engine or endpoint, see
  `llmd.epp.plugins._throughput`): what a prefill-bound server does; a scrape showing the
  endpoint idle (nothing waiting or running) after the last charge clears what is left. Unset
  here, the loader hands it the value the config gives `prefix-cache-affinity-filter` (where
  llm-d's guides set it) or `token-load-scorer`;
- requests are the endpoint's scraped waiting + running, plus this EPP's requests sent since
  that scrape (at most `maxRequestAgeS` old, so a stalled scraper cannot grow them forever).

All state is per endpoint and leaves with the endpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot
from llmd.epp.plugins._prefix_refs import PrefixProducerParams
from llmd.epp.plugins._throughput import PrefillThroughput
from llmd.epp.plugins._tokens import prompt_tokens
from llmd.epp.plugins.base import ProducerRef, SchedulingResult
from llmd.epp.plugins.keys import INFLIGHT_LOAD, PREFIX_MATCH, EndpointLoad, InflightLoad
from llmd.epp.request import InferenceRequest

__all__ = ["InflightLoadProducer"]

_MAX_SENT = 65536
"""Requests remembered per endpoint between two scrapes (the oldest are dropped beyond)."""


@dataclass(slots=True)
class _Backlog:
    tokens: float = 0.0
    at: float = 0.0
    """When `tokens` was last computed (the pool's monotonic clock)."""


class InflightLoadProducer:
    type: ClassVar[str] = "inflight-load-producer"
    produces: ClassVar[DataKeys] = (INFLIGHT_LOAD,)
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH,)

    class Params(PrefixProducerParams):
        add_estimated_output_tokens: bool = Field(
            default=False, description="llm-d: add an output-length estimate (needs its "
            "outlen-bucket plugin); llmd: only false")
        max_estimated_output_tokens: int | None = Field(default=None, ge=0)
        peak_prefill_throughput: PrefillThroughput | None = Field(
            default=None, description="llmd: tokens/s at which an endpoint's in-flight tokens "
            "drain (a number, or per engine / endpoint); unset: the config's "
            "prefix-cache-affinity-filter's or token-load-scorer's, else 15928")
        max_request_age_s: float = Field(
            default=60.0, gt=0, description="llmd: a request sent since the last scrape counts "
            "at most this long")

        @field_validator("add_estimated_output_tokens")
        @classmethod
        def _no_output_estimate(cls, value: bool) -> bool:
            if value:
                raise ValueError("llmd has no outlen-bucket plugin to estimate output length; "
                                 "leave it false (prompt tokens only)")
            return value

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        self.rates = params.peak_prefill_throughput or PrefillThroughput()
        """How fast each endpoint drains its tokens; the loader hands it the config's value
        when the parameter is unset (`adopt_rates`)."""
        self._backlog: dict[EndpointId, _Backlog] = {}
        self._sent: dict[EndpointId, deque[float]] = {}
        self._generation = -1

    def adopt_rates(self, rates: PrefillThroughput) -> None:
        """Use `rates` unless the parameter was given."""
        if self.params.peak_prefill_throughput is None:
            self.rates = rates

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()

    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        match = request.state.get(PREFIX_MATCH)
        total = prompt_tokens(request, match)
        loads: dict[EndpointId, EndpointLoad] = {}
        uncached: dict[EndpointId, int] = {}
        for ep in pool.candidates:
            loads[ep.id] = EndpointLoad(self._requests(ep, pool.now),
                                        self._tokens(ep, pool.now))
            cached = match.cached_tokens(ep.id) if match is not None else 0
            uncached[ep.id] = max(total - cached, 0)
        request.state.put(INFLIGHT_LOAD, InflightLoad(loads, uncached))

    def pre_request(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        if pool.generation != self._generation:
            self._prune(pool)
        load = request.state.get(INFLIGHT_LOAD)
        now = pool.now
        others = [r.targets[0] for name, r in result.results.items()
                  if name != result.primary and r.targets]
        for i, ep in enumerate((result.destination, *others)):
            self._sent.setdefault(ep.id, deque(maxlen=_MAX_SENT)).append(now)
            if i == 0 and others:
                continue  # a decode endpoint receives the KV, it does not prefill
            tokens = (load.uncached(ep.id) if load is not None
                      else prompt_tokens(request, request.state.get(PREFIX_MATCH)))
            backlog = self._backlog.setdefault(ep.id, _Backlog(at=now))
            backlog.tokens = self._tokens(ep, now) + tokens
            backlog.at = now

    def _tokens(self, ep: Endpoint, now: float) -> float:
        backlog = self._backlog.get(ep.id)
        if backlog is None or not backlog.tokens:
            return 0.0
        at = ep.metrics_at
        if at is not None and at > backlog.at and not (ep.metrics.waiting or ep.metrics.running):
            backlog.tokens = 0.0  # scraped idle after the last charge: all of it is done
            return 0.0
        rate = self.rates.of(ep)
        left = backlog.tokens - (now - backlog.at) * rate
        if left <= 0:
            backlog.tokens = 0.0
            return 0.0
        backlog.tokens, backlog.at = left, now
        return left

    def _requests(self, ep: Endpoint, now: float) -> int:
        sent = self._sent.get(ep.id)
        extra = 0
        if sent:
            since = now - self.params.max_request_age_s
            if ep.metrics_at is not None:
                since = max(since, ep.metrics_at)
            while sent and sent[0] <= since:
                sent.popleft()
            extra = len(sent)
        return ep.metrics.waiting + ep.metrics.running + extra

    def _prune(self, pool: PoolSnapshot) -> None:
        live = pool.ids()
        for table in (self._backlog, self._sent):
            for ep_id in [k for k in table if k not in live]:
                del table[ep_id]
        self._generation = pool.generation
