"""Flow control end to end: a real Envoy, the EPP in-process with the `flowControl` feature
gate, one simulator of each engine.

Saturation: `concurrency-detector` with `maxConcurrency: 1`, so one running request saturates
the one-endpoint pool. Requests run for `max_tokens` × 10 ms (`ignore_eos`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _gateway_stack import MODEL, flag, run_epp, run_gateway, sim_config, wait_until

from llmd.gateway import EnvoyGateway
from llmd.sim import RunningSim, running_sim

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: concurrency-detector
  parameters: {maxConcurrency: 1}
flowControl:
  defaultRequestTTL: 3s
  saturationDetector: {pluginRef: concurrency-detector}
  priorityBands:
  - {priority: -1, maxRequests: 4}
objectives:
- {name: batch, priority: -1}
- {name: premium, priority: 10}
"""
ITL_MS = 10.0


def _body(max_tokens: int) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "Say hello", "max_tokens": max_tokens,
                       "ignore_eos": True}).encode()


async def _post(http: aiohttp.ClientSession, url: str, max_tokens: int, objective: str
                ) -> tuple[int, dict[str, str], Any]:
    sent = {"content-type": "application/json", "x-gateway-inference-objective": objective}
    async with http.post(url + "/v1/completions", data=_body(max_tokens),
                         headers=sent) as resp:
        headers = {k.lower(): v for k, v in resp.headers.items()}
        return resp.status, headers, await resp.json(content_type=None)


async def _metric(http: aiohttp.ClientSession, port: int, name: str, **labels: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


@contextlib.asynccontextmanager
async def _stack(engine: str, mode: str = "buffered"
                 ) -> AsyncIterator[tuple[RunningSim, Any, EnvoyGateway]]:
    cfg = sim_config(engine, time_scale=1.0, itl_ms=ITL_MS, prefill_overhead_ms=1.0)
    async with running_sim(cfg) as sim, \
            run_epp([flag(sim)], config_text=CONFIG) as running, \
            run_gateway(epp=running.address, ext_proc_mode=mode) as gw:
        yield sim, running, gw


async def test_low_priority_is_queued_then_shed_while_high_priority_is_served(
        engine: str, http: aiohttp.ClientSession) -> None:
    """A (premium, 1 s) occupies the endpoint; a batch and then a premium request queue; when
    A ends the premium one goes first and runs 3 s, so the batch one sheds at its 3 s TTL."""
    async with _stack(engine) as (sim, epp, gw):
        port = epp.listening.metrics_port
        first = asyncio.create_task(_post(http, gw.url, 100, "premium"))

        async def running() -> bool:
            return await _metric(http, port, "llmd_epp_endpoint_running_requests") == 1

        await wait_until(running)
        low = asyncio.create_task(_post(http, gw.url, 1, "batch"))

        async def low_queued() -> bool:
            size = "llm_d_epp_flow_control_queue_size"
            return await _metric(http, port, size, priority="-1") == 1

        await wait_until(low_queued)
        high = asyncio.create_task(_post(http, gw.url, 300, "premium"))

        async def high_queued() -> bool:
            size = "llm_d_epp_flow_control_queue_size"
            return await _metric(http, port, size, priority="10") == 1

        await wait_until(high_queued)
        assert (await first)[0] == 200
        status, headers, body = await low
        assert status == 429, body
        assert headers["retry-after"] == "1"
        assert headers["x-llm-d-request-dropped-reason"] == "rejected-ttl-expired"
        assert body["error"]["type"] == "TooManyRequests"
        assert not high.done()  # it was dispatched before the batch request's TTL ran out
        assert (await high)[0] == 200
        count = "llm_d_epp_flow_control_request_queue_duration_seconds_count"
        assert await _metric(http, port, count, priority="-1", outcome="EvictedTTL") == 1
        assert await _metric(http, port, count, priority="10", outcome="Dispatched") == 2


async def test_full_duplex_a_queued_request_is_served_when_the_running_one_ends(
        engine: str, http: aiohttp.ClientSession) -> None:
    """GIE's FULL_DUPLEX_STREAMED mode: the queued request's body goes on once dispatched."""
    async with _stack(engine, "full-duplex") as (sim, epp, gw):
        port = epp.listening.metrics_port
        first = asyncio.create_task(_post(http, gw.url, 50, "premium"))

        async def running() -> bool:
            return await _metric(http, port, "llmd_epp_endpoint_running_requests") == 1

        await wait_until(running)
        second = await _post(http, gw.url, 2, "batch")
        assert second[0] == 200 and second[2]["choices"][0]["text"]
        assert first.done() and (await first)[0] == 200  # it waited for the first to end
        count = "llm_d_epp_flow_control_request_queue_duration_seconds_count"
        assert await _metric(http, port, count, priority="-1", outcome="Dispatched") == 1


async def test_a_client_that_leaves_while_queued_leaves_the_queue(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with _stack(engine) as (sim, epp, gw):
        port = epp.listening.metrics_port
        busy = asyncio.create_task(_post(http, gw.url, 200, "premium"))
        size = "llm_d_epp_flow_control_queue_size"

        async def running() -> bool:
            return await _metric(http, port, "llmd_epp_endpoint_running_requests") == 1

        await wait_until(running)
        leaving = asyncio.create_task(_post(http, gw.url, 1, "batch"))

        async def queued() -> bool:
            return await _metric(http, port, size, priority="-1") == 1

        await wait_until(queued)
        leaving.cancel()  # the client closes its connection; Envoy cancels the stream
        with contextlib.suppress(asyncio.CancelledError):
            await leaving

        async def left() -> bool:
            return await _metric(http, port, size, priority="-1") == 0

        await wait_until(left)
        count = "llm_d_epp_flow_control_request_queue_duration_seconds_count"
        assert await _metric(http, port, count, priority="-1",
                             outcome="EvictedContextCancelled") == 1
        assert (await busy)[0] == 200


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("objective", ["batch", "premium"])
async def test_an_empty_pool_gives_503_even_with_flow_control_on(
        engine: str, objective: str, http: aiohttp.ClientSession) -> None:
    dead = f"127.0.0.1:{_dead_port()},engine={engine}"
    async with run_epp([dead], config_text=CONFIG) as epp, \
            run_gateway(epp=epp.address) as gw:
        port = epp.listening.metrics_port

        async def down() -> bool:  # the refused scrape took it out of the pool
            return await _metric(http, port, "llmd_epp_endpoint_healthy") == 0

        await wait_until(down)
        status, headers, body = await _post(http, gw.url, 1, objective)
        assert status == 503, body
        assert body["error"]["type"] == "ServiceUnavailable"
        assert "retry-after" not in headers
