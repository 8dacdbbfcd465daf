"""Helpers for gateway tests: tiny OpenAI backends, an in-process EPP, a real Envoy (127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmd.engines import get_adapter
from llmd.epp import EppSettings, Listening, parse_endpoint_flag, serve
from llmd.gateway import EnvoyGateway, GatewaySpec

SERVED_BY = "x-served-by"


@dataclass
class Backend:
    """An OpenAI-ish server that answers at once, says who served, and exports `engine`
    metrics whose queue length the test sets."""

    engine: str
    waiting: int = 0
    port: int = 0
    served: int = 0
    runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"127.0.0.1:{self.port}"

    def flag(self) -> str:
        return f"{self.id},engine={self.engine}"

    def metrics_page(self) -> str:
        names = get_adapter(self.engine).metric_names
        return (f"# TYPE {names.waiting} gauge\n{names.waiting} {self.waiting}\n"
                f"# TYPE {names.running} gauge\n{names.running} 0\n"
                f"# TYPE {names.kv_usage} gauge\n{names.kv_usage} 0.1\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()

    def _headers(self) -> dict[str, str]:
        self.served += 1
        return {SERVED_BY: self.id}

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({
            "id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": self.id, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }, headers=self._headers())

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.id}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }, headers=self._headers())

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []}, headers=self._headers())

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(text=self.metrics_page())


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
        while not await pred():
            await asyncio.sleep(0.02)
