"""`openai-parser` (the default): completions, chat, embeddings and responses bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.epp._openai import parse_request
from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["OpenAIParser"]


class OpenAIParser:
    type: ClassVar[str] = "openai-parser"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def parse(
        self, request_id: str, path: str, headers: Mapping[str, str], body: bytes,
        objectives: Mapping[str, int],
    ) -> InferenceRequest:
        return parse_request(request_id, path, headers, body, objectives)
