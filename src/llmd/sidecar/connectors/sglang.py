"""SGLang bootstrap P/D: both legs at once, joined by a random 63-bit bootstrap room."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from llmd.sidecar._sse import cached_tokens_of
from llmd.sidecar.connectors.base import PdRequest
from llmd.sidecar.upstream import LegResult

__all__ = ["SGLangConnector", "bootstrap_room"]

log = logging.getLogger(__name__)

_ROOM_BITS = 63  # SGLang stores rooms as int64; its own routers draw from [0, 2**63 - 1]
_CACHED_WAIT_S = 30.0


def bootstrap_room(dp_size: int = 1, rank: int | None = None) -> int:
    """A uniformly random room whose value mod `dp_size` is the prefill DP rank."""
    if dp_size <= 1:
        return secrets.randbits(_ROOM_BITS)
    chosen = secrets.randbelow(dp_size) if rank is None else rank
    base = secrets.randbits(_ROOM_BITS) // dp_size
    return base * dp_size + chosen


class SGLangConnector:
    name: ClassVar[str] = "sglang"

    def __init__(self, bootstrap_port: int, dp_size: int) -> None:
        self.bootstrap_port = bootstrap_port
        self.dp_size = dp_size

    async def run(self, req: PdRequest) -> web.StreamResponse:
        room = bootstrap_room(self.dp_size)
        legs: dict[str, Any] = {
            **req.body,
            "bootstrap_host": req.prefill.host,
            "bootstrap_port": self.bootstrap_port,
            "bootstrap_room": room,
        }
        # The prefill leg is read whole (its usage carries the cached tokens); decode streams.
        prefill_body = {**legs, "stream": False}
        prefill_body.pop("stream_options", None)
        prefill = asyncio.create_task(
            req.upstream.prefill(req.prefill, req.path, prefill_body, req.headers),
            name=f"sglang-prefill-{room}")
        decode_resp: list[aiohttp.ClientResponse] = []

        decode: asyncio.Task[web.StreamResponse] | None = None

        def close_decode_on_failure(task: asyncio.Task[LegResult]) -> None:
            if task.cancelled() or task.exception() is not None or not task.result().ok:
                for resp in decode_resp:
                    resp.close()  # unblocks the relay; `failure()` then reports the prefill error
                if not decode_resp and decode is not None:
                    # The decode server has not answered yet (it may wait for a room that will
                    # never arrive): stop waiting for it, nothing has been sent to the client.
                    decode.cancel()

        def failure() -> web.Response | None:
            if not prefill.done():
                return None
            if prefill.cancelled() or prefill.exception() is not None:
                return web.json_response(
                    {"error": {"message": "prefill leg failed", "type": "UpstreamError",
                               "param": None, "code": 502}}, status=502)
            result = prefill.result()
            return None if result.ok else result.to_response()

        def on_open(resp: aiohttp.ClientResponse) -> None:
            decode_resp.append(resp)
            if prefill.done():
                close_decode_on_failure(prefill)

        async def cached_tokens() -> int | None:
            try:
                result = await asyncio.wait_for(asyncio.shield(prefill), _CACHED_WAIT_S)
            except TimeoutError:
                return None
            return cached_tokens_of(result.payload) if result.ok else None

        decode = asyncio.create_task(
            req.upstream.stream_decode(
                req.http, "POST", req.path, req.headers, json.dumps(legs).encode(),
                cached_tokens=cached_tokens, failure=failure, on_open=on_open),
            name=f"sglang-decode-{room}")
        prefill.add_done_callback(close_decode_on_failure)
        try:
            await asyncio.wait({decode})
        finally:
            # The client is gone, or decode is finished and the prefill's answer is no longer
            # needed. `wait` (unlike awaiting the tasks) lets our own cancellation through.
            pending = [task for task in (decode, prefill) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if decode.cancelled():
            return failure() or web.json_response(
                {"error": {"message": "decode leg cancelled", "type": "UpstreamError",
                           "param": None, "code": 502}}, status=502)
        return decode.result()
