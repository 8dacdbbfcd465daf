"""Hostile input (issue 12): answered like the engines, as OpenAI JSON, never a 5xx or a
traceback. Raw sockets, so the bytes on the wire are exactly the ones under test."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from _hostile import (
    BODIES,
    CHAT,
    CMPL,
    SUR,
    chat_body,
    cmpl_body,
    exchange,
    nest,
    raw_request,
)
from _simtools import StartSim

from llmd._http import MAX_HEADER_LINE_BYTES
from llmd._json import MAX_JSON_DEPTH
from llmd.engines import get_adapter
from llmd.sim import RunningSim
from llmd.sim._bootstrap import PULL_PATH as BOOTSTRAP_PULL_PATH
from llmd.sim._nixl import PULL_PATH as NIXL_PULL_PATH


async def _send(sim: RunningSim, data: bytes) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.to_thread(exchange, sim.host, sim.port, data)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
    return int(status_line.split()[1]), headers, body


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
    got, headers, resp = await _send(sim, raw_request("POST", path, body))
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
        got, headers, resp = await _send(sim, raw_request("POST", path, body))
        assert got == 400 and _error(got, headers, resp)["param"] == param, resp[:300]
        got, headers, resp = await _send(sim, raw_request("POST", path, nest(2000, b"{}")))
        assert got == 400 and "512 levels" in _error(got, headers, resp)["message"]


async def test_hostile_pd_pull_routes(start_sim: StartSim, no_warnings: None) -> None:
    """The P/D stand-ins' own pull routes (NIXL on the main port, SGLang's bootstrap server)."""
    prefill = await start_sim(role="prefill", bootstrap_port=0)
    if "bootstrap" in prefill.side_ports:
        port, path = prefill.side_ports["bootstrap"], BOOTSTRAP_PULL_PATH
    else:
        port, path = prefill.port, NIXL_PULL_PATH
    for body in (nest(5000), b'{"x": "' + SUR + b'"}', b"\xff"):
        raw = await asyncio.to_thread(exchange, prefill.host, port, raw_request("POST", path, body))
        status = int(raw.split(b" ", 2)[1])
        assert status == 400, raw[:300]


async def test_depth_limit_is_exact(sim: RunningSim, no_warnings: None) -> None:
    """The body's own object is level 1: `MAX_JSON_DEPTH` levels pass, one more is a 400."""
    ok = cmpl_body(b', "x": ' + nest(MAX_JSON_DEPTH - 1))
    assert (await _send(sim, raw_request("POST", CMPL, ok)))[0] == 200
    deep = cmpl_body(b', "x": ' + nest(MAX_JSON_DEPTH))
    got, headers, resp = await _send(sim, raw_request("POST", CMPL, deep))
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
    got, _, resp = await _send(sim, raw_request("POST", CMPL, cmpl_body(), headers))
    assert got == 200, resp[:300]


async def test_long_url_envoy_accepts_is_routed(sim: RunningSim, no_warnings: None) -> None:
    got, headers, resp = await _send(sim, raw_request("GET", "/v1/" + "p" * 59 * 1024))
    assert got == 404 and _error(got, headers, resp)["type"] == "NotFoundError"


@pytest.mark.parametrize("request_bytes", [
    pytest.param(raw_request("POST", CMPL, cmpl_body(), (_big("x-big", 70 * 1024),)),
                 id="one-70KB-header"),
    pytest.param(raw_request("POST", CMPL, cmpl_body(), (_big("x-big", 1024 * 1024),)),
                 id="one-1MB-header"),
    pytest.param(raw_request("GET", "/v1/" + "p" * (MAX_HEADER_LINE_BYTES + 1)), id="70KB-url"),
    pytest.param(raw_request("POST", CMPL, cmpl_body(), tuple(f"x-h{i}: a" for i in range(200))),
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
    got, headers, resp = await _send(sim, raw_request(method, path, body))
    assert got == status and _error(got, headers, resp)["type"] == error_type
    if allow:
        assert allow in headers["allow"].split(",")


async def test_still_serving_after_the_corpus(sim: RunningSim, no_warnings: None) -> None:
    """One connection after another of hostile input leaves the server answering normally."""
    for param in BODIES:
        path, body = param.values[0], param.values[1]
        assert isinstance(path, str) and isinstance(body, bytes)
        assert (await _send(sim, raw_request("POST", path, body)))[0] < 500
    for raw in (b"GARBAGE\r\n\r\n", raw_request("GET", "/" + "u" * 100_000)):
        assert (await _send(sim, raw))[0] in (400, 431)
    got, _, resp = await _send(sim, raw_request("POST", CHAT, chat_body()))
    assert got == 200 and json.loads(resp)["choices"]
