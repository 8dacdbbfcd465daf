"""SGLang's bootstrap-room handshake, simulated.

Both legs carry `bootstrap_host`, `bootstrap_port` (null: 8998) and `bootstrap_room`. A prefill
server (`role` prefill) runs a bootstrap HTTP server on `bootstrap_port`; its prefill leg
claims the room, computes the prompt, publishes the room's KV there and answers (one token) once
the decode peer has pulled it. A decode server (`role` decode) pulls the room from
`http://bootstrap_host:bootstrap_port` (`POST /_llmd/bootstrap/pull`, waiting until the prefill
publishes) and pays the transfer instead of the prefill. Each side gives up after
`bootstrap_timeout_s` with an error naming the room; a room claimed twice, or carrying another
prompt, fails both legs loudly. Role `both` ignores the fields, as SGLang's `null` mode does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from llmd._http import listen_socket
from llmd._json import decode_json
from llmd.engines import PdProtocol
from llmd.errors import BadRequestError, RequestError
from llmd.sim._pd import (
    LOCAL,
    KvTransferError,
    KvTransferTimeout,
    Leg,
    LocalLeg,
    RoomConflictError,
    Route,
    http_url,
)
from llmd.sim.config import SimConfig
from llmd.sim.engine import Engine, Sequence

__all__ = ["PULL_PATH", "BootstrapSim"]

log = logging.getLogger(__name__)

PULL_PATH = "/_llmd/bootstrap/pull"
DEFAULT_BOOTSTRAP_PORT = 8998
_MAX_ROOM = 2**63 - 1  # SGLang stores rooms as int64
_HTTP_SLACK_S = 5.0


class _PullBody(BaseModel):
    bootstrap_room: int
    block_keys: list[int]
    prompt_tokens: int
    timeout_s: float = Field(gt=0)


@dataclass(slots=True)
class _Room:
    prefill: bool = False
    decode: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pulled: asyncio.Event = field(default_factory=asyncio.Event)
    keys: tuple[int, ...] = ()
    prompt_tokens: int = 0
    error: str | None = None
    """Set (with both events) when the exchange failed; each side reports it."""


class _Rooms:
    """The prefill server's bootstrap table: room -> exchange in progress (bounded by the
    requests in flight: a room leaves when both sides are done or one side gives up)."""

    def __init__(self) -> None:
        self._rooms: dict[int, _Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def claim(self, room: int, side: str) -> _Room:
        entry = self._rooms.setdefault(room, _Room())
        if getattr(entry, side):
            raise RoomConflictError(f"bootstrap_room {room} is already in use by another "
                                    f"{side} request")
        setattr(entry, side, True)
        return entry

    def fail(self, room: int, entry: _Room, error: str) -> None:
        if entry.error is None and not entry.pulled.is_set():
            entry.error = error
            entry.ready.set()
            entry.pulled.set()
        self.drop(room, entry)

    def drop(self, room: int, entry: _Room) -> None:
        if self._rooms.get(room) is entry:
            del self._rooms[room]

    async def pull(self, body: _PullBody) -> int:
        """A decode side joins `room`, waits for the prefill's KV and takes it."""
        room = body.bootstrap_room
        entry = self.claim(room, "decode")
        try:
            try:
                async with asyncio.timeout(body.timeout_s):
                    await entry.ready.wait()
            except TimeoutError:
                msg = (f"no prefill published bootstrap_room {room} within {body.timeout_s:g} s")
                self.fail(room, entry, msg)
                raise KvTransferTimeout(msg) from None
            if entry.error is not None:
                raise KvTransferError(entry.error)
            if list(entry.keys) != body.block_keys or entry.prompt_tokens != body.prompt_tokens:
                msg = (f"bootstrap_room {room} carries a different prompt "
                       f"({entry.prompt_tokens} tokens) than the decode leg's "
                       f"({body.prompt_tokens} tokens): two requests share one room")
                self.fail(room, entry, msg)
                raise RoomConflictError(msg)
            entry.pulled.set()
            return entry.prompt_tokens
        finally:
            if not entry.pulled.is_set():  # cancelled (decode side went away)
                self.fail(room, entry, f"the decode leg of bootstrap_room {room} went away")
            elif entry.error is None:
                self.drop(room, entry)


class BootstrapSim:
    """SGLang's P/D side of one simulated server."""

    def __init__(self, cfg: SimConfig, pd: PdProtocol, engine: Engine) -> None:
        self.cfg, self.pd, self.engine = cfg, pd, engine
        self.rooms = _Rooms()
        self.decode_rooms: set[int] = set()  # rooms this decode server is pulling
        self._session: aiohttp.ClientSession | None = None

    def leg(self, fields: Mapping[str, Any], stream: bool, path: str) -> Leg:
        role = self.cfg.role
        if role == "both":
            return LOCAL
        room = fields.get("bootstrap_room")
        if room is None:
            raise BadRequestError(f"a {role}-mode server needs bootstrap_room (and "
                                  "bootstrap_host, bootstrap_port) on every request",
                                  param="bootstrap_room")
        if isinstance(room, bool) or not isinstance(room, int) or not 0 <= room <= _MAX_ROOM:
            raise BadRequestError(f"bootstrap_room must be an integer in [0, 2**63-1], got "
                                  f"{room!r}", param="bootstrap_room")
        if role == "prefill":
            return _PrefillLeg(self, room)
        host, port = fields.get("bootstrap_host"), fields.get("bootstrap_port")
        if not isinstance(host, str) or not host:
            raise BadRequestError("a decode-mode server needs bootstrap_host (the prefill "
                                  "server's host)", param="bootstrap_host")
        if port is None:
            port = DEFAULT_BOOTSTRAP_PORT
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise BadRequestError(f"bootstrap_port must be a port number, got {port!r}",
                                  param="bootstrap_port")
        return _DecodeLeg(self, host, port, room)

    def routes(self) -> list[Route]:
        return []

    @asynccontextmanager
    async def running(self, host: str, port: int) -> AsyncIterator[dict[str, int]]:
        timeout = aiohttp.ClientTimeout(total=self.cfg.bootstrap_timeout_s + _HTTP_SLACK_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                if self.cfg.role != "prefill":
                    yield {}
                    return
                async with self._bootstrap_server(host) as bootstrap_port:
                    yield {"bootstrap": bootstrap_port}
            finally:
                self._session = None

    @asynccontextmanager
    async def _bootstrap_server(self, host: str) -> AsyncIterator[int]:
        app = web.Application()
        app.router.add_post(PULL_PATH, self._pull)
        app.router.add_get("/health", _ok)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            sock = listen_socket(host, self.cfg.bootstrap_port)
        except OSError:
            await runner.cleanup()
            raise
        await web.SockSite(runner, sock).start()
        try:
            yield sock.getsockname()[1]
        finally:
            await runner.cleanup()

    async def _pull(self, request: web.Request) -> web.Response:
        try:
            try:
                body = _PullBody.model_validate(decode_json(await request.read()))
            except ValidationError as exc:
                raise BadRequestError(f"bad bootstrap pull: {exc}") from None
            body.timeout_s = min(body.timeout_s, self.cfg.bootstrap_timeout_s)
            tokens = await self.rooms.pull(body)
        except RequestError as exc:
            return web.json_response(exc.body(), status=exc.status)
        return web.json_response({"prompt_tokens": tokens})

    def held_blocks(self) -> int:
        return 0

    def prefill_queue(self) -> int:
        return len(self.rooms)

    def transfer_queue(self) -> int:
        return len(self.decode_rooms)

    async def fetch(self, host: str, port: int, room: int, seq: Sequence) -> None:
        """Decode side: wait for the room's KV at the prefill's bootstrap server."""
        assert self._session is not None, "fetch outside running()"
        url = http_url(host, port, PULL_PATH)
        body = {"bootstrap_room": room, "block_keys": list(seq.keys),
                "prompt_tokens": seq.prompt_tokens, "timeout_s": self.cfg.bootstrap_timeout_s}
        try:
            async with self._session.post(url, json=body) as resp:
                if resp.status == 200:
                    return
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KvTransferError(f"bootstrap server {url} for bootstrap_room {room}: "
                                  f"{exc.__class__.__name__} {exc}".rstrip()) from None
        try:
            message = str(json.loads(text)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = text or f"status {status}"
        error = {504: KvTransferTimeout, 409: RoomConflictError}.get(status, KvTransferError)
        raise error(f"KV transfer for bootstrap_room {room} from {url} failed: {message}")


async def _ok(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class _PrefillLeg(LocalLeg):
    prefill_only: ClassVar[bool] = True

    def __init__(self, sim: BootstrapSim, room: int) -> None:
        self.sim, self.room = sim, room
        self.entry = sim.rooms.claim(room, "prefill")

    async def finish(self, seq: Sequence) -> dict[str, Any]:
        sim, entry, room = self.sim, self.entry, self.room
        entry.keys, entry.prompt_tokens = tuple(seq.keys), seq.prompt_tokens
        entry.ready.set()
        timeout = sim.cfg.bootstrap_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await entry.pulled.wait()
        except TimeoutError:
            msg = f"no decode leg joined bootstrap_room {room} within {timeout:g} s"
            sim.rooms.fail(room, entry, msg)
            raise KvTransferTimeout(msg) from None
        if entry.error is not None:
            raise KvTransferError(entry.error)
        sim.engine.metrics.on_transfer(sent=seq.prompt_tokens)
        return {}

    def close(self) -> None:
        if not self.entry.pulled.is_set():
            self.sim.rooms.fail(self.room, self.entry,
                                f"the prefill leg of bootstrap_room {self.room} failed")
        else:
            self.sim.rooms.drop(self.room, self.entry)


class _DecodeLeg(LocalLeg):

    def __init__(self, sim: BootstrapSim, host: str, port: int, room: int) -> None:
        if room in sim.decode_rooms:
            raise RoomConflictError(f"bootstrap_room {room} is already in use by another "
                                    "decode request on this server")
        self.sim, self.host, self.port, self.room = sim, host, port, room
        sim.decode_rooms.add(room)

    async def start(self, seq: Sequence) -> str:
        sim = self.sim
        try:
            await sim.fetch(self.host, self.port, self.room, seq)
        except RequestError:
            sim.engine.metrics.on_transfer_miss()
            raise
        await seq.receive_kv(transferred_as_cached=sim.pd.decode_cached_includes_transfer)
        return "transfer"

    def close(self) -> None:
        self.sim.decode_rooms.discard(self.room)
