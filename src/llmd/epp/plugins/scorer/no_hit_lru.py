"""`no-hit-lru-scorer`: spread cold requests (no prefix hit anywhere) to least-recently-used
endpoints, so cache-less traffic does not pile onto one endpoint.

Cold request: endpoints never given a cold request score 1.0; the others score by recency, the
least recent highest and the most recent 0. Warm request: 0.5 everywhere (neutral). After the
decision, a cold request's endpoint becomes the most recent (LRU of `lruSize` endpoints).

It reads `PREFIX_MATCH`; `prefixPluginName`/`prefixPluginType` may name where it comes from
(llm-d's parameters, see `_prefix_refs`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import ClassVar

from pydantic import Field

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins._prefix_refs import PrefixPluginParams
from llmd.epp.plugins.base import ProducerRef, SchedulingResult
from llmd.epp.plugins.keys import PREFIX_MATCH
from llmd.epp.request import InferenceRequest

__all__ = ["NoHitLruScorer"]


class NoHitLruScorer:
    type: ClassVar[str] = "no-hit-lru-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH,)

    class Params(PrefixPluginParams):
        lru_size: int = Field(default=1024, gt=0, description="endpoints remembered")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        self._recent: OrderedDict[EndpointId, None] = OrderedDict()  # least recent first

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        if not _cold(request):
            return {ep.id: 0.5 for ep in pool.candidates}
        live = pool.ids()
        used = [k for k in self._recent if k in live]
        n = len(used)
        rank = {k: (n - 1 - i) / n for i, k in enumerate(used)}
        return {ep.id: rank.get(ep.id, 1.0) for ep in pool.candidates}

    def pre_request(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        if not _cold(request):
            return
        ep_id = result.destination.id
        self._recent[ep_id] = None
        self._recent.move_to_end(ep_id)
        while len(self._recent) > self.params.lru_size:
            self._recent.popitem(last=False)


def _cold(request: InferenceRequest) -> bool:
    match = request.state.get(PREFIX_MATCH)
    return match is None or not match.any_hit
