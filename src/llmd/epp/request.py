"""The request as the scheduler sees it, parsed once from the OpenAI body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InferenceRequest"]


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One request to schedule.

    `prompt` is what prefix matching hashes, as llm-d's approximate scheme does: the prompt text
    for completions, the compact JSON of `messages` for chat. `headers` are lower-cased.
    `data` holds what data producers computed for this request (keyed by producer type); it is
    filled before filtering and only read by filters, scorers and pickers.
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
    data: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)
