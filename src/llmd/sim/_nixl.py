"""vLLM's NIXL v2 handshake, simulated.

Prefill leg (`kv_transfer_params.do_remote_decode: true`, non-streaming, as llm-d's simulator
requires): compute the prompt, answer one token, and hold the prompt's blocks for `kv_hold_s`
under fresh block ids; the answer's `kv_transfer_params` name them plus this server's engine id
and address. Decode leg (`do_remote_prefill: true` with those params): pull the blocks from that
server with `POST /_llmd/kv/pull` (the stand-in for the NIXL read and its completion notice,
which releases them), pay the transfer instead of the prefill and report `transfer`. Params that
are malformed, unknown, expired or for another prompt make the decode leg prefill locally and
count `metric_names.pd_transfer_misses`, as vLLM does. Role `both` ignores the params (vLLM
without a KV connector).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmd._json import decode_json
from llmd.engines import PdProtocol
from llmd.errors import BadRequestError, NotFoundError, RequestError
from llmd.sim._pd import LOCAL, Leg, LocalLeg, RoomConflictError, Route, http_url
from llmd.sim.blocks import Allocation
from llmd.sim.config import SimConfig
from llmd.sim.engine import Engine, Sequence

__all__ = ["PULL_PATH", "NixlSim"]

log = logging.getLogger(__name__)

PULL_PATH = "/_llmd/kv/pull"


class _RemoteParams(BaseModel):
    """The `kv_transfer_params` a decode leg must carry (what a vLLM prefill answers)."""

    model_config = ConfigDict(extra="allow")

    do_remote_prefill: bool
    remote_engine_id: str = Field(min_length=1)
    remote_block_ids: list[int] = Field(min_length=1)
    remote_host: str = Field(min_length=1)
    remote_port: int = Field(gt=0, lt=65536)
    tp_size: int = Field(1, ge=1)


class _PullBody(BaseModel):
    remote_engine_id: str
    remote_block_ids: list[int]
    block_keys: list[int]
    prompt_tokens: int
    tokens: int = Field(ge=0, description="tokens the decode side reads (its cache has the rest)")


@dataclass(slots=True)
class _Hold:
    block_ids: tuple[int, ...]
    keys: tuple[int, ...]
    prompt_tokens: int
    alloc: Allocation
    timer: asyncio.TimerHandle


class NixlSim:
    """vLLM's P/D side of one simulated server (kv_both: either leg on a prefill/decode role)."""

    def __init__(self, cfg: SimConfig, pd: PdProtocol, engine: Engine) -> None:
        self.cfg, self.pd, self.engine = cfg, pd, engine
        self.engine_id = str(uuid.uuid4())
        self._holds: dict[int, _Hold] = {}  # first block id -> hold
        self._next_block = 0
        self._host, self._port = cfg.host, cfg.port
        self._session: aiohttp.ClientSession | None = None

    def leg(self, fields: Mapping[str, Any], stream: bool, path: str) -> Leg:
        params = fields.get("kv_transfer_params")
        if self.cfg.role == "both" or params is None:
            return LOCAL
        if not isinstance(params, dict):
            raise BadRequestError("kv_transfer_params must be an object",
                                  param="kv_transfer_params")
        if params.get("do_remote_decode"):
            if stream:
                raise BadRequestError("a prefill leg (kv_transfer_params.do_remote_decode) "
                                      "cannot stream; send stream=false", param="stream")
            return _PrefillLeg(self)
        if params.get("do_remote_prefill"):
            return _DecodeLeg(self, params)
        return LOCAL

    def routes(self) -> list[Route]:
        return [] if self.cfg.role == "both" else [("POST", PULL_PATH, self._pull)]

    @asynccontextmanager
    async def running(self, host: str, port: int) -> AsyncIterator[dict[str, int]]:
        self._host, self._port = host, port
        timeout = aiohttp.ClientTimeout(total=self.cfg.kv_pull_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                yield {}
            finally:
                self._session = None
                for first in list(self._holds):
                    self._release(first)

    def held_blocks(self) -> int:
        return sum(len(h.alloc.keys) for h in self._holds.values())

    def prefill_queue(self) -> int:
        return len(self._holds)

    def transfer_queue(self) -> int:
        return 0

    def hold(self, seq: Sequence) -> dict[str, Any]:
        """Pin `seq`'s prompt blocks for the decode peer; the `kv_transfer_params` to answer."""
        count = -(-seq.prompt_tokens // self.cfg.block_size)
        ids = tuple(range(self._next_block, self._next_block + count))
        self._next_block += count
        timer = asyncio.get_running_loop().call_later(self.cfg.kv_hold_s, self._expire, ids[0])
        self._holds[ids[0]] = _Hold(ids, tuple(seq.keys), seq.prompt_tokens,
                                    self.engine.pin(seq.keys), timer)
        return {"do_remote_prefill": True, "do_remote_decode": False,
                "remote_block_ids": list(ids), "remote_engine_id": self.engine_id,
                "remote_host": self._host, "remote_port": self._port, "tp_size": 1}

    def _expire(self, first: int) -> None:
        if first in self._holds:
            log.warning("blocks %d.. were never pulled within %g s; released", first,
                        self.cfg.kv_hold_s)
            self._release(first)

    def _release(self, first: int) -> None:
        hold = self._holds.pop(first)
        hold.timer.cancel()
        self.engine.unpin(hold.alloc)

    async def _pull(self, request: web.Request) -> web.Response:
        """The decode side reads held blocks; a successful read releases them."""
        try:
            body = _PullBody.model_validate(decode_json(await request.read()))
        except BadRequestError as exc:
            return _error(exc)
        except ValidationError as exc:
            return _error(BadRequestError(f"bad pull request: {exc}"))
        if body.remote_engine_id != self.engine_id:
            return _error(NotFoundError(f"engine {body.remote_engine_id!r} is not this server "
                                        f"({self.engine_id})"))
        hold = self._holds.get(body.remote_block_ids[0]) if body.remote_block_ids else None
        if hold is None or list(hold.block_ids) != body.remote_block_ids:
            return _error(NotFoundError("no held blocks with those ids (expired, already "
                                        "pulled, or never held)"))
        if list(hold.keys) != body.block_keys or hold.prompt_tokens != body.prompt_tokens:
            return _error(RoomConflictError("the held blocks belong to a different prompt"))
        self._release(hold.block_ids[0])
        self.engine.metrics.on_transfer(sent=body.tokens)
        return web.json_response({"prompt_tokens": hold.prompt_tokens})

    async def pull(self, params: _RemoteParams, seq: Sequence) -> str | None:
        """Read the peer's blocks for `seq`; None on success, else why it failed."""
        assert self._session is not None, "pull outside running()"
        url = http_url(params.remote_host, params.remote_port, PULL_PATH)
        body = {"remote_engine_id": params.remote_engine_id,
                "remote_block_ids": params.remote_block_ids, "block_keys": list(seq.keys),
                "prompt_tokens": seq.prompt_tokens,
                "tokens": seq.prompt_tokens - seq.local_hit_tokens()}
        try:
            async with self._session.post(url, json=body) as resp:
                if resp.status == 200:
                    return None
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{url}: {exc.__class__.__name__}"
        try:
            text = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        return f"{url} answered {resp.status}: {text}"


def _error(exc: RequestError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


class _PrefillLeg(LocalLeg):
    prefill_only: ClassVar[bool] = True

    def __init__(self, sim: NixlSim) -> None:
        self.sim = sim

    async def finish(self, seq: Sequence) -> dict[str, Any]:
        return {"kv_transfer_params": self.sim.hold(seq)}


class _DecodeLeg(LocalLeg):

    def __init__(self, sim: NixlSim, params: dict[str, Any]) -> None:
        self.sim, self.params = sim, params

    async def start(self, seq: Sequence) -> str:
        sim = self.sim
        try:
            params: _RemoteParams | None = _RemoteParams.model_validate(self.params)
            why = None
        except ValidationError as exc:
            params, why = None, f"invalid kv_transfer_params: {exc.errors()[0]['msg']}"
        if params is not None:
            why = await sim.pull(params, seq)
        if why is None:
            await seq.receive_kv(transferred_as_cached=sim.pd.decode_cached_includes_transfer)
            return "transfer"
        log.warning("KV transfer failed, prefilling locally: %s", why)
        sim.engine.metrics.on_transfer_miss()
        await seq.prefill()
        return "local"
