"""In-process P/D stacks for sidecar tests: prefill and decode simulators of one engine's
dialect and the sidecar's aiohttp app in front of the decode one, all on loopback with
ephemeral ports; plus prefill stand-ins that fail at the connection level."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmd._http import listen_socket
from llmd.engines import get_adapter
from llmd.sidecar import SidecarConfig, build_app
from llmd.sim import RunningSim, SimConfig, running_sim

MODEL = "llmd-sim"


@dataclass(frozen=True, slots=True)
class PdStack:
    prefill: RunningSim
    decode: RunningSim
    url: str
    """The sidecar's base URL."""

    @property
    def target(self) -> str:
        """The prefill sim as `x-prefiller-host-port` names it."""
        return self.prefill.url.removeprefix("http://")


@asynccontextmanager
async def running_sidecar(cfg: SidecarConfig) -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(cfg), access_log=None, handle_signals=False)
    await runner.setup()
    sock = listen_socket("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def pd_stack(engine: str, *, prefill: dict[str, Any] | None = None,
                   allow: Callable[[RunningSim], tuple[str, ...]] | None = None,
                   **sidecar: Any) -> AsyncIterator[PdStack]:
    """A prefill sim (extra `SimConfig` fields from `prefill`), a decode sim and a sidecar
    (extra `SidecarConfig` fields from `sidecar`) for `engine`, zero latency. With `allow`,
    SSRF protection is on and `allow(prefill sim)` is its `--prefill-allow` list."""
    base = {"engine": engine, "port": 0, "time_scale": 0.0, "bootstrap_port": 0,
            "host": "127.0.0.1"}
    async with AsyncExitStack() as stack:
        p = await stack.enter_async_context(running_sim(SimConfig(
            **{**base, "role": "prefill", **(prefill or {})})))
        d = await stack.enter_async_context(running_sim(SimConfig(**base, role="decode")))
        if allow is not None:
            sidecar = {"enable_ssrf_protection": True, "prefill_allowlist": allow(p), **sidecar}
        cfg = SidecarConfig(**{
            "host": "127.0.0.1", "port": 0, "model_server_port": d.port,
            "kv_connector": get_adapter(engine).sidecar_connector,
            "sglang_bootstrap_port": p.side_ports.get("bootstrap", 8998), **sidecar})
        url = await stack.enter_async_context(running_sidecar(cfg))
        yield PdStack(p, d, url)


def refused_target(host: str = "127.0.0.1") -> str:
    """`host:port` where nothing listens: connecting is refused at once."""
    sock = listen_socket(host, 0)
    port = sock.getsockname()[1]
    sock.close()
    return f"{host}:{port}"


@asynccontextmanager
async def blackhole_target() -> AsyncIterator[str]:
    """`host:port` whose connects hang until the client's connect timeout: a listener that
    never accepts, its backlog already full, so the kernel drops further SYNs (as a firewall
    or a vanished pod IP does)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield f"127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@asynccontextmanager
async def resetting_target() -> AsyncIterator[str]:
    """`host:port` of a server that reads a request and resets the connection before any
    answer (a prefill pod crashing mid-request)."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
