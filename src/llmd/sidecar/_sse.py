"""Rewrite `usage.prompt_tokens_details.cached_tokens` in JSON bodies and SSE streams."""

from __future__ import annotations

import json
from typing import Any

_USAGE = b'"usage"'


def set_cached_tokens(payload: dict[str, Any], cached: int) -> bool:
    """Put `cached` into `payload.usage.prompt_tokens_details`; False if there is no usage."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return False
    details = usage.get("prompt_tokens_details")
    usage["prompt_tokens_details"] = {**(details if isinstance(details, dict) else {}),
                                      "cached_tokens": cached}
    return True


def rewrite_json_body(raw: bytes, cached: int) -> bytes:
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(payload, dict) and set_cached_tokens(payload, cached):
        return json.dumps(payload).encode()
    return raw


class SseUsageRewriter:
    """Feed upstream chunks, get bytes to send; events that carry a usage object are rewritten.

    Events without usage pass through untouched; only the tail of an incomplete event is held
    back until its terminating blank line arrives.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes, cached: int | None) -> bytes:
        data = self._pending + chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending = data
            return b""
        complete, self._pending = data[: cut + 2], data[cut + 2 :]
        if cached is None or _USAGE not in complete:
            return complete
        return b"".join(_rewrite_event(ev, cached) for ev in complete.split(b"\n\n")[:-1])

    def needs_usage(self, chunk: bytes) -> bool:
        """True when this chunk (with what is held back) may carry a usage object."""
        return _USAGE in self._pending + chunk

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest


def _rewrite_event(event: bytes, cached: int) -> bytes:
    if _USAGE in event and event.startswith(b"data: {"):
        try:
            payload = json.loads(event[6:])
        except ValueError:
            return event + b"\n\n"
        if isinstance(payload, dict) and set_cached_tokens(payload, cached):
            return b"data: " + json.dumps(payload).encode() + b"\n\n"
    return event + b"\n\n"


def sse_error_event(status: int, message: str) -> bytes:
    """An in-stream error as vLLM sends it once headers are out, followed by [DONE]."""
    body = {"error": {"message": message, "type": "UpstreamError", "param": None, "code": status}}
    return b"data: " + json.dumps(body).encode() + b"\n\ndata: [DONE]\n\n"


def cached_tokens_of(payload: Any) -> int:
    """The prefill response's cached tokens (null or missing counts as 0, as llm-d does)."""
    try:
        value = payload["usage"]["prompt_tokens_details"]["cached_tokens"]
    except (KeyError, TypeError):
        return 0
    return int(value) if isinstance(value, int | float) else 0
