"""`active-request-scorer`: prefer endpoints with fewer requests in flight (from
`INFLIGHT_LOAD`: scraped waiting + running plus this EPP's requests sent since the scrape).

An endpoint with at most `idleThreshold` requests scores 1; a busier one
(max − count) / max × `maxBusyScore`, max being the busiest candidate's count (llm-d's
formula; the decode-bound choice, as in llm-d's P/D guide's decode profile).
`requestTimeout` is accepted and ignored, as in llm-d since the producer tracks requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel, PositiveDuration
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins.keys import INFLIGHT_LOAD
from llmd.epp.request import InferenceRequest

__all__ = ["ActiveRequestScorer"]


class ActiveRequestScorer:
    type: ClassVar[str] = "active-request-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (INFLIGHT_LOAD,)

    class Params(LlmdModel):
        idle_threshold: int = Field(default=0, ge=0, description="requests that still score 1")
        max_busy_score: float = Field(default=1.0, ge=0, le=1, description="score of a busy "
                                      "endpoint with no requests above the threshold")
        request_timeout: PositiveDuration | None = Field(
            default=None, description="deprecated in llm-d; ignored")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        load = request.state.get(INFLIGHT_LOAD)
        if load is None:
            return {}
        counts = {ep.id: load.of(ep.id).requests for ep in pool.candidates}
        busiest = max(counts.values(), default=0)
        idle, top = self.params.idle_threshold, self.params.max_busy_score
        return {ep_id: 1.0 if n <= idle else (busiest - n) / busiest * top
                for ep_id, n in counts.items()}
