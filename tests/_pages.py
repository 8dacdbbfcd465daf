"""A tiny real HTTP server on loopback that serves one fixed text page (e.g. a metrics page)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve_text(path: str, text: str) -> AsyncIterator[int]:
    """Serve `text` at `path` on 127.0.0.1; yields the ephemeral port."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=text)

    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield int(sock.getsockname()[1])
    finally:
        await runner.cleanup()
