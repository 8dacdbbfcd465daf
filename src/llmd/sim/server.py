"""Running a simulator: `serve()` for `llmd sim`, `running_sim()` for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry

from llmd._http import JsonErrorRunner, listen_socket
from llmd.engines import get_adapter
from llmd.kvcache import load_tokenizer
from llmd.sim._bootstrap import BootstrapSim
from llmd.sim._nixl import NixlSim
from llmd.sim._pd import PdSim
from llmd.sim._state import SimState
from llmd.sim.app import SERVED_BY_HEADER, build_app
from llmd.sim.config import SimConfig
from llmd.sim.engine import Engine
from llmd.sim.kv_events import KvEventPublisher, KvEventRecorder
from llmd.sim.metrics import SimMetrics

__all__ = ["RunningSim", "build_state", "running_sim", "serve"]

log = logging.getLogger(__name__)

_LAG_PERIOD_S = 0.1
# Each engine's P/D handshake (`adapter.pd.handoff`) and the simulator that speaks it.
_PD_SIMS: dict[str, type[NixlSim] | type[BootstrapSim]] = {
    "kv-transfer-params": NixlSim,
    "bootstrap-room": BootstrapSim,
}


def build_state(cfg: SimConfig) -> SimState:
    """Wire one simulator's objects (adapter, tokenizer, registry, metrics, engine)."""
    adapter = get_adapter(cfg.engine)
    tokenizer = load_tokenizer(cfg.tokenizer)
    registry = CollectorRegistry(auto_describe=True)
    metrics = SimMetrics(registry, adapter.metric_names, cfg.served_name, cfg.block_size,
                         cfg.kv_cache_blocks, adapter.pd)
    publisher, recorder = None, None
    events = cfg.kv_events_config
    if events is not None and events.enabled:
        publisher = KvEventPublisher(adapter.kv_events, events, metrics)
        # vLLM derives its first parent hash from the process's PYTHONHASHSEED, as here.
        recorder = KvEventRecorder(adapter.kv_events, events, cfg.block_size, publisher,
                                   hash_seed=os.environ.get("PYTHONHASHSEED"))
    engine = Engine(cfg, tokenizer, metrics, kv_events=recorder)
    pd: PdSim = _PD_SIMS[adapter.pd.handoff](cfg, adapter.pd, engine)
    metrics.bind_pd(pd.held_blocks, pd.prefill_queue, pd.transfer_queue)
    return SimState(cfg, adapter, tokenizer, registry, metrics, engine, random.Random(cfg.seed),
                    pd, publisher)


class RunningSim:
    """A started simulator: its address, state, base URL and side servers' ports by name
    (`{"bootstrap": port}` for an SGLang prefill server)."""

    def __init__(self, state: SimState, host: str, port: int,
                 side_ports: dict[str, int] | None = None) -> None:
        self.state, self.host, self.port = state, host, port
        self.side_ports = side_ports or {}

    @property
    def kv_events(self) -> KvEventPublisher | None:
        """The KV-event publisher (its `endpoint`/`replay_endpoint` in use), if publishing."""
        return self.state.kv_events

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def running_sim(cfg: SimConfig) -> AsyncIterator[RunningSim]:
    """Serve `cfg` on this event loop until the block exits; bind errors are OSError.

    The KV-event publisher, if any, runs before the server listens and stops after it has
    drained, so every cache change of every request is published."""
    state = build_state(cfg)
    async with AsyncExitStack() as stack:
        if state.kv_events is not None:
            await stack.enter_async_context(state.kv_events.running())
        async with _serving(cfg, state) as sim:
            yield sim


@asynccontextmanager
async def _serving(cfg: SimConfig, state: SimState) -> AsyncIterator[RunningSim]:
    app = build_app(state)
    app.cleanup_ctx.append(lambda app: _lag_watcher(state))
    runner = JsonErrorRunner(app, headers=lambda: {SERVED_BY_HEADER: state.served_by},
                       access_log=None, handle_signals=False, handler_cancellation=True,
                       shutdown_timeout=cfg.drain_timeout_s)
    await runner.setup()
    try:
        sock = listen_socket(cfg.host, cfg.port)
    except OSError:
        await runner.cleanup()
        raise
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    port = sock.getsockname()[1]
    state.served_by = f"{cfg.host}:{port}"
    async with AsyncExitStack() as stack:
        # Exit order: the server drains first, then the P/D session and side servers close.
        stack.push_async_callback(runner.cleanup)
        side_ports = await stack.enter_async_context(state.pd.running(cfg.host, port))
        stack.push_async_callback(runner.cleanup)
        try:
            yield RunningSim(state, cfg.host, port, side_ports)
        finally:
            state.ready = False


async def _lag_watcher(state: SimState) -> AsyncIterator[None]:
    """The loop-lag task lives exactly as long as the app (aiohttp `cleanup_ctx`)."""
    task = asyncio.create_task(_watch_loop_lag(state), name="sim-loop-lag")
    yield
    task.cancel()
    await asyncio.wait([task])


async def _watch_loop_lag(state: SimState) -> None:
    """Observe how late a periodic timer fires: the event loop's lag under load."""
    loop = asyncio.get_running_loop()
    hist = state.metrics.loop_lag
    while True:
        due = loop.time() + _LAG_PERIOD_S
        await asyncio.sleep(_LAG_PERIOD_S)
        hist.observe(max(0.0, loop.time() - due))


async def serve(cfg: SimConfig, stop: asyncio.Event,
                on_listening: Callable[[str, int], None] | None = None,
                on_side_listening: Callable[[str, str, int], None] | None = None) -> None:
    """Run one simulator until `stop` is set, then drain for up to `drain_timeout_s`.

    `on_listening(host, port)` is called once serving, then `on_side_listening(name, host,
    port)` for each side server (the SGLang prefill bootstrap server), in that order.
    """
    async with running_sim(cfg) as sim:
        log.info("llmd sim: %s dialect, role %s, model %s, %d KV blocks x %d tokens, "
                 "time scale %g", cfg.engine, cfg.role, cfg.served_name, cfg.kv_cache_blocks,
                 cfg.block_size, cfg.time_scale)
        if on_listening:
            on_listening(sim.host, sim.port)
        if on_side_listening:
            for name, side_port in sim.side_ports.items():
                on_side_listening(name, sim.host, side_port)
        await stop.wait()
        sim.state.ready = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.drain_timeout_s):
                await sim.state.engine.idle.wait()
