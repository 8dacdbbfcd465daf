"""Helpers for gateway tests: real simulators, an in-process EPP, a real Envoy (127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmd.epp import EppSettings, Listening, parse_endpoint_flag, serve
from llmd.gateway import EnvoyGateway, GatewaySpec, LocalStack
from llmd.sim import SERVED_BY_HEADER, RunningSim, SimConfig

MODEL = "tiny"

SERVED_BY = SERVED_BY_HEADER


def sim_config(engine: str, **overrides: Any) -> SimConfig:
    """A zero-latency simulator on an ephemeral port (tests override the latency knobs)."""
    fields: dict[str, Any] = {"engine": engine, "model": MODEL, "port": 0, "time_scale": 0.0,
                              "drain_timeout_s": 0.2}
    return SimConfig(**(fields | overrides))


def flag(sim: RunningSim) -> str:
    """The `--endpoint` value for a simulator, labelled with its dialect."""
    return f"127.0.0.1:{sim.port},engine={sim.state.cfg.engine}"


def endpoint_id(sim: RunningSim) -> str:
    return f"127.0.0.1:{sim.port}"


@dataclass
class RunningEpp:
    listening: Listening
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listening.grpc_port}"

    async def shutdown(self) -> None:
        self.stop.set()
        async with asyncio.timeout(10):
            await self.task


@contextlib.asynccontextmanager
async def run_epp(endpoints: Sequence[str], **settings: Any) -> AsyncIterator[RunningEpp]:
    """The EPP in-process (serve() in a task) on ephemeral ports."""
    stop = asyncio.Event()
    ready: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    cfg = EppSettings(host="127.0.0.1", grpc_port=0, health_port=0, metrics_port=0,
                      endpoints=tuple(parse_endpoint_flag(e) for e in endpoints),
                      drain_timeout_s=0.5, **settings)
    task = asyncio.create_task(serve(cfg, stop, on_listening=ready.set_result), name="epp")
    try:
        async with asyncio.timeout(10):
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        yield RunningEpp(ready.result(), stop, task)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def run_gateway(**spec: Any) -> AsyncIterator[EnvoyGateway]:
    async with EnvoyGateway(GatewaySpec(host="127.0.0.1", port=0, **spec)) as gw:
        yield gw


async def wait_until(pred: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Poll an async predicate until it is true, or fail at the deadline."""
    async with asyncio.timeout(timeout_s):
        while not await pred():  # noqa: ASYNC110 (polling a condition under a deadline)
            await asyncio.sleep(0.02)


async def assert_completion_and_chat_answered(client: Any, fleet: set[str]) -> None:
    """One completions and one chat request through the gateway: answered by a fleet member."""
    done = await client.completions.with_raw_response.create(
        model=MODEL, prompt="Say hello", max_tokens=4)
    assert done.headers[SERVED_BY] in fleet and done.parse().choices[0].text
    chat = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    assert chat.headers[SERVED_BY] in fleet and chat.parse().choices[0].message.content


@contextlib.asynccontextmanager
async def supervised(stack: LocalStack) -> AsyncIterator[None]:
    """`stack.wait` (restarting children that die) in a task for the block, stopped and
    awaited on the way out."""
    stop = asyncio.Event()
    task = asyncio.create_task(stack.wait(stop), name="supervise")
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
