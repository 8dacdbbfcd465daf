"""Request bodies → JSON every later step can handle, or a 400 (`BadRequestError`) saying why.

Shared by every server that reads a client's JSON (the simulators, the EPP's OpenAI parser, the
P/D sidecar), so all of them refuse the same bodies with the same words.

CPython's `json` lets three kinds of hostile body through, or fails on them in a way that would
become a 500:

- bytes that are not UTF-8: a 400 naming the byte (vLLM, through FastAPI: 400 "There was an
  error parsing the body");
- containers nested deeper than `MAX_JSON_DEPTH` (the body's own object is level 1): the
  stdlib parser recurses once per level and raises RecursionError near Python's recursion
  limit, which depends on how deep the caller's stack already is (vLLM 0.32 accepted 968 levels
  and answered 400 above). A fixed limit well below it answers the same whatever the stack;
- a lone UTF-16 surrogate in any string or key (the JSON escape `"\\ud800"`, or the raw bytes
  ED A0 80, which `json.loads` decodes with `surrogatepass`): Python keeps it in a `str`, but
  no UTF-8 encoder (tokenizer, response writer) takes it. vLLM answers 400 for it in `prompt`,
  `content`, `role`, `model` and `cache_salt`, 500 in `stop`, and ignores it in fields it never
  reads (`user`, a message's `name`, unknown fields); the simulators answer 400 wherever it is,
  naming the field, so no field can turn it into a 500.

Both checks after parsing cost nothing for ordinary bodies: they run only when the raw bytes
could hold a problem (more brackets than the depth limit; an escape or bytes that can
encode a surrogate).
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmd.config import format_loc
from llmd.errors import BadRequestError

__all__ = ["MAX_JSON_DEPTH", "decode_json"]

MAX_JSON_DEPTH = 512
"""Deepest nesting of objects and arrays a body may have: far more than any real request
(tool and JSON schemas nest tens of levels), far below where the stdlib parser gives up."""

# Where a lone surrogate can come from: a \uD800-\uDFFF escape, or UTF-8-style bytes for one
# (ED A0..BF). A match only means "look closer": an escaped backslash followed by "ud800" or
# a valid surrogate pair match too, and the walk finds nothing lone in them.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def decode_json(raw: bytes) -> Any:
    """Parse `raw` (UTF-8 JSON); BadRequestError for anything later steps could not handle."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"request body is not valid UTF-8: byte 0x{raw[exc.start]:02x} "
                              f"at offset {exc.start} ({exc.reason})") from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # JSONDecodeError; an integer of more than 4,300 digits
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _deeper_than_limit(data):
        raise _too_deep()
    if _MAYBE_SURROGATE.search(raw):
        _check_unicode(data)
    return data


def _too_deep() -> BadRequestError:
    return BadRequestError(f"request body nests JSON objects and arrays more than "
                           f"{MAX_JSON_DEPTH} levels deep")


def _deeper_than_limit(data: Any) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _check_unicode(data: Any) -> None:
    """BadRequestError naming the first string or key (in document order) that holds a lone
    surrogate."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
        elif isinstance(node, dict):
            for key in node:
                _check_text(key, (*path, key))
            stack.extend((v, (*path, k)) for k, v in reversed(node.items())
                         if isinstance(v, str | dict | list))
        elif isinstance(node, list):
            stack.extend((node[i], (*path, i)) for i in range(len(node) - 1, -1, -1)
                         if isinstance(node[i], str | dict | list))


def _check_text(text: str, path: tuple[int | str, ...]) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        # The path may end in the offending key itself: escape it so the message encodes.
        where = format_loc([p if isinstance(p, int) else _printable(p) for p in path])
        raise BadRequestError(f"'{where}' is not valid Unicode: it contains a lone UTF-16 "
                              f"surrogate (U+{ord(text[exc.start]):04X})",
                              param=where) from None


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode()
