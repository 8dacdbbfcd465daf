"""The request as the scheduler sees it, parsed once from the OpenAI body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmd.epp.cycle import CycleState

__all__ = ["InferenceRequest"]


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One request to schedule.

    `prompt` is what prefix matching hashes, as llm-d's approximate scheme does: the prompt text
    for completions, the compact JSON of `messages` for chat. `body` is the parsed JSON body
    (empty when the parser does not read it): what a precise index tokenizes (`messages`, a
    token-id `prompt`). `headers` are lower-cased.
    `state` holds the typed data plugins exchange for this request (`llmd.epp.cycle`): data
    producers fill it before filtering, the P/D handler adds its decode pick; filters, scorers,
    pickers, deciders and PreRequest hooks read it.
    """

    request_id: str
    model: str = ""
    prompt: str = ""
    stream: bool = False
    cache_salt: str = ""
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)
    objective: str | None = None
    priority: int = 0
    body: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    state: CycleState = field(default_factory=CycleState, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)
