"""`running-requests-size-scorer`: prefer endpoints running fewer requests (min-max normalised),
counting the requests sent since the last scrape (`PoolSnapshot.inflight`) as running."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.scorer._minmax import inverse_minmax
from llmd.epp.request import InferenceRequest

__all__ = ["RunningRequestsSizeScorer"]


class RunningRequestsSizeScorer:
    type: ClassVar[str] = "running-requests-size-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        inflight = pool.inflight
        return inverse_minmax(pool, lambda ep: ep.metrics.running + inflight.get(ep.id, 0))
