"""A tiny real HTTP server on loopback that serves one fixed page (e.g. a metrics page)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_text(path: str, text: str | bytes, *, status: int = 200, port: int = 0,
                     delay_s: float = 0.0) -> AsyncIterator[int]:
    """Serve `text` at `path` on 127.0.0.1 with `status`, each answer after `delay_s`; yields
    the port (`port` 0: an ephemeral one; a fixed one is bound with SO_REUSEADDR, so a server
    can come back where an earlier one was)."""

    async def handler(_: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        body = text if isinstance(text, bytes) else text.encode()
        return web.Response(body=body, status=status, content_type="text/plain",
                            charset="utf-8")

    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    try:
        await web.SockSite(runner, sock).start()
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
