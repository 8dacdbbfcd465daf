"""A request's prompt length in tokens, as the load plugins estimate it (shared helper)."""

from __future__ import annotations

from llmd.epp.plugins.keys import PrefixMatch
from llmd.epp.request import InferenceRequest

__all__ = ["CHARS_PER_TOKEN", "prompt_tokens"]

CHARS_PER_TOKEN = 4
"""llm-d's AverageCharactersPerToken (its `estimate` tokenizer backend)."""


def prompt_tokens(request: InferenceRequest, match: PrefixMatch | None) -> int:
    """The producer's count when it tokenized the prompt (a precise index), else UTF-8 bytes /
    4 of the text the prefix index hashes."""
    if match is not None and match.prompt_tokens is not None:
        return match.prompt_tokens
    return len(request.prompt.encode()) // CHARS_PER_TOKEN
