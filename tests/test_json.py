"""`decode_json` on plain bytes: what it lets through and how it names what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from llmd._json import MAX_JSON_DEPTH, decode_json
from llmd.errors import BadRequestError


@pytest.mark.parametrize(("raw", "value"), [
    pytest.param(b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}, id="surrogate-pair"),
    pytest.param(b'{"a": "\\\\ud800"}', {"a": "\\ud800"}, id="escaped-backslash"),
    pytest.param('{"a": "é€"}'.encode(), {"a": "é€"}, id="utf8"),
    pytest.param(b"\xef\xbb\xbf[1]", [1], id="bom"),
    pytest.param(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None, id="at-depth-limit"),
    pytest.param(b'"' + b"[" * 2000 + b'"', "[" * 2000, id="brackets-in-a-string"),
    pytest.param(b'{"a": "' + b"{" * 600 + b'", "b": [1]}', {"a": "{" * 600, "b": [1]},
                 id="brackets-in-a-string-beside-a-list"),
])
def test_accepted(raw: bytes, value: Any) -> None:
    got = decode_json(raw)
    if value is not None:
        assert got == value


@pytest.mark.parametrize(("raw", "message", "param"), [
    pytest.param(b'{"m": [{"c": "x\\ud800"}]}', "'m[0].c' is not valid Unicode: it contains a "
                 "lone UTF-16 surrogate (U+D800)", "m[0].c", id="nested-value"),
    pytest.param(b'{"a": "\\uDFFF"}', "(U+DFFF)", "a", id="upper-case-low-surrogate"),
    pytest.param(b'{"a": "\xed\xb0\x80"}', "(U+DC00)", "a", id="raw-bytes"),
    pytest.param(b'{"ok": 1, "\\ud800x": 2}', "'\\ud800x'", "\\ud800x", id="key"),
    pytest.param(b'{"a": ["\\ud800"], "b": "\\ud801"}', "(U+D800)", "a[0]",
                 id="first-in-document-order"),
    pytest.param(b'"\\ud800"', "'<root>'", "<root>", id="root-string"),
    pytest.param(b'{"a": "\xff"}', "not valid UTF-8: byte 0xff at offset 7", None,
                 id="bad-utf8"),
    pytest.param(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
                 "more than 512 levels deep", None, id="one-past-the-limit"),
    pytest.param(b"[" * 50_000, "more than 512 levels deep", None,
                 id="parser-recursion-limit"),
    pytest.param(b"{", "not valid JSON", None, id="truncated"),
])
def test_refused(raw: bytes, message: str, param: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        decode_json(raw)
    assert message in info.value.message
    assert info.value.param == param
    info.value.message.encode()  # the answer itself always encodes
