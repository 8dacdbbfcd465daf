"""`lora-affinity-scorer`: prefer endpoints that already run the requested LoRA adapter.

1.0 adapter running, 0.8 a free adapter slot, 0.6 adapter waiting, else 0. The request's
`model` names the adapter. Endpoints that report no LoRA state (SGLang) score 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["LoraAffinityScorer"]


class LoraAffinityScorer:
    type: ClassVar[str] = "lora-affinity-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        return {ep.id: _affinity(ep, request.model) for ep in pool.candidates}


def _affinity(ep: Endpoint, adapter: str) -> float:
    lora = ep.metrics.lora
    if lora is None:
        return 0.0
    if adapter in lora.running:
        return 1.0
    if len(lora.running) < lora.max_lora:
        return 0.8
    if adapter in lora.waiting:
        return 0.6
    return 0.0
