"""Hostile input for the simulator tests (issue 12): a corpus of request bodies and a raw-socket
exchange, shared by the in-process tests and the real-process one."""

from __future__ import annotations

import socket

import pytest

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
SUR = rb"\ud800"  # the JSON text of a lone UTF-16 surrogate


def chat_body(extra: bytes = b"", content: bytes = b'"hi"', role: bytes = b'"user"') -> bytes:
    return (b'{"model": "llmd-sim", "max_tokens": 2, "messages": [{"role": ' + role
            + b', "content": ' + content + b"}]" + extra + b"}")


def cmpl_body(extra: bytes = b"", prompt: bytes = b'"hi"') -> bytes:
    return b'{"model": "llmd-sim", "max_tokens": 2, "prompt": ' + prompt + extra + b"}"


def nest(levels: int, inner: bytes = b"1") -> bytes:
    return b"[" * levels + inner + b"]" * levels


# (path, body, status, param or a piece of the message); every 400 is a BadRequestError.
BODIES = [
    pytest.param(CHAT, chat_body(content=b'"a' + SUR + b'b"'), 400, "messages[0].content",
                 id="surrogate-content"),
    pytest.param(CHAT, chat_body(content=b'[{"type": "text", "text": "' + SUR + b'"}]'), 400,
                 "messages[0].content[0].text", id="surrogate-content-part"),
    pytest.param(CHAT, chat_body(role=b'"' + SUR + b'"'), 400, "messages[0].role",
                 id="surrogate-role"),
    pytest.param(CHAT, chat_body(b', "stream": true', content=b'"' + SUR + b'"'), 400,
                 "messages[0].content", id="surrogate-content-streaming"),
    pytest.param(CHAT, chat_body(b', "cache_salt": "' + SUR + b'"'), 400, "cache_salt",
                 id="surrogate-chat-cache-salt"),
    pytest.param(CHAT, chat_body(b', "stop": "' + SUR + b'"'), 400, "stop",
                 id="surrogate-chat-stop-vllm-500s"),
    pytest.param(CHAT, b'{"model": "' + SUR + b'", "messages": [{"role": "user", '
                 b'"content": "hi"}]}', 400, "model", id="surrogate-chat-model"),
    pytest.param(CMPL, cmpl_body(prompt=b'"x' + SUR + b'"'), 400, "prompt", id="surrogate-prompt"),
    pytest.param(CMPL, cmpl_body(prompt=b'["ok", "' + SUR + b'"]'), 400, "prompt[1]",
                 id="surrogate-prompt-batch"),
    pytest.param(CMPL, b'{"model": "' + SUR + b'", "prompt": "hi"}', 400, "model",
                 id="surrogate-model"),
    pytest.param(CMPL, cmpl_body(b', "cache_salt": "' + SUR + b'"'), 400, "cache_salt",
                 id="surrogate-cache-salt"),
    pytest.param(CMPL, cmpl_body(b', "stop": ["\\n", "' + SUR + b'"]'), 400, "stop[1]",
                 id="surrogate-stop-list"),
    pytest.param(CMPL, cmpl_body(b', "user": "' + SUR + b'"'), 400, "user",
                 id="surrogate-ignored-field-vllm-200s"),
    pytest.param(CMPL, cmpl_body(b', "x": {"y": [1, "\\udfff"]}'), 400, "x.y[1]",
                 id="surrogate-low-nested-unknown-field"),
    pytest.param(CMPL, cmpl_body(b', "' + SUR + b'": 1'), 400, "\\ud800", id="surrogate-key"),
    pytest.param(CMPL, cmpl_body(b', "user": "\\ude00\\ud83d"'), 400, "user",
                 id="surrogate-pair-reversed"),
    pytest.param(CMPL, cmpl_body(prompt=b'"\xed\xa0\x80"'), 400, "prompt",
                 id="surrogate-as-raw-bytes"),
    pytest.param(CMPL, cmpl_body(b', "kv_transfer_params": {"remote_host": "' + SUR + b'"}'), 400,
                 "kv_transfer_params.remote_host", id="surrogate-pd-field"),
    pytest.param(CMPL, cmpl_body(prompt=b'"caf\xe9"'), 400, "not valid UTF-8", id="latin-1-body"),
    pytest.param(CMPL, cmpl_body(prompt=b'"\xff\xfe"'), 400, "not valid UTF-8", id="utf8-bad-byte"),
    pytest.param(CHAT, chat_body(content=b'"\xc3("'), 400, "not valid UTF-8",
                 id="utf8-bad-continuation"),
    pytest.param(CMPL, cmpl_body(prompt=b'"\xc0\xaf"'), 400, "not valid UTF-8", id="utf8-overlong"),
    pytest.param(CMPL, cmpl_body(prompt=b'"\xe2\x82"'), 400, "not valid UTF-8",
                 id="utf8-truncated"),
    pytest.param(CMPL, cmpl_body(b', "x": ' + nest(1000)), 400, "512 levels", id="nested-1000"),
    pytest.param(CMPL, cmpl_body(b', "x": ' + nest(100_000)), 400, "512 levels",
                 id="nested-100000"),
    pytest.param(CHAT, chat_body(b', "x": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000), 400,
                 "512 levels", id="nested-objects-1000"),
    pytest.param(CMPL, nest(5000, b"{}"), 400, "512 levels", id="nested-array-body"),
    pytest.param(CMPL, b"hello there", 400, "not valid JSON", id="not-json"),
    pytest.param(CMPL, b'{"prompt": "hi"', 400, "not valid JSON", id="truncated-json"),
    pytest.param(CMPL, b"", 400, "not valid JSON", id="empty-body"),
    pytest.param(CMPL, b'{"prompt": "hi", "max_tokens": 1' + b"0" * 5000 + b"}", 400,
                 "not valid JSON", id="int-of-5000-digits"),
    pytest.param(CMPL, b'[{"prompt": "hi"}]', 400, "JSON object", id="array-body"),
    pytest.param(CHAT, b'"hi"', 400, "JSON object", id="string-body"),
    pytest.param(CHAT, b"null", 400, "JSON object", id="null-body"),
    pytest.param(CMPL, cmpl_body(prompt=b"NaN"), 400, "prompt", id="nan-prompt"),
    pytest.param(CMPL, cmpl_body(b', "temperature": NaN'), 400, "temperature",
                 id="nan-temperature"),
    pytest.param(CMPL, b'{"prompt": "hi", "max_tokens": Infinity}', 400, "max_tokens",
                 id="infinite-max-tokens"),
    pytest.param(CMPL, cmpl_body(b', "user": "\\ud83d\\ude00", "stop": ["\\ud83d\\ude00"]'), 200,
                 None, id="surrogate-pair-is-fine"),
    pytest.param(CMPL, cmpl_body(prompt=b'"a\\u0000b"'), 200, None, id="nul-char-is-fine"),
    pytest.param(CMPL, b"\xef\xbb\xbf" + cmpl_body(), 200, None, id="utf8-bom-is-fine"),
    pytest.param(CMPL, cmpl_body(b', "x": ' + nest(100)), 200, None, id="nested-100-is-fine"),
    pytest.param(CMPL, cmpl_body(prompt=b'"\\\\ud800"'), 200, None,
                 id="escaped-backslash-is-not-a-surrogate"),
]


def exchange(host: str, port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes. A reset after the answer keeps the answer."""
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except ConnectionError:
            pass  # the server answered and closed before taking everything
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
    return got


def raw_request(method: str, path: str, body: bytes = b"",
                headers: tuple[str, ...] = ()) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: sim", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
