"""Read a P/D request's JSON body once, strictly: the sidecar re-encodes it for both legs, so
anything it cannot re-encode is the client's 400 here, never a 500 later.

Rules: the body is UTF-8 (RFC 8259), a JSON object, at most `MAX_DEPTH` containers deep, and
no string (key or value) holds a lone UTF-16 surrogate (`"\\ud800"` is valid JSON but no
Unicode text: vLLM answers such a prompt 400 too). Decode-only requests (no
`x-prefiller-host-port`) are not read: they reach the engine byte for byte.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmd.errors import BadRequestError

__all__ = ["MAX_DEPTH", "parse_body"]

MAX_DEPTH = 128
"""Nesting bound: far above any OpenAI body (tool schemas included), far below the point where
Python's recursive JSON codec fails."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a `\uD800`..`\uDFFF` escape


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; `BadRequestError` (naming the field, when one is at fault) else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise BadRequestError(f"request body is nested more than {MAX_DEPTH} levels deep") \
            from None
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object")
    # Both walks are in Python: run them only when the text says they may find something.
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        _check(body)
    return body


def _check(body: dict[str, Any]) -> None:
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequestError(f"request body is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                _text(key, where)
                stack.append((value, where, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, str):
            _text(node, path)


def _text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = where.encode("ascii", "backslashreplace").decode()
        raise BadRequestError(
            f"{shown}: character {exc.start} is a lone UTF-16 surrogate "
            f"({value[exc.start]!a}), which is not valid Unicode text",
            param=shown) from None
