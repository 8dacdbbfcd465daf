"""`prefix-cache-scorer`: matched / total prefix blocks per endpoint.

It reads `PREFIX_MATCH`, which a prefix index fills: `approx-prefix-cache-producer` (created
with its defaults when the config declares no producer of it) or any other producer of the key;
parameters belong on the producer, as in llm-d. `prefixMatchInfoProducerName` (llmd only) may
name that producer; the loader checks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins._prefix_refs import PrefixProducerParams
from llmd.epp.plugins.base import ProducerRef
from llmd.epp.plugins.keys import PREFIX_MATCH
from llmd.epp.request import InferenceRequest

__all__ = ["PrefixCacheScorer"]


class PrefixCacheScorer:
    type: ClassVar[str] = "prefix-cache-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH,)
    Params = PrefixProducerParams

    def __init__(self, name: str, params: PrefixProducerParams) -> None:
        self.name, self.params = name, params

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        match = request.state.get(PREFIX_MATCH)
        if match is None:
            return {}
        return {ep.id: match.ratio(ep.id) for ep in pool.candidates}
