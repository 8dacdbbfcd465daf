"""`token-load-scorer`: 1 − min(1, tokens / `queueThresholdTokens`), where tokens are the
endpoint's in-flight uncached prompt tokens plus this request's tokens it has not cached
(from `INFLIGHT_LOAD`, filled by `inflight-load-producer`, added with its defaults when the
config declares none).

llmd extension: with `peakPrefillThroughput` set, an endpoint's tokens are weighed by how fast
it prefills them: tokens × reference / its throughput, the reference being the value's
`default` (15,928 unless given). `queueThresholdTokens` then counts tokens at the reference
rate, so in a mixed pool an SGLang endpoint that prefills twice as fast looks half as loaded
by the same tokens. Unset: every token counts the same (llm-d).

`nonTextTokenWeight` (llm-d's multimodal token weight) is accepted; llmd routes text only, so
it has no effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins._throughput import PrefillThroughput
from llmd.epp.plugins.keys import INFLIGHT_LOAD
from llmd.epp.request import InferenceRequest

__all__ = ["TokenLoadScorer"]


class TokenLoadScorer:
    type: ClassVar[str] = "token-load-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (INFLIGHT_LOAD,)

    class Params(LlmdModel):
        queue_threshold_tokens: int = Field(
            default=4_194_304, gt=0, description="in-flight tokens that score 0")
        non_text_token_weight: float = Field(
            default=1.0, gt=0, description="llm-d's multimodal token weight (no effect: "
            "llmd routes text)")
        peak_prefill_throughput: PrefillThroughput | None = Field(
            default=None, description="llmd: weigh each endpoint's tokens by its prefill "
            "throughput (a number, or per engine / endpoint); unset: tokens count the same")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        load = request.state.get(INFLIGHT_LOAD)
        if load is None:
            return {}
        cap = self.params.queue_threshold_tokens
        rates = self.params.peak_prefill_throughput
        out = {}
        for ep in pool.candidates:
            tokens = load.of(ep.id).tokens + load.uncached(ep.id)
            if rates is not None:
                tokens *= rates.default / rates.of(ep)
            out[ep.id] = 1.0 - min(tokens / cap, 1.0)
        return out
