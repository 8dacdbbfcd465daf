"""The sidecar's HTTP client side: one pooled session; pass-through, prefill legs, decode."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from llmd.errors import error_body
from llmd.sidecar._sse import SseUsageRewriter, rewrite_json_body, sse_error_event
from llmd.sidecar.config import SidecarConfig
from llmd.sidecar.hostport import HostPort

__all__ = ["RETRIABLE_HEADER", "LegResult", "Upstream", "json_error"]

log = logging.getLogger(__name__)

# Hop-by-hop headers and those the sidecar recomputes; never copied between legs.
_DROP = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "trailer", "upgrade", "x-prefiller-host-port", "x-prefiller-url",
})
_RETRYABLE = frozenset({502, 503, 504})
# Failures that prove the prefill server never saw the request ...
_NOT_REACHED = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# ... and those that mean it dropped the connection; before its response headers, the request
# is unanswered and another server may take it.
_RESET = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


_GONE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)

RETRIABLE_HEADER = "x-llmd-retriable"
"""On a sidecar's error answer: the decode engine refused the connection or dropped it before
answering, and nothing reached the client, so a gateway may send the request to another
endpoint; llmd's Envoy retries on it."""


def json_error(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


def forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _DROP)


@dataclass(frozen=True, slots=True)
class LegResult:
    """A buffered prefill answer: status, parsed JSON (None if not JSON) and the raw body.

    `unreached`: the prefill server never answered (connection refused, connect timeout, name
    not resolved, or the connection reset before its response headers), so the request may go
    to another prefill server.
    """

    status: int
    payload: Any
    raw: bytes
    content_type: str
    unreached: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_response(self) -> web.Response:
        """The prefill failure as the client sees it: same status, same body."""
        if self.payload is not None:
            return web.Response(status=self.status, body=self.raw, content_type="application/json")
        return json_error(self.status, self.raw.decode(errors="replace") or "prefill failed")


class Upstream:
    """All upstream traffic of one sidecar, through one bounded, pooled `ClientSession`."""

    def __init__(self, cfg: SidecarConfig, session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.session = session
        self.decoder = HostPort(cfg.model_server_host, cfg.model_server_port)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)
        self._prefill_timeout = aiohttp.ClientTimeout(
            total=cfg.prefill_timeout_s, connect=cfg.connect_timeout_s)

    @staticmethod
    def new_session(cfg: SidecarConfig) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=cfg.max_connections,
                                         limit_per_host=cfg.max_connections)
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def pass_through(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Send the request unchanged to the local engine and stream its answer back."""
        return await self.stream_decode(request, request.method, request.path_qs,
                                        forward_headers(request.headers), body)

    async def prefill(self, target: HostPort, path: str, payload: dict[str, Any],
                      headers: Mapping[str, str]) -> LegResult:
        """POST the prefill leg, buffered; retry on 502/503/504 and refused connections."""
        data = json.dumps(payload).encode()
        attempt = 0
        while True:
            result = await self._post_once(target, path, data, headers)
            if result.ok or result.status not in _RETRYABLE:
                return result
            if attempt >= self.cfg.prefill_max_retries:
                return result
            attempt += 1
            log.info("prefill %s answered %d, retry %d/%d", target.netloc(), result.status,
                     attempt, self.cfg.prefill_max_retries)
            await asyncio.sleep(self.cfg.prefill_retry_backoff_s * 2 ** (attempt - 1))

    async def _post_once(self, target: HostPort, path: str, data: bytes,
                         headers: Mapping[str, str]) -> LegResult:
        hdrs = CIMultiDict(headers)
        hdrs["content-type"] = "application/json"
        answered = False
        try:
            async with self.session.post(target.url(path), data=data, headers=hdrs,
                                         timeout=self._prefill_timeout) as resp:
                answered = True
                raw = await resp.read()
                ctype = resp.content_type
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            unreached = isinstance(exc, _NOT_REACHED) or (
                not answered and isinstance(exc, _RESET) and not isinstance(exc, TimeoutError))
            return _failed(503, f"prefill endpoint {target.netloc()} unreachable: "
                                f"{exc.__class__.__name__}", unreached)
        except aiohttp.ClientError as exc:  # a broken answer: truncated body, bad framing
            return _failed(502, f"prefill endpoint {target.netloc()} failed: "
                                f"{exc.__class__.__name__}", False)
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return LegResult(status, payload, raw, ctype)

    async def stream_decode(
        self,
        request: web.Request,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: bytes,
        *,
        cached_tokens: Callable[[], Awaitable[int | None]] | None = None,
        failure: Callable[[], web.Response | None] | None = None,
        on_open: Callable[[aiohttp.ClientResponse], None] | None = None,
    ) -> web.StreamResponse:
        """Send one request to the local engine and stream the answer to the client.

        `cached_tokens` (awaited only when a usage object passes by) supplies the value that
        replaces `usage.prompt_tokens_details.cached_tokens`. `failure` is polled when the
        upstream ends early: a non-None response there (a failed prefill) replaces the answer.
        `on_open` receives the upstream response so a watcher can close it.
        """
        url = self.decoder.url(path)
        try:
            async with self.session.request(method, url, data=data or None, headers=headers,
                                            timeout=self._stream_timeout) as up:
                if on_open is not None:
                    on_open(up)
                return await self._relay(request, up, cached_tokens, failure)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            failed = failure() if failure else None
            if failed is not None:
                return failed
            refused = isinstance(exc, aiohttp.ClientConnectorError)
            answer = json_error(503 if refused else 502, f"model server "
                                f"{self.decoder.netloc()}: {exc.__class__.__name__}")
            if isinstance(exc, _GONE) and not isinstance(exc, TimeoutError):
                # Refused, or the connection dropped before an answer reached the client (the
                # engine died, or a pooled connection to a dead one): another endpoint may
                # serve it, as Envoy retries a reset before response headers.
                answer.headers[RETRIABLE_HEADER] = "decode-engine-unreachable"
            return answer

    async def _relay(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        cached_tokens: Callable[[], Awaitable[int | None]] | None,
        failure: Callable[[], web.Response | None] | None,
    ) -> web.StreamResponse:
        headers = forward_headers(up.headers)
        is_sse = up.content_type == "text/event-stream"
        if not is_sse:
            raw = await up.read()
            failed = failure() if failure else None
            if failed is not None:
                return failed
            if cached_tokens is not None and up.status < 300 and b'"usage"' in raw:
                value = await cached_tokens()
                if value is not None:
                    raw = rewrite_json_body(raw, value)
            return web.Response(status=up.status, body=raw, headers=headers)
        # The client's headers go out with the first byte of the stream, not before: until
        # then a failed prefill is a plain error status, and the request may still be retried.
        out = web.StreamResponse(status=up.status, headers=headers)

        async def send(piece: bytes) -> None:
            if not out.prepared:
                await out.prepare(request)
            await out.write(piece)

        rewriter = SseUsageRewriter() if cached_tokens is not None else None
        try:
            async for chunk in up.content.iter_any():
                if rewriter is None or cached_tokens is None:
                    await send(chunk)
                    continue
                value = await cached_tokens() if rewriter.needs_usage(chunk) else None
                piece = rewriter.feed(chunk, value)
                if piece:
                    await send(piece)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
            pass  # judged below: a failed prefill, or a broken decode stream
        if rewriter is not None and (rest := rewriter.flush()):
            await send(rest)
        failed = failure() if failure else None
        if failed is not None:
            if not out.prepared:
                return failed
            await out.write(sse_error_event(failed.status, _message_of(failed)))
        elif not up.content.at_eof():
            await send(sse_error_event(502, "model server stream ended early"))
        if not out.prepared:
            await out.prepare(request)
        await out.write_eof()
        return out


def _failed(status: int, message: str, unreached: bool) -> LegResult:
    body = error_body(status, message)
    return LegResult(status, body, json.dumps(body).encode(), "application/json", unreached)


def _message_of(resp: web.Response) -> str:
    try:
        return str(json.loads(resp.body)["error"]["message"])  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError):
        return f"prefill failed with status {resp.status}"
