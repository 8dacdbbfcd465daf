"""Hostile input (issue 12): answered like the engines, as OpenAI JSON, never a 5xx or a
traceback. Raw sockets, so the bytes on the wire are exactly the ones under test."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest
from _simtools import StartSim

from llmd.engines import get_adapter
from llmd.sim import RunningSim
from llmd.sim._body import MAX_JSON_DEPTH
from llmd.sim._runner import MAX_HEADER_LINE_BYTES

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
SUR = rb"\ud800"  # the JSON text of a lone UTF-16 surrogate


def _chat(extra: bytes = b"", content: bytes = b'"hi"', role: bytes = b'"user"') -> bytes:
    return (b'{"model": "llmd-sim", "max_tokens": 2, "messages": [{"role": ' + role
            + b', "content": ' + content + b"}]" + extra + b"}")


def _cmpl(extra: bytes = b"", prompt: bytes = b'"hi"') -> bytes:
    return b'{"model": "llmd-sim", "max_tokens": 2, "prompt": ' + prompt + extra + b"}"


def _nest(levels: int, inner: bytes = b"1") -> bytes:
    return b"[" * levels + inner + b"]" * levels


# (path, body, status, param or a piece of the message); every 400 is a BadRequestError.
BODIES = [
    pytest.param(CHAT, _chat(content=b'"a' + SUR + b'b"'), 400, "messages[0].content",
                 id="surrogate-content"),
    pytest.param(CHAT, _chat(content=b'[{"type": "text", "text": "' + SUR + b'"}]'), 400,
                 "messages[0].content[0].text", id="surrogate-content-part"),
    pytest.param(CHAT, _chat(role=b'"' + SUR + b'"'), 400, "messages[0].role",
                 id="surrogate-role"),
    pytest.param(CHAT, _chat(b', "stream": true', content=b'"' + SUR + b'"'), 400,
                 "messages[0].content", id="surrogate-content-streaming"),
    pytest.param(CHAT, _chat(b', "cache_salt": "' + SUR + b'"'), 400, "cache_salt",
                 id="surrogate-chat-cache-salt"),
    pytest.param(CHAT, _chat(b', "stop": "' + SUR + b'"'), 400, "stop",
                 id="surrogate-chat-stop-vllm-500s"),
    pytest.param(CHAT, b'{"model": "' + SUR + b'", "messages": [{"role": "user", '
                 b'"content": "hi"}]}', 400, "model", id="surrogate-chat-model"),
    pytest.param(CMPL, _cmpl(prompt=b'"x' + SUR + b'"'), 400, "prompt", id="surrogate-prompt"),
    pytest.param(CMPL, _cmpl(prompt=b'["ok", "' + SUR + b'"]'), 400, "prompt[1]",
                 id="surrogate-prompt-batch"),
    pytest.param(CMPL, b'{"model": "' + SUR + b'", "prompt": "hi"}', 400, "model",
                 id="surrogate-model"),
    pytest.param(CMPL, _cmpl(b', "cache_salt": "' + SUR + b'"'), 400, "cache_salt",
                 id="surrogate-cache-salt"),
    pytest.param(CMPL, _cmpl(b', "stop": ["\\n", "' + SUR + b'"]'), 400, "stop[1]",
                 id="surrogate-stop-list"),
    pytest.param(CMPL, _cmpl(b', "user": "' + SUR + b'"'), 400, "user",
                 id="surrogate-ignored-field-vllm-200s"),
    pytest.param(CMPL, _cmpl(b', "x": {"y": [1, "\\udfff"]}'), 400, "x.y[1]",
                 id="surrogate-low-nested-unknown-field"),
    pytest.param(CMPL, _cmpl(b', "' + SUR + b'": 1'), 400, "\\ud800", id="surrogate-key"),
    pytest.param(CMPL, _cmpl(b', "user": "\\ude00\\ud83d"'), 400, "user",
                 id="surrogate-pair-reversed"),
    pytest.param(CMPL, _cmpl(prompt=b'"\xed\xa0\x80"'), 400, "prompt",
                 id="surrogate-as-raw-bytes"),
    pytest.param(CMPL, _cmpl(b', "kv_transfer_params": {"remote_host": "' + SUR + b'"}'), 400,
                 "kv_transfer_params.remote_host", id="surrogate-pd-field"),
    pytest.param(CMPL, _cmpl(prompt=b'"caf\xe9"'), 400, "not valid UTF-8", id="latin-1-body"),
    pytest.param(CMPL, _cmpl(prompt=b'"\xff\xfe"'), 400, "not valid UTF-8", id="utf8-bad-byte"),
    pytest.param(CHAT, _chat(content=b'"\xc3("'), 400, "not valid UTF-8",
                 id="utf8-bad-continuation"),
    pytest.param(CMPL, _cmpl(prompt=b'"\xc0\xaf"'), 400, "not valid UTF-8", id="utf8-overlong"),
    pytest.param(CMPL, _cmpl(prompt=b'"\xe2\x82"'), 400, "not valid UTF-8",
                 id="utf8-truncated"),
    pytest.param(CMPL, _cmpl(b', "x": ' + _nest(1000)), 400, "512 levels", id="nested-1000"),
    pytest.param(CMPL, _cmpl(b', "x": ' + _nest(100_000)), 400, "512 levels",
                 id="nested-100000"),
    pytest.param(CHAT, _chat(b', "x": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000), 400,
                 "512 levels", id="nested-objects-1000"),
    pytest.param(CMPL, _nest(5000, b"{}"), 400, "512 levels", id="nested-array-body"),
    pytest.param(CMPL, b"hello there", 400, "not valid JSON", id="not-json"),
    pytest.param(CMPL, b'{"prompt": "hi"', 400, "not valid JSON", id="truncated-json"),
    pytest.param(CMPL, b"", 400, "not valid JSON", id="empty-body"),
    pytest.param(CMPL, b'{"prompt": "hi", "max_tokens": 1' + b"0" * 5000 + b"}", 400,
                 "not valid JSON", id="int-of-5000-digits"),
    pytest.param(CMPL, b'[{"prompt": "hi"}]', 400, "JSON object", id="array-body"),
    pytest.param(CHAT, b'"hi"', 400, "JSON object", id="string-body"),
    pytest.param(CHAT, b"null", 400, "JSON object", id="null-body"),
    pytest.param(CMPL, _cmpl(prompt=b"NaN"), 400, "prompt", id="nan-prompt"),
    pytest.param(CMPL, _cmpl(b', "temperature": NaN'), 400, "temperature", id="nan-temperature"),
    pytest.param(CMPL, b'{"prompt": "hi", "max_tokens": Infinity}', 400, "max_tokens",
                 id="infinite-max-tokens"),
    pytest.param(CMPL, _cmpl(b', "user": "\\ud83d\\ude00", "stop": ["\\ud83d\\ude00"]'), 200,
                 None, id="surrogate-pair-is-fine"),
    pytest.param(CMPL, _cmpl(prompt=b'"a\\u0000b"'), 200, None, id="nul-char-is-fine"),
    pytest.param(CMPL, b"\xef\xbb\xbf" + _cmpl(), 200, None, id="utf8-bom-is-fine"),
    pytest.param(CMPL, _cmpl(b', "x": ' + _nest(100)), 200, None, id="nested-100-is-fine"),
    pytest.param(CMPL, _cmpl(prompt=b'"\\\\ud800"'), 200, None,
                 id="escaped-backslash-is-not-a-surrogate"),
]


def _exchange(host: str, port: int, data: bytes) -> bytes:
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


async def _send(sim: RunningSim, data: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.to_thread(_exchange, sim.host, sim.port, data)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return int(status_line.split()[1]), headers, body


def _request(method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: sim", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _error(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith("application/json"), (status, body[:200])
    err: dict[str, Any] = json.loads(body)["error"]
    assert err["code"] == status
    return err


@pytest.fixture
def no_warnings(caplog: pytest.LogCaptureFixture) -> Any:
    """Fails the test if anything logged a warning, an error or a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


@pytest.mark.parametrize(("path", "body", "status", "where"), BODIES)
async def test_hostile_bodies(sim: RunningSim, no_warnings: None, path: str, body: bytes,
                              status: int, where: str | None) -> None:
    got, headers, resp = await _send(sim, _request("POST", path, body))
    assert got == status, resp[:300]
    assert headers["x-llmd-served-by"] == sim.state.served_by
    if status == 200:
        return
    err = _error(got, headers, resp)
    assert err["type"] == "BadRequestError"
    assert where is not None and (where == err["param"] or where in err["message"]), err


# The engines' own JSON routes: (path, body, the field a 400 names).
ENGINE_ROUTE_BODIES = [
    ("/generate", b'{"text": "' + SUR + b'"}', "text"),
    ("/generate", b'{"text": "hi", "rid": "' + SUR + b'"}', "rid"),
    ("/generate", b'{"text": "hi", "sampling_params": {"stop": ["' + SUR + b'"]}}',
     "sampling_params.stop[0]"),
    ("/tokenize", b'{"prompt": "' + SUR + b'"}', "prompt"),
    ("/tokenize", b'{"messages": [{"role": "user", "content": "' + SUR + b'"}]}',
     "messages[0].content"),
]


async def test_hostile_engine_routes(engine: str, sim: RunningSim, no_warnings: None) -> None:
    """The engine's own body routes (SGLang `/generate`, vLLM `/tokenize`) check bodies too."""
    mounted = get_adapter(engine).extra_routes
    cases = [case for case in ENGINE_ROUTE_BODIES if case[0] in mounted]
    assert cases, f"{engine} mounts none of the JSON routes under test"
    for path, body, param in cases:
        got, headers, resp = await _send(sim, _request("POST", path, body))
        assert got == 400 and _error(got, headers, resp)["param"] == param, resp[:300]
        got, headers, resp = await _send(sim, _request("POST", path, _nest(2000, b"{}")))
        assert got == 400 and "512 levels" in _error(got, headers, resp)["message"]


async def test_hostile_pd_pull_routes(engine: str, start_sim: StartSim,
                                      no_warnings: None) -> None:
    """The P/D stand-ins' own pull routes (NIXL on the main port, SGLang's bootstrap server)."""
    prefill = await start_sim(role="prefill", bootstrap_port=0)
    port = prefill.side_ports.get("bootstrap", prefill.port)
    path = "/_llmd/bootstrap/pull" if engine == "sglang" else "/_llmd/kv/pull"
    for body in (_nest(5000), b'{"x": "' + SUR + b'"}', b"\xff"):
        raw = await asyncio.to_thread(_exchange, prefill.host, port, _request("POST", path, body))
        status = int(raw.split(b" ", 2)[1])
        assert status == 400, raw[:300]


async def test_depth_limit_is_exact(sim: RunningSim, no_warnings: None) -> None:
    """The body's own object is level 1: `MAX_JSON_DEPTH` levels pass, one more is a 400."""
    ok = _cmpl(b', "x": ' + _nest(MAX_JSON_DEPTH - 1))
    assert (await _send(sim, _request("POST", CMPL, ok)))[0] == 200
    deep = _cmpl(b', "x": ' + _nest(MAX_JSON_DEPTH))
    got, headers, resp = await _send(sim, _request("POST", CMPL, deep))
    assert got == 400 and "more than 512 levels" in _error(got, headers, resp)["message"]


def _big(name: str, size: int) -> str:
    return f"{name}: " + "a" * (size - len(name) - 2)


ENVOY_ACCEPTS = [  # Envoy's defaults: 60 KiB of headers in all, at most 100 of them
    pytest.param((_big("x-big", 9 * 1024),), id="one-9KB-header"),
    pytest.param((_big("x-big", 20 * 1024),), id="one-20KB-header"),
    pytest.param((_big("x-big", 59 * 1024),), id="one-59KB-header"),
    pytest.param(tuple(_big(f"x-h{i}", 600) for i in range(95)), id="95-headers-of-600B"),
    pytest.param((_big("authorization", 30 * 1024), _big("cookie", 29 * 1024)),
                 id="two-big-headers"),
]


@pytest.mark.parametrize("headers", ENVOY_ACCEPTS)
async def test_headers_envoy_accepts_are_accepted(sim: RunningSim, no_warnings: None,
                                                  headers: tuple[str, ...]) -> None:
    got, _, resp = await _send(sim, _request("POST", CMPL, _cmpl(), headers))
    assert got == 200, resp[:300]


async def test_long_url_envoy_accepts_is_routed(sim: RunningSim, no_warnings: None) -> None:
    got, headers, resp = await _send(sim, _request("GET", "/v1/" + "p" * 59 * 1024))
    assert got == 404 and _error(got, headers, resp)["type"] == "NotFoundError"


@pytest.mark.parametrize("request_bytes", [
    pytest.param(_request("POST", CMPL, _cmpl(), (_big("x-big", 70 * 1024),)),
                 id="one-70KB-header"),
    pytest.param(_request("POST", CMPL, _cmpl(), (_big("x-big", 1024 * 1024),)),
                 id="one-1MB-header"),
    pytest.param(_request("GET", "/v1/" + "p" * (MAX_HEADER_LINE_BYTES + 1)), id="70KB-url"),
    pytest.param(_request("POST", CMPL, _cmpl(), tuple(f"x-h{i}: a" for i in range(200))),
                 id="200-headers"),
])
async def test_headers_over_the_limit_are_json_431(sim: RunningSim, no_warnings: None,
                                                   request_bytes: bytes) -> None:
    got, headers, resp = await _send(sim, request_bytes)
    assert got == 431
    err = _error(got, headers, resp)
    assert err["type"] == "RequestHeaderFieldsTooLargeError"
    assert str(MAX_HEADER_LINE_BYTES) in err["message"] and "aaaa" not in err["message"]
    assert headers["x-llmd-served-by"] == sim.state.served_by


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-client-hello"),
    pytest.param(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", id="nul-in-header"),
    pytest.param(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Content-Length: 2\r\n\r\n", id="two-content-lengths"),
    pytest.param(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                 id="negative-content-length"),
    pytest.param(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"\r\nzz\r\n", id="bad-chunk-size"),
])
async def test_malformed_http_is_json_400(sim: RunningSim, no_warnings: None,
                                          request_bytes: bytes) -> None:
    got, headers, resp = await _send(sim, request_bytes)
    assert got == 400 and _error(got, headers, resp)["type"] == "BadRequestError"


@pytest.mark.parametrize(("method", "path", "status", "error_type", "allow"), [
    pytest.param("GET", CHAT, 405, "MethodNotAllowedError", "POST", id="get-chat"),
    pytest.param("GET", CMPL, 405, "MethodNotAllowedError", "POST", id="get-completions"),
    pytest.param("PUT", CHAT, 405, "MethodNotAllowedError", "POST", id="put-chat"),
    pytest.param("DELETE", CMPL, 405, "MethodNotAllowedError", "POST", id="delete-completions"),
    pytest.param("POST", "/v1/models", 405, "MethodNotAllowedError", "GET", id="post-models"),
    pytest.param("GET", "/nope", 404, "NotFoundError", None, id="unknown-path"),
    pytest.param("POST", "/v1/nope", 404, "NotFoundError", None, id="unknown-post-path"),
])
async def test_wrong_method_or_path(sim: RunningSim, no_warnings: None, method: str, path: str,
                                    status: int, error_type: str, allow: str | None) -> None:
    body = b"" if method == "GET" else b"{}"
    got, headers, resp = await _send(sim, _request(method, path, body))
    assert got == status and _error(got, headers, resp)["type"] == error_type
    if allow:
        assert allow in headers["allow"].split(",")


async def test_still_serving_after_the_corpus(sim: RunningSim, no_warnings: None) -> None:
    """One connection after another of hostile input leaves the server answering normally."""
    for param in BODIES:
        path, body = param.values[0], param.values[1]
        assert isinstance(path, str) and isinstance(body, bytes)
        assert (await _send(sim, _request("POST", path, body)))[0] < 500
    for raw in (b"GARBAGE\r\n\r\n", _request("GET", "/" + "u" * 100_000)):
        assert (await _send(sim, raw))[0] in (400, 431)
    got, _, resp = await _send(sim, _request("POST", CHAT, _chat()))
    assert got == 200 and json.loads(resp)["choices"]
