"""Two `llmd epp` processes with `--peer`: one view of the approximate index, and a late
replica that reports SERVING only once it took a snapshot from its peer.

The endpoints are addresses the EPP never connects to (scraping is off: `dataLayer.sources:
[]`), so the decisions depend on the prefix index alone; `engine=` labels both dialects.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import grpc
import pytest
from _cli import llmd_process, read_until
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd.epp import DESTINATION_HEADER

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
- type: prefix-cache-scorer
- {type: zmq-mesh-syncer, name: sync, parameters: {catchUpTimeout: 10s}}
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-scorer
dataLayer:
  sources: []
  crossReplica: {syncerPluginRef: sync, syncInterval: 50ms}
"""
# max-score-picker breaks ties at random: without the shared index, the replicas' picks for a
# prompt would agree by chance only ((1/4)^8 for 8 prompts).

SERVING = health_pb2.HealthCheckResponse.SERVING


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(engine: str, sync_port: int, peer: int) -> list[str]:
    args = ["epp", "--config-text", CONFIG, "--grpc-port", "0", "--grpc-health-port", "0",
            "--metrics-port", "0", "--sync-port", str(sync_port), "--peer", f"127.0.0.1:{peer}"]
    for i in range(4):
        args += ["--endpoint", f"10.9.0.{i + 1}:8000,engine={engine}"]
    return args


async def _ports(proc: asyncio.subprocess.Process) -> dict[str, int]:
    _, out = await read_until(proc, r"\(replica sync\)")
    return {what: int(port) for port, what in
            re.findall(r"listening on 127\.0\.0\.1:(\d+) \(([^)]+)\)", out)}


async def _route(stub: pb_grpc.ExternalProcessorStub, prompt: str) -> str:
    headers = base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=b"/v1/completions"),
        base_pb2.HeaderValue(key=":method", raw_value=b"POST")])
    call = stub.Process()
    await call.write(pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=headers),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=mode_pb2.ProcessingMode.BUFFERED)))
    await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(
        body=json.dumps({"model": "m", "prompt": prompt}).encode(), end_of_stream=True)))
    await call.done_writing()
    found = [h.header.raw_value.decode() async for resp in call
             if resp.WhichOneof("response") == "request_body"
             for h in resp.request_body.response.header_mutation.set_headers
             if h.header.key == DESTINATION_HEADER]
    # Read to the end, as Envoy does: the EPP records its pick once the answer is sent.
    assert len(found) == 1, found
    return found[0]


async def _until_serving(port: int) -> list[int]:
    """Poll gRPC health until SERVING: every status seen."""
    statuses = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch, asyncio.timeout(10):
        stub = health_pb2_grpc.HealthStub(ch)
        while not statuses or statuses[-1] != SERVING:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            statuses.append(resp.status)
            await asyncio.sleep(0.01)
    return statuses


async def _metric(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


async def _until_metric(port: int, name: str, value: float) -> None:
    async with asyncio.timeout(5):
        while await _metric(port, name) != value:  # noqa: ASYNC110 (polling another process)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
async def test_a_late_replica_serves_only_with_its_peers_index(engine: str) -> None:
    sync_a, sync_b = _free_port(), _free_port()
    prompts = [f"user {i} asks: " + "tell me more " * 30 for i in range(8)]
    async with llmd_process(*_args(engine, sync_a, sync_b)) as a:
        ports_a = await _ports(a)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports_a['ext_proc']}") as ch:
            chosen = [await _route(pb_grpc.ExternalProcessorStub(ch), p) for p in prompts]
        async with llmd_process(*_args(engine, sync_b, sync_a)) as b:
            ports_b = await _ports(b)
            await _until_serving(ports_b["grpc health"])
            # SERVING means caught up: B's index already holds every pick A made.
            assert await _metric(ports_b["metrics"], "llmd_epp_sync_caught_up") == 1
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports_b['ext_proc']}") as ch:
                stub = pb_grpc.ExternalProcessorStub(ch)
                assert [await _route(stub, p) for p in prompts] == chosen
                # And B's new picks reach A within the sync interval.
                fresh = [f"new {i} " * 60 for i in range(4)]
                on_b = [await _route(stub, p) for p in fresh]
            await asyncio.sleep(0.2)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports_a['ext_proc']}") as ch:
                stub = pb_grpc.ExternalProcessorStub(ch)
                assert [await _route(stub, p) for p in fresh] == on_b
            assert await _metric(ports_b["metrics"],
                                 'llmd_epp_sync_messages_total{direction="received"}') > 0


async def test_with_its_peers_down_a_replica_waits_catch_up_timeout_then_serves() -> None:
    config = CONFIG.replace("catchUpTimeout: 10s", "catchUpTimeout: 1s")
    args = _args("vllm", _free_port(), _free_port())  # the peer's port: nobody listens
    args[args.index(CONFIG)] = config
    async with llmd_process(*args) as proc:
        ports = await _ports(proc)
        loop = asyncio.get_running_loop()
        started = loop.time()
        statuses = await _until_serving(ports["grpc health"])
        assert statuses[0] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert loop.time() - started > 0.5
        await read_until(proc, r"catchUpTimeout 1\.0s .*serving anyway")


async def test_a_killed_replicas_in_flight_load_expires_and_the_survivor_routes() -> None:
    sync_a, sync_b = _free_port(), _free_port()
    # Picks stay in flight (no scraping here): only A's death can take them out of B's view.
    extra = ["--stale-after-s", "60"]
    async with llmd_process(*_args("sglang", sync_b, sync_a), *extra) as b:
        ports_b = await _ports(b)
        async with llmd_process(*_args("sglang", sync_a, sync_b), *extra) as a:
            ports_a = await _ports(a)
            await _until_serving(ports_a["grpc health"])
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports_a['ext_proc']}") as ch:
                for i in range(3):
                    await _route(pb_grpc.ExternalProcessorStub(ch), f"p{i}")
            await _until_metric(ports_b["metrics"], "llmd_epp_sync_peer_inflight_requests", 3)
            a.kill()  # SIGKILL: no goodbye frame
            await a.wait()
        loop = asyncio.get_running_loop()
        killed = loop.time()
        await _until_metric(ports_b["metrics"], "llmd_epp_sync_peer_inflight_requests", 0)
        assert loop.time() - killed > 0.5  # peerExpiry (1 s) after A's last frame
        assert await _metric(ports_b["metrics"], "llmd_epp_sync_peers") == 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports_b['ext_proc']}") as ch:
            assert (await _route(pb_grpc.ExternalProcessorStub(ch), "after")).startswith("10.9.")
