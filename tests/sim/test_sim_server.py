"""`serve()`: graceful stop drains in-flight streams while `/health` answers 503."""

from __future__ import annotations

import asyncio

import aiohttp

from llmd.engines import get_adapter
from llmd.sim import SimConfig, serve


async def test_stop_drains_in_flight_streams(engine: str, http: aiohttp.ClientSession) -> None:
    cfg = SimConfig(engine=engine, port=0, time_scale=1.0, itl_ms=10,  # type: ignore[arg-type]
                    drain_timeout_s=10)
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    health = get_adapter(engine).probes.liveness.path  # /health on both engines
    async with asyncio.TaskGroup() as tg:
        server = tg.create_task(serve(cfg, stop, lambda _h, port: bound.set_result(port)))
        url = f"http://127.0.0.1:{await bound}"
        body = {"prompt": "drain me", "max_tokens": 40, "ignore_eos": True, "stream": True}
        async with http.post(url + "/v1/completions", json=body) as resp:
            first = await resp.content.readline()
            stop.set()
            async with http.get(url + health) as probe:
                assert probe.status == 503  # not ready while draining
            rest = await resp.read()
        assert first.startswith(b"data: ") and rest.rstrip().endswith(b"data: [DONE]")
        async with asyncio.timeout(10):
            await server
