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
from llmd.sidecar.config import connector_adapter
from llmd.sidecar.connectors.base import PdRequest, log_fallback
from llmd.sidecar.hostport import HostPort
from llmd.sidecar.upstream import RETRIABLE_HEADER, LegResult

__all__ = ["SGLangConnector", "bootstrap_room"]

log = logging.getLogger(__name__)

_ROOM_BITS = 63  # SGLang stores rooms as int64; its own routers draw from [0, 2**63 - 1]
_CACHED_WAIT_S = 30.0
_PREFILL_VERDICT_S = 2.0
"""How long a decode error that reached no client waits for the prefill leg's own outcome."""


def _failed_unsent(decode: asyncio.Task[web.StreamResponse]) -> bool:
    """The decode server answered a server error and the client got nothing (a decode server
    that could not be reached is the gateway's to retry at once: `RETRIABLE_HEADER`)."""
    if decode.cancelled() or decode.exception() is not None:
        return False
    response = decode.result()
    return (response.status >= 500 and not response.prepared
            and RETRIABLE_HEADER not in response.headers)


def bootstrap_room(dp_size: int = 1, rank: int | None = None) -> int:
    """A uniformly random room whose value mod `dp_size` is the prefill DP rank."""
    if dp_size <= 1:
        return secrets.randbits(_ROOM_BITS)
    chosen = secrets.randbelow(dp_size) if rank is None else rank
    base = secrets.randbits(_ROOM_BITS) // dp_size
    return base * dp_size + chosen


class SGLangConnector:
    name: ClassVar[str] = "sglang"
    request_fields: ClassVar[tuple[str, ...]] = connector_adapter(name).pd.request_fields
    """The leg fields as the SGLang adapter's P/D protocol declares them, in the order host,
    port, room (`bootstrap_host`, `bootstrap_port`, `bootstrap_room`)."""

    def __init__(self, bootstrap_port: int, dp_size: int) -> None:
        self.bootstrap_port = bootstrap_port
        self.dp_size = dp_size

    async def run(self, req: PdRequest) -> web.StreamResponse:
        """Run the pair with each candidate in turn while the prefill leg was not reached and
        nothing reached the client; every new pair gets a fresh room (the first one may have
        been claimed by a prefill that reset)."""
        for attempt, target in enumerate(req.prefills):
            response, prefill = await self._pair(req, target)
            last = attempt + 1 == len(req.prefills)
            if last or prefill is None or not prefill.unreached or response.prepared:
                return response
            log_fallback(req, attempt, prefill)
        raise AssertionError("unreachable: the last candidate always returns")

    async def _pair(self, req: PdRequest, target: HostPort
                    ) -> tuple[web.StreamResponse, LegResult | None]:
        """One prefill/decode pair: the client's answer and the prefill leg's result (None
        when the prefill leg did not finish)."""
        host_field, port_field, room_field = self.request_fields
        room = bootstrap_room(self.dp_size)
        legs: dict[str, Any] = {
            **req.body,
            host_field: target.host,
            port_field: self.bootstrap_port,
            room_field: room,
        }
        # The prefill leg is read whole (its usage carries the cached tokens); decode streams.
        prefill_body = {**legs, "stream": False}
        prefill_body.pop("stream_options", None)
        prefill = asyncio.create_task(
            req.upstream.prefill(target, req.path, prefill_body, req.headers),
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
            if not prefill.done() and _failed_unsent(decode):
                # The decode server failed before answering anything, perhaps because the
                # prefill it pulls the KV from just died: let the prefill leg tell, so that a
                # prefill that was never really reached hands the request over to the next.
                await asyncio.wait({prefill}, timeout=_PREFILL_VERDICT_S)
        finally:
            # The client is gone, or decode is finished and the prefill's answer is no longer
            # needed. `wait` (unlike awaiting the tasks) lets our own cancellation through.
            pending = [task for task in (decode, prefill) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        leg = None
        if not prefill.cancelled() and prefill.exception() is None:
            leg = prefill.result()
        if decode.cancelled():
            return failure() or web.json_response(
                {"error": {"message": "decode leg cancelled", "type": "UpstreamError",
                           "param": None, "code": 502}}, status=502), leg
        return decode.result(), leg
