"""`load-aware-scorer`: 0.5 with an empty queue, falling linearly to 0 at `threshold` waiting
(scraped, plus the requests sent since that scrape: `PoolSnapshot.inflight`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.request import InferenceRequest

__all__ = ["LoadAwareScorer"]


class LoadAwareScorer:
    type: ClassVar[str] = "load-aware-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        threshold: int = Field(default=128, gt=0, description="waiting requests that score 0")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        cap, inflight = self.params.threshold, pool.inflight
        return {
            ep.id: 0.5 * (1.0 - min(ep.metrics.waiting + inflight.get(ep.id, 0), cap) / cap)
            for ep in pool.candidates
        }
