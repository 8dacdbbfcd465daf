"""`passthrough-parser`: route any body without reading it (llm-d's model-agnostic parser).

The request the scheduler sees has no model, prompt or `stream`: prompt-based scorers
(`prefix-cache-scorer`) have nothing to hash and score every endpoint alike, while load-based
scorers, filters and headers (objective, session token) work as usual. The body goes to the
chosen endpoint unchanged, which answers any error in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp._openai import headers_only_request
from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["PassthroughParser"]


class PassthroughParser:
    type: ClassVar[str] = "passthrough-parser"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def parse(
        self, request_id: str, path: str, headers: Mapping[str, str], body: bytes,
        objectives: Mapping[str, int],
    ) -> InferenceRequest:
        return headers_only_request(request_id, path, headers, objectives)
