"""SGLang's concurrent legs: a prefill candidate that fails unreached restarts the pair with
the next candidate and a fresh room, as long as nothing has reached the client.

A real SGLang decode server sends its SSE response headers at once and its first event only
after the KV arrived; the simulator answers only once the room is met, so stand-ins play the
servers here. (vLLM's legs are serial: no decode leg is in flight when a prefill fails, and
its handover is covered for both connectors in `test_faults`.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field

import aiohttp
import pytest
from _sidecar_tools import running_sidecar
from aiohttp import web

from llmd._http import listen_socket
from llmd.engines import get_adapter
from llmd.sidecar import PREFILLER_HEADER, SidecarConfig

ADAPTER = get_adapter("sglang")
HOST_FIELD, PORT_FIELD, ROOM_FIELD = ADAPTER.pd.request_fields


@dataclass
class Servers:
    """The stand-ins' shared state: rooms whose prefill answered, what the decode saw."""

    first_chunk: bool
    """The decode writes one event before waiting for its room."""
    prefilled: dict[int, asyncio.Event] = field(default_factory=dict)
    decode_rooms: list[int] = field(default_factory=list)
    decode_closed: list[int] = field(default_factory=list)
    """Rooms whose decode leg the sidecar closed before it finished."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    decode_started: asyncio.Event = field(default_factory=asyncio.Event)
    fail_first_decode: bool = False
    """The first decode answers a 500 at once, as a decode server whose KV pull from a dying
    prefill broke does (the simulator's KvTransferError), before the prefill's reset shows."""
    reset_delay_s: float = 0.0

    def room(self, room: int) -> asyncio.Event:
        return self.prefilled.setdefault(room, asyncio.Event())

    async def decode(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        room = body[ROOM_FIELD]
        self.decode_rooms.append(room)
        if self.fail_first_decode and len(self.decode_rooms) == 1:
            self.decode_started.set()
            return web.json_response({"error": {"message": f"KV transfer for bootstrap_room "
                                                 f"{room}: ServerDisconnectedError",
                                                 "type": "InternalServerError", "param": None,
                                                 "code": 500}}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)  # as SGLang does, before any token
        if self.first_chunk:
            await resp.write(b'data: {"choices": [{"index": 0, "text": ""}]}\n\n')
        self.decode_started.set()
        try:
            async with asyncio.timeout(10):
                await self.room(room).wait()
        except asyncio.CancelledError:  # the sidecar closed the leg
            self.decode_closed.append(room)
            self.closed.set()
            raise
        await resp.write(b'data: {"choices": [{"index": 0, "text": "ok"}]}\n\ndata: [DONE]\n\n')
        await resp.write_eof()
        return resp

    async def prefill(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.room(body[ROOM_FIELD]).set()
        return web.json_response({"choices": [{"index": 0, "text": "o"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    async def reset_after_decode_started(self, reader: asyncio.StreamReader,
                                         writer: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            await reader.readuntil(b"\r\n\r\n")
            async with asyncio.timeout(10):
                await self.decode_started.wait()
            await asyncio.sleep(self.reset_delay_s)
        writer.transport.abort()


@asynccontextmanager
async def _app(handler: web.Handler) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           handler_cancellation=True)
    await runner.setup()
    sock = listen_socket("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    try:
        yield sock.getsockname()[1]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _setup(first_chunk: bool, **servers_fields: object
                 ) -> AsyncIterator[tuple[Servers, str, str, str]]:
    """(servers, sidecar URL, resetting prefill, good prefill)."""
    servers = Servers(first_chunk, **servers_fields)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        decode = await stack.enter_async_context(_app(servers.decode))
        good = await stack.enter_async_context(_app(servers.prefill))
        reset = await asyncio.start_server(servers.reset_after_decode_started, "127.0.0.1", 0)
        stack.push_async_callback(reset.wait_closed)
        stack.callback(reset.close)
        url = await stack.enter_async_context(running_sidecar(SidecarConfig(
            host="127.0.0.1", port=0, model_server_port=decode,
            kv_connector=ADAPTER.sidecar_connector)))
        yield (servers, url, f"127.0.0.1:{reset.sockets[0].getsockname()[1]}",
               f"127.0.0.1:{good}")


async def _stream(url: str, targets: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
            http.post(url + "/v1/completions", headers={PREFILLER_HEADER: targets},
                      json={"model": "m", "prompt": "p", "stream": True}) as resp:
        return resp.status, await resp.text()


async def test_headers_but_no_byte_yet_restarts_the_pair(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _setup(first_chunk=False) as (servers, url, reset, good):
        status, text = await _stream(url, f"{reset},{good}")
        assert status == 200 and '"ok"' in text and text.endswith("data: [DONE]\n\n")
        assert '"error"' not in text
        first, second = servers.decode_rooms  # a fresh room for the second pair
        assert first != second and servers.prefilled[second].is_set()
        assert not servers.prefilled[first].is_set()
        await asyncio.wait_for(servers.closed.wait(), 5)
        assert servers.decode_closed == [first]
        assert f"prefill fallback 1/1: {reset} not reached" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_decode_error_before_the_prefill_reset_shows_still_hands_over() -> None:
    """The decode server fails first (its KV pull from the dying prefill broke) and the
    prefill leg's reset arrives 0.2 s later: the sidecar waits for the prefill's verdict
    instead of passing the decode's 500 on, and the next candidate serves the request."""
    async with _setup(first_chunk=False, fail_first_decode=True,
                      reset_delay_s=0.2) as (servers, url, reset, good):
        status, text = await _stream(url, f"{reset},{good}")
        assert status == 200 and '"ok"' in text and '"error"' not in text, (status, text)
        first, second = servers.decode_rooms
        assert first != second and servers.prefilled[second].is_set()


async def test_once_a_byte_is_out_the_prefill_error_ends_the_stream(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _setup(first_chunk=True) as (servers, url, reset, good):
        status, text = await _stream(url, f"{reset},{good}")
        assert status == 200
        events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
        assert events[-1]["error"]["code"] == 503
        assert f"prefill endpoint {reset} unreachable" in events[-1]["error"]["message"]
        assert text.endswith("data: [DONE]\n\n")
        (room,) = servers.decode_rooms
        assert not servers.prefilled[room].is_set()  # the good prefill was never asked
        await asyncio.wait_for(servers.closed.wait(), 5)
        assert servers.decode_closed == [room]
        assert "prefill fallback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
