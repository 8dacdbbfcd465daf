"""`utilization-detector`: pool saturation from queue depth and KV usage.

Per endpoint: max((waiting + in flight) / queueDepthThreshold, kv_usage / kvCacheUtilThreshold),
or 1.0 when its metrics are older than `metricsStalenessThreshold` (stale metrics are not
trusted); in flight: requests sent since the last scrape (`PoolSnapshot.inflight`, with
`dataLayer.crossReplica`). The pool's saturation is the mean over endpoints; >= 1.0 sheds
requests whose priority is < 0. As a filter it drops saturated endpoints, failing open when
that would drop them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel, PositiveDuration
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.request import InferenceRequest

__all__ = ["UtilizationDetector"]


class UtilizationDetector:
    type: ClassVar[str] = "utilization-detector"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        queue_depth_threshold: int = Field(default=5, gt=0)
        kv_cache_util_threshold: float = Field(default=0.8, gt=0, le=1)
        # llm-d's default is 200ms; llmd uses the 2 s so a busy 2-core host does not
        # mark a healthy pool saturated between two 50 ms scrapes.
        metrics_staleness_threshold: PositiveDuration = Field(
            default=2.0, description="seconds, or a duration string like llm-d's `200ms`"
        )
        headroom: float = Field(default=0.0, ge=0)


    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def endpoint_saturation(self, ep: Endpoint, now: float, inflight: int = 0) -> float:
        """`inflight`: requests sent since its last scrape, counted as waiting."""
        p = self.params
        if ep.age_s(now) > p.metrics_staleness_threshold:
            return 1.0
        m = ep.metrics
        return max((m.waiting + inflight) / p.queue_depth_threshold,
                   m.kv_usage / p.kv_cache_util_threshold)

    def saturation(self, pool: PoolSnapshot) -> float:
        eps = pool.candidates
        if not eps:
            return 1.0
        inflight = pool.inflight
        total = sum(self.endpoint_saturation(ep, pool.now, inflight.get(ep.id, 0)) for ep in eps)
        return total / len(eps) / (1.0 + self.params.headroom)

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        limit = 1.0 + self.params.headroom
        inflight = pool.inflight
        kept = [ep for ep in pool.candidates
                if self.endpoint_saturation(ep, pool.now, inflight.get(ep.id, 0)) < limit]
        return kept or pool.candidates
