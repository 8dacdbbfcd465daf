"""Fault tolerance at the sidecar, for both connectors: malformed prefill targets and hostile
bodies are 400s (never a 500), an unreachable prefill fails within the connect timeout, a
prefill candidate that cannot be reached hands the request to the next one, and SSRF
protection checks host *and* port of every candidate.

Real simulators and the sidecar's app on loopback (see `_sidecar_tools`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from _sidecar_tools import (
    MODEL,
    blackhole_target,
    pd_stack,
    refused_target,
    resetting_target,
)
from test_units import HOSTILE_TARGETS

from llmd.engines import get_adapter
from llmd.sidecar import PREFILLER_HEADER, RETRIABLE_HEADER, SidecarConfig, serve

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test in which any handler raised (aiohttp logs those, with a traceback)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def _ask(http: aiohttp.ClientSession, url: str, target: str | None, *,
               stream: bool = False, raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """POST a completion; (status, JSON body or SSE text, headers)."""
    headers = {"content-type": "application/json"}
    if target is not None:
        headers[PREFILLER_HEADER] = target
    body = {"model": MODEL, "prompt": "a prompt for the fault tests", "max_tokens": 3,
            "stream": stream}
    kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
    async with http.post(url + "/v1/completions", headers=headers, **kwargs) as resp:
        text = await resp.text()
        parsed: Any = await resp.json() if resp.content_type == "application/json" else text
        return resp.status, parsed, {k.lower(): v for k, v in resp.headers.items()}


async def _ask_raw(url: str, header: str) -> tuple[int, Any]:
    """POST with `x-prefiller-host-port` sent as raw bytes (a client library would refuse or
    rewrite some of them): the string's UTF-8, lone surrogates as the bytes they stand for
    (`surrogateescape`, which is how aiohttp hands such bytes to the handler)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"model": MODEL, "prompt": "hostile header", "max_tokens": 2}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n").encode()
    value = header.encode("utf-8", "surrogateescape")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + PREFILLER_HEADER.encode() + b": " + value + b"\r\n\r\n" + body)
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(("bad", "reason"),
                         [p for p in HOSTILE_TARGETS if p.id not in ("empty", "control-char")])
async def test_malformed_targets_are_400_naming_the_header(
        engine: str, bad: str, reason: str) -> None:
    async with pd_stack(engine) as s:
        status, body = await _ask_raw(s.url, bad)
        assert status == 400, body
        assert body["error"]["message"].startswith(f"{PREFILLER_HEADER}: ")
        assert reason in body["error"]["message"]
        assert body["error"]["param"] == PREFILLER_HEADER
        # In a list, the bad entry is named and the good one is not tried.
        status, body = await _ask_raw(s.url, f"{s.target},{bad}")
        assert status == 400 and "entry 2: " in body["error"]["message"]
        assert s.prefill.state.engine.num_running == 0


@pytest.mark.parametrize(("raw", "message"), [
    pytest.param(b'{"model": "llmd-sim", "prompt": "\\ud800", "max_tokens": 2}',
                 "'prompt' is not valid Unicode: it contains a lone UTF-16 surrogate",
                 id="surrogate-prompt"),
    pytest.param(b'{"model": "llmd-sim", "messages": [{"role": "user", "content": "\\udc00"}]}',
                 "'messages[0].content' is not valid Unicode", id="surrogate-content"),
    pytest.param(b'{"model": "\\ud800", "prompt": "x"}', "'model' is not valid Unicode",
                 id="surrogate-model"),
    pytest.param(b'{"model": "llmd-sim", "prompt": "\xff"}', "not valid UTF-8",
                 id="invalid-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "more than 512 levels deep",
                 id="100000-deep"),
    pytest.param(b'["llmd-sim"]', "must be a JSON object", id="non-object"),
])
async def test_hostile_bodies_are_400(engine: str, http: aiohttp.ClientSession, raw: bytes,
                                      message: str) -> None:
    async with pd_stack(engine) as s:
        status, body, _ = await _ask(http, s.url, s.target, raw=raw)
        assert status == 400, body
        assert body["error"]["type"] == "BadRequestError" and message in body["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("dead", ["refused", "blackhole"])
async def test_unreachable_prefill_is_answered_within_the_connect_timeout(
        engine: str, http: aiohttp.ClientSession, stream: bool, dead: str) -> None:
    """Well under the 30 s bootstrap timeout an SGLang decode leg would otherwise wait. Nothing
    was computed anywhere, so a decode engine that serves alone (vLLM) prefills locally; one
    that cannot (SGLang decode mode) answers 503 naming the prefill endpoint."""
    async with AsyncExitStack() as stack:
        target = refused_target() if dead == "refused" else \
            await stack.enter_async_context(blackhole_target())
        s = await stack.enter_async_context(pd_stack(engine, connect_timeout_s=0.5))
        start = time.monotonic()
        status, body, headers = await _ask(http, s.url, target, stream=stream)
        assert time.monotonic() - start < 5
        if get_adapter(engine).pd.decode_alone:
            assert status == 200 and headers["x-llmd-kv-source"] == "local", body
        else:
            assert status == 503, body
            assert f"prefill endpoint {target} unreachable" in body["error"]["message"]
            assert s.decode.state.engine.num_running == 0  # the decode leg did not linger


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("first", ["refused", "reset", "blackhole"])
async def test_an_unreached_candidate_hands_over_to_the_next(
        engine: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture,
        stream: bool, first: str) -> None:
    async with AsyncExitStack() as stack:
        if first == "refused":
            dead = refused_target("127.0.0.3")
        else:
            dead = await stack.enter_async_context(
                resetting_target() if first == "reset" else blackhole_target())
        s = await stack.enter_async_context(pd_stack(engine, connect_timeout_s=0.5))
        status, body, headers = await _ask(http, s.url, f"{dead}, {s.target}", stream=stream)
        assert status == 200, body
        assert headers["x-llmd-kv-source"] == "transfer"  # the second prefill did it
        if stream:
            assert body.rstrip().endswith("data: [DONE]") and '"error"' not in body
        fallbacks = [r.getMessage() for r in caplog.records
                     if r.getMessage().startswith("prefill fallback")]
        assert len(fallbacks) == 1 and fallbacks[0].startswith(
            f"prefill fallback 1/1: {dead} not reached")
        assert fallbacks[0].split("; trying ")[1].startswith(s.target)
        assert all(r.levelno == logging.INFO for r in caplog.records
                   if r.getMessage().startswith("prefill fallback"))


async def test_every_candidate_unreached_decodes_alone_or_is_the_last_error(
        engine: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    dead = [refused_target("127.0.0.3"), refused_target("127.0.0.4")]
    async with pd_stack(engine) as s:
        status, body, headers = await _ask(http, s.url, ",".join(dead))
    if get_adapter(engine).pd.decode_alone:
        assert status == 200 and headers["x-llmd-kv-source"] == "local", body
        assert "no prefill candidate reached" in caplog.text
    else:
        assert status == 503 and f"prefill endpoint {dead[1]} unreachable" in \
            body["error"]["message"]


@pytest.mark.parametrize("target", [None, "prefill"], ids=["pass-through", "disaggregated"])
async def test_a_refused_decode_engine_is_a_503_a_gateway_may_retry(
        engine: str, http: aiohttp.ClientSession, target: str | None) -> None:
    """The engine behind the sidecar is gone: nothing was computed, so the answer says a
    gateway may send the request to another endpoint (llmd's Envoy does)."""
    gone = int(refused_target().rsplit(":", 1)[1])
    async with pd_stack(engine, model_server_port=gone) as s:
        status, body, headers = await _ask(http, s.url, s.target if target else None)
    assert status == 503, body
    assert headers[RETRIABLE_HEADER] == "decode-engine-unreachable"


async def test_an_answered_prefill_error_is_not_handed_over(
        engine: str, http: aiohttp.ClientSession) -> None:
    """Only an unreached prefill moves on: one that answered (here 400) is the answer."""
    failing = {"failure_rate": 1.0, "failure_kinds": ("invalid_request",)}
    async with pd_stack(engine, prefill=failing) as s:
        status, body, _ = await _ask(http, s.url, f"{s.target},{refused_target()}")
        assert status == 400, body
        assert s.decode.state.engine.num_running == 0


async def test_ssrf_checks_host_and_port_of_every_candidate(
        engine: str, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    # A bare host allows only the known prefill ports, never the sim's ephemeral one.
    async with pd_stack(engine, allow=lambda p: ("127.0.0.1",)) as s:
        status, body, _ = await _ask(http, s.url, s.target)
        assert status == 403
        assert body["error"]["message"] == f"prefill target {s.target} is not allowed"
    admin, dead = "127.0.0.1:15000", refused_target("127.0.0.3")
    async with pd_stack(engine, allow=lambda p: (f"127.0.0.1:{p.port}", dead)) as s:
        assert (await _ask(http, s.url, s.target))[0] == 200  # exactly that host:port
        # Disallowed candidates are skipped (logged); the allowed ones are tried in order.
        status, _, headers = await _ask(http, s.url, f"{admin},{dead},{s.target}")
        assert status == 200 and headers["x-llmd-kv-source"] == "transfer"
        assert f"prefill target {admin} not in the allowlist; skipped" in caplog.text
        # When none is allowed, the request is refused before any connection.
        status, body, _ = await _ask(http, s.url, f"{admin},127.0.0.1:9901")
        assert status == 403
        assert body["error"]["message"] == \
            f"prefill targets {admin}, 127.0.0.1:9901 are not allowed"


async def test_a_sidecar_bug_is_a_json_500(engine: str, http: aiohttp.ClientSession,
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A failure inside the sidecar itself (here: its candidate parser raising) is an
    OpenAI-style 500, and the sidecar keeps serving."""
    import llmd.sidecar.app as app_module

    def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("a bug")

    async with pd_stack(engine) as s:
        monkeypatch.setattr(app_module, "parse_candidates", broken)
        status, body, _ = await _ask(http, s.url, s.target)
        assert status == 500 and body["error"]["message"].startswith("internal error")
        monkeypatch.undo()
        assert (await _ask(http, s.url, s.target))[0] == 200
    caplog.clear()  # the bug's traceback was logged on purpose


@pytest.mark.parametrize(("raw_header", "status"), [
    pytest.param(b"X-Big: " + b"a" * 70_000, 431, id="70kb-header"),
    pytest.param(b"X-Nul: a\x00b", 400, id="nul-in-header"),
    pytest.param(b"X-Ok: " + b"a" * 30_000, 200, id="30kb-header-envoy-passes"),
])
async def test_malformed_http_is_json_like_the_simulators(engine: str, raw_header: bytes,
                                                           status: int) -> None:
    """The real `serve()` runner: what aiohttp's parser rejects is JSON, and what Envoy passes
    (up to 60 KB of headers) is accepted, as by the simulators behind it."""
    stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
    cfg = SidecarConfig(host="127.0.0.1", port=0, model_server_port=int(
        refused_target().rsplit(":", 1)[1]), kv_connector=get_adapter(engine).sidecar_connector)
    task = asyncio.create_task(serve(cfg, stop, lambda h, p: ready.set_result(p)))
    try:
        port = await asyncio.wait_for(ready, 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + raw_header
                     + b"\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert int(head.split(b" ", 2)[1]) == status, answer[:300]
    assert json.loads(body)  # JSON either way
