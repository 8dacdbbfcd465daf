"""`prefix-cache-scorer`: matched / total prefix blocks per endpoint.

The blocks and matches come from `approx-prefix-cache-producer` (created with its defaults when
the config does not declare one); parameters belong on the producer, as in llm-d.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.producer.approx_prefix import ApproxPrefixCacheProducer, PrefixMatch
from llmd.epp.request import InferenceRequest

__all__ = ["PrefixCacheScorer"]


class PrefixCacheScorer:
    type: ClassVar[str] = "prefix-cache-scorer"
    requires: ClassVar[tuple[str, ...]] = (ApproxPrefixCacheProducer.type,)
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        match = request.data.get(ApproxPrefixCacheProducer.type)
        if not isinstance(match, PrefixMatch):
            return {}
        return {ep.id: match.ratio(ep.id) for ep in pool.candidates}
