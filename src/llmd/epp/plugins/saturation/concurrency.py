"""`concurrency-detector`: pool saturation from requests at the endpoints, against a fixed
capacity per endpoint.

Per endpoint the load is the requests its engine last reported (waiting + running) plus those
sent to it since that scrape (`PoolSnapshot.inflight`); pool saturation is the aggregate load
over the aggregate capacity (`maxConcurrency` × endpoints), as llm-d's detector computes it. As a
filter it drops endpoints whose load reached `maxConcurrency × (1 + headroom)`, failing open
when that would drop them all.

llm-d counts in-flight requests itself, from each request's dispatch to the end of its response
(PreRequest and ResponseBody hooks). llmd's gateway closes the ext_proc stream once a request is
routed, so the EPP never sees the response end; the engine's own counts, scraped every
refresh interval, stand in for the requests still running. Only `concurrencyMode: requests`
is implemented: llmd does not estimate tokens per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.request import InferenceRequest

__all__ = ["ConcurrencyDetector"]


class ConcurrencyDetector:
    type: ClassVar[str] = "concurrency-detector"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        concurrency_mode: Literal["requests"] = Field(
            default="requests", description="llm-d also has tokens and hybrid; llmd counts "
            "requests only")
        max_concurrency: int = Field(default=100, gt=0, description="requests one endpoint "
                                     "serves at full capacity")
        headroom: float = Field(default=0.0, ge=0, description="burst allowed above "
                                "maxConcurrency per endpoint when filtering (0.2: 20%)")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def _load(self, ep: Endpoint, pool: PoolSnapshot) -> int:
        m = ep.metrics
        return m.waiting + m.running + pool.inflight.get(ep.id, 0)

    def saturation(self, pool: PoolSnapshot) -> float:
        eps = pool.candidates
        if not eps:
            return 1.0
        load = sum(self._load(ep, pool) for ep in eps)
        return load / (len(eps) * self.params.max_concurrency)

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        limit = self.params.max_concurrency * (1.0 + self.params.headroom)
        kept = [ep for ep in pool.candidates if self._load(ep, pool) < limit]
        return kept or pool.candidates
