"""Small HTTP-server helpers shared by llmd's aiohttp servers (simulators, sidecar).

`listen_socket`: a bound socket for `web.SockSite`. `JsonErrorRunner`: the runner llmd's servers
serve with, with header limits no lower than Envoy's and the errors aiohttp answers itself
(before any handler runs) as OpenAI JSON, with no traceback.

aiohttp's defaults refuse a request line or header field over 8,190 bytes with a plain-text 400
and log the parser's exception with its traceback at ERROR. The gateway in front (Envoy,
`max_request_headers_kb` 60 by default, at most 100 headers) passes headers up to 60 KB, and
real vLLM (uvicorn + httptools) sets no limit at all, so a request the gateway accepts must not
fail here: a request line or header field may be up to `MAX_HEADER_LINE_BYTES` (64 KiB),
aiohttp's default of 128 headers stays. Above that, and for any other request the HTTP parser
rejects (bad method, bad chunking, a NUL in a header), `_Protocol.handle_error` answers JSON:
431 `RequestHeaderFieldsTooLargeError` for too long a line or too many headers (Envoy's status
for headers over its limit), 400 `BadRequestError` otherwise, logged at DEBUG without the
offending bytes (they may hold credentials).

aiohttp has no public hook for those answers: `RequestHandler.handle_error` builds them, and
the `Server` (the protocol factory behind `AppRunner`) instantiates `RequestHandler` itself. So
the server the runner makes is switched to `_Server`, whose connections are `_Protocol`s.
`tests/sim/test_sim_hostile.py` pins the behaviour, so an aiohttp upgrade that moves these
internals fails a test rather than reverting to plain text.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from llmd.errors import error_body

__all__ = ["MAX_HEADER_LINE_BYTES", "JsonErrorRunner", "listen_socket"]

log = logging.getLogger(__name__)

def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for `web.SockSite` (port 0 picks a free one; read it back with
    `getsockname()`). OSError names the address when it is taken or invalid."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


MAX_HEADER_LINE_BYTES = 64 * 1024
"""Longest request line or header field (name and value) accepted: Envoy's whole default
header budget (60 KiB) fits in one."""

_TOO_MANY_HEADERS = "Too many headers"  # aiohttp raises a plain BadHttpMessage with this text


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` with header limits no lower than Envoy's and JSON parse-error answers,
    each carrying `headers()` (no route ran, so no `on_response_prepare` hook adds them)."""

    def __init__(self, app: web.Application, *,
                 headers: Callable[[], Mapping[str, str]] = dict, **kwargs: Any) -> None:
        super().__init__(app, max_line_size=MAX_HEADER_LINE_BYTES,
                         max_field_size=MAX_HEADER_LINE_BYTES, **kwargs)
        self._error_headers = headers

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.error_headers = self._error_headers
        return server


class _Server(web.Server):
    error_headers: Callable[[], Mapping[str, str]]

    def __call__(self) -> web.RequestHandler:
        # What `web.Server.__call__` does, with the subclass.
        return _Protocol(self, self.error_headers, loop=self._loop, **self._kwargs)


class _Protocol(web.RequestHandler):
    def __init__(self, manager: web.Server, error_headers: Callable[[], Mapping[str, str]],
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._error_headers = error_headers

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's last-resort answer (parse errors, handler failures the middleware did not
        turn into JSON): OpenAI JSON, and a traceback only for a 5xx (a server bug)."""
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
            text = f"internal server error ({type(exc).__name__})"
        elif isinstance(exc, LineTooLong) or _TOO_MANY_HEADERS in f"{message} {exc}":
            status = 431
            text = (f"request header fields too large: a request line or header field is over "
                    f"{MAX_HEADER_LINE_BYTES} bytes, or there are over {self.max_headers} "
                    f"headers")
        else:
            text = f"malformed HTTP request ({type(exc).__name__})"
        if status < 500:  # the client's fault: no traceback, and never the bytes it sent
            log.debug("answered %d to a request the HTTP parser rejected: %s", status,
                      type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error can be sent")
        body = json.dumps(error_body(status, text), separators=(",", ":"))
        resp = web.Response(status=status, text=body, content_type="application/json",
                            headers=self._error_headers())
        resp.force_close()
        return resp
