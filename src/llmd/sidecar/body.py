"""Read a P/D request's JSON body once, strictly: the sidecar re-encodes it for both legs, so
anything it cannot re-encode is the client's 400 here, never a 500 later (`llmd._json`: UTF-8,
nesting bounded, no lone UTF-16 surrogate in any string). Decode-only requests (no
`x-prefiller-host-port`) are not read: they reach the engine byte for byte.
"""

from __future__ import annotations

from typing import Any

from llmd._json import decode_json
from llmd.errors import BadRequestError

__all__ = ["parse_body"]


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; `BadRequestError` (naming the field, when one is at fault) else."""
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object")
    return body
