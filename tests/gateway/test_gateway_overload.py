"""An overloaded EPP behind a real Envoy sheds with the EPP's own 429 + Retry-After, never
with the FailClose route's 503 of a picker that looks dead; the stream's wait inside the EPP
is readable because Envoy sends llmd's grpc-timeout marker; a burst below the bound is routed
whole. The EPP in-process, one zero-latency simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
from _gateway_stack import MODEL, flag, run_epp, run_gateway, sim_config, wait_until
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from llmd.epp import Datastore, Director, load_config, parse_endpoint_flag
from llmd.epp.extproc import STREAM_TIMEOUT, ExtProcServicer
from llmd.sim import RunningSim, running_sim

BODY = json.dumps({"model": MODEL, "prompt": "Say hello", "max_tokens": 2}).encode()


@contextlib.asynccontextmanager
async def _sim() -> AsyncIterator[RunningSim]:
    async with running_sim(sim_config("vllm")) as sim:
        yield sim


async def _metric(http: aiohttp.ClientSession, port: int, pattern: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        found = re.search(rf"^{pattern} (\S+)$", await resp.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_over_the_bound_envoy_answers_the_epps_429_not_failclose(
        http: aiohttp.ClientSession) -> None:
    uploaded = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield BODY[:10]
        await uploaded.wait()  # Envoy holds the request (BUFFERED); the EPP has its headers
        yield BODY[10:]

    async with _sim() as sim, run_epp([flag(sim)], max_pending_streams=1) as epp, \
            run_gateway(epp=epp.address, failure_mode="FailClose") as gw:
        metrics = epp.listening.metrics_port
        url = gw.url + "/v1/completions"
        held = asyncio.create_task(http.post(url, data=slow_body(),
                                             headers={"content-type": "application/json"}))
        try:
            async def one_undecided() -> bool:
                return await _metric(http, metrics, "llmd_epp_extproc_pending_streams") == 1

            await wait_until(one_undecided)
            async with http.post(url, data=BODY,
                                 headers={"content-type": "application/json"}) as resp:
                status, headers, body = resp.status, resp.headers, await resp.json()
            assert status == 429, body
            assert headers["retry-after"] == "1"
            assert headers["content-type"] == "application/json"
            assert body["error"]["type"] == "TooManyRequests"
            assert "overloaded" in body["error"]["message"]
            overloaded = 'llmd_epp_decisions_total{endpoint="",outcome="overloaded"}'
            assert await _metric(http, metrics, re.escape(overloaded)) == 1
        finally:
            uploaded.set()
            async with await held as resp:
                assert resp.status == 200  # the held request is routed once its body is in
        async with http.post(url, data=BODY,
                             headers={"content-type": "application/json"}) as resp:
            assert resp.status == 200  # its slot is free again


async def test_a_burst_below_the_bound_sees_no_429(http: aiohttp.ClientSession) -> None:
    async with _sim() as sim, run_epp([flag(sim)], max_pending_streams=4096) as epp, \
            run_gateway(epp=epp.address, failure_mode="FailClose") as gw:

        async def one() -> int:
            async with http.post(gw.url + "/v1/completions", data=BODY,
                                 headers={"content-type": "application/json"}) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(200)))
        assert statuses == [200] * 200


class _Recording(ExtProcServicer):
    """The real servicer, also recording how much of its deadline each stream had left."""

    remaining: list[float | None]

    async def Process(  # noqa: N802 (gRPC method name)
            self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        self.remaining.append(context.time_remaining())
        async for answer in super().Process(request_iterator, context):
            yield answer


async def test_envoy_sends_the_marker_the_epp_measures_waits_with(
        http: aiohttp.ClientSession) -> None:
    async with _sim() as sim:
        store = Datastore()
        store.set_endpoints([parse_endpoint_flag(flag(sim))])
        servicer = _Recording(Director(store, load_config(text=(
            "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
            "plugins:\n- type: random-picker\ndataLayer: {sources: []}\n"))), 1 << 20)
        servicer.remaining = []
        server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with run_gateway(epp=f"127.0.0.1:{port}") as gw:
                async with http.post(gw.url + "/v1/completions", data=BODY,
                                     headers={"content-type": "application/json"}) as resp:
                    assert resp.status == 200
        finally:
            await server.stop(0)
    marker_s = float(STREAM_TIMEOUT.rstrip("S"))
    [remaining] = servicer.remaining
    assert remaining is not None and marker_s - 60 < remaining <= marker_s
