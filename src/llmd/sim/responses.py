"""Response bodies and SSE chunks in each API's shape (OpenAI completions/chat, SGLang native).

A `Format` turns a running `Sequence` and its `TokenEvent`s into the bytes the client reads, so
the handler's loop is the same for every API.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

from llmd.sim.engine import Sequence, TokenEvent

__all__ = ["ChatFormat", "CompletionFormat", "Format", "GenerateFormat", "sse", "usage"]

DONE = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def usage(seq: Sequence) -> dict[str, Any]:
    done = seq.completion_tokens
    return {
        "prompt_tokens": seq.prompt_tokens,
        "total_tokens": seq.prompt_tokens + done,
        "completion_tokens": done,
        "prompt_tokens_details": {"cached_tokens": seq.cached_tokens},
    }


class Format(Protocol):
    def head(self, seq: Sequence) -> bytes:
        """Bytes sent before the first token's chunk (may be empty)."""
        ...

    def chunk(self, seq: Sequence, events: list[TokenEvent]) -> bytes:
        """One decode step's SSE bytes (may be empty when no text is ready)."""
        ...

    def tail(self, seq: Sequence) -> bytes:
        """Bytes after the last token: usage chunk if asked, then `data: [DONE]`."""
        ...

    def full(self, seq: Sequence) -> Any:
        """The non-streaming JSON body."""
        ...


class _OpenAI:
    object_full: str
    object_chunk: str
    id_prefix: str

    def __init__(self, model: str, include_usage: bool = False,
                 continuous_usage: bool = False) -> None:
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.continuous_usage = continuous_usage and include_usage

    def _envelope(self, choices: list[dict[str, Any]], obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices}

    def _piece(self, ev: TokenEvent) -> dict[str, Any]:
        raise NotImplementedError

    def head(self, seq: Sequence) -> bytes:
        return b""

    def chunk(self, seq: Sequence, events: list[TokenEvent]) -> bytes:
        choices = [self._piece(ev) for ev in events if ev.text or ev.finish_reason]
        if not choices:
            return b""
        body = self._envelope(choices, self.object_chunk)
        if self.continuous_usage:
            body["usage"] = usage(seq)
        return sse(body)

    def tail(self, seq: Sequence) -> bytes:
        if not self.include_usage:
            return DONE
        body = self._envelope([], self.object_chunk)
        body["usage"] = usage(seq)
        return sse(body) + DONE


class CompletionFormat(_OpenAI):
    object_full = object_chunk = "text_completion"
    id_prefix = "cmpl"

    def _piece(self, ev: TokenEvent) -> dict[str, Any]:
        return {"index": ev.index, "text": ev.text, "logprobs": None,
                "finish_reason": ev.finish_reason, "stop_reason": None}

    def full(self, seq: Sequence) -> dict[str, Any]:
        choices = [{"index": c.index, "text": c.text, "logprobs": None,
                    "finish_reason": c.finish_reason, "stop_reason": None} for c in seq.choices]
        body = self._envelope(choices, self.object_full)
        body["usage"] = usage(seq)
        return body


class ChatFormat(_OpenAI):
    object_full = "chat.completion"
    object_chunk = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def head(self, seq: Sequence) -> bytes:
        # vLLM opens every choice's stream with an empty assistant delta.
        choices = [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None} for c in seq.choices]
        return sse(self._envelope(choices, self.object_chunk))

    def _piece(self, ev: TokenEvent) -> dict[str, Any]:
        return {"index": ev.index, "delta": {"content": ev.text}, "logprobs": None,
                "finish_reason": ev.finish_reason, "stop_reason": None}

    def full(self, seq: Sequence) -> dict[str, Any]:
        choices = [{"index": c.index,
                    "message": {"role": "assistant", "content": c.text, "tool_calls": []},
                    "logprobs": None, "finish_reason": c.finish_reason, "stop_reason": None}
                   for c in seq.choices]
        body = self._envelope(choices, self.object_full)
        body["usage"] = usage(seq)
        return body


class GenerateFormat:
    """SGLang's native `/generate`: streamed chunks carry the whole text so far and meta_info."""

    def __init__(self, rid: str | None) -> None:
        self.rid = rid or uuid.uuid4().hex

    def _meta(self, seq: Sequence, index: int) -> dict[str, Any]:
        c = seq.choices[index]
        reason: dict[str, Any] | None = None
        if c.finish_reason == "length":
            reason = {"type": "length", "length": c.tokens}
        elif c.finish_reason == "stop":
            reason = {"type": "stop", "matched": None}
        return {"id": self.rid if seq.n == 1 else f"{self.rid}_{index}",
                "finish_reason": reason, "prompt_tokens": seq.prompt_tokens,
                "completion_tokens": c.tokens, "cached_tokens": seq.cached_tokens,
                "e2e_latency": round(seq.engine.clock() - seq.arrival_s, 6)}

    def _one(self, seq: Sequence, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"text": seq.choices[index].text[: seq.choices[index].emitted],
                "meta_info": self._meta(seq, index)}
        if seq.n > 1:
            body["index"] = index
        return body

    def head(self, seq: Sequence) -> bytes:
        return b""

    def chunk(self, seq: Sequence, events: list[TokenEvent]) -> bytes:
        return b"".join(sse(self._one(seq, ev.index)) for ev in events
                        if ev.text or ev.finish_reason)

    def tail(self, seq: Sequence) -> bytes:
        return DONE

    def full(self, seq: Sequence) -> Any:
        if seq.n == 1:
            return self._one(seq, 0)
        return [self._one(seq, i) for i in range(seq.n)]
