"""`decode-engine-filter`: prefill endpoints of the decode endpoint's engine (llmd only).

A pool that mixes engines (`llmd up --pd` serves vLLM and SGLang side by side) must never pair
a vLLM decode endpoint with an SGLang prefill endpoint: their P/D protocols differ. The
decode-first profile handler puts the decode profile's pick in the request's cycle state
(`DECODE_PICK`) before it runs the prefill profile; this filter keeps the candidates whose
`llm-d.ai/engine-type` (unlabelled: vllm, as llm-d assumes) equals that pick's. Without a
recorded pick (the filter used outside a prefill profile) every candidate passes. llm-d has no
such filter because its pools hold one engine each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.keys import DECODE_PICK
from llmd.epp.request import InferenceRequest

__all__ = ["DecodeEngineFilter"]


class DecodeEngineFilter:
    type: ClassVar[str] = "decode-engine-filter"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (DECODE_PICK,)
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        decode = request.state.get(DECODE_PICK)
        if decode is None:
            return pool.candidates
        return [ep for ep in pool.candidates if ep.spec.engine == decode.spec.engine]
