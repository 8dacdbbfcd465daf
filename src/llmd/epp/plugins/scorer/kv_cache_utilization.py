"""`kv-cache-utilization-scorer`: 1 − KV-cache usage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["KvCacheUtilizationScorer"]


class KvCacheUtilizationScorer:
    type: ClassVar[str] = "kv-cache-utilization-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        return {ep.id: 1.0 - ep.metrics.kv_usage for ep in pool.candidates}
