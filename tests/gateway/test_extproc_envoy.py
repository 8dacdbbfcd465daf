"""The EPP behind a real Envoy, in front of real simulators: routing, 503, 400, 429 and the
pool's failure modes, for both dialects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import aiohttp
import grpc
import openai
import pytest
from _gateway_stack import (
    MODEL,
    SERVED_BY,
    endpoint_id,
    flag,
    run_epp,
    run_gateway,
    sim_config,
    wait_until,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd.sim import RunningSim, running_sim

SHEDDABLE = "batch"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _post(http: aiohttp.ClientSession, url: str, body: object,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url + "/v1/completions", data=data,
                         headers={"content-type": "application/json", **(headers or {})}) as r:
        text = await r.text()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, \
            json.loads(text) if text else None


def _ok(prompt: str = "hello") -> dict[str, object]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": 2}


async def test_openai_requests_are_routed_by_the_epp(sims: list[RunningSim]) -> None:
    async with run_epp([flag(s) for s in sims]) as epp, run_gateway(epp=epp.address) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        try:
            served = set()
            for i in range(6):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"unrelated prompt number {i} " * 3, max_tokens=3)
                served.add(raw.headers[SERVED_BY])
                assert raw.parse().choices[0].text
            chat = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=3)
            served.add(chat.headers[SERVED_BY])
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                stream=True)
            chunks = [c async for c in stream]
        finally:
            await client.close()
        assert served <= {endpoint_id(s) for s in sims}
        assert chunks


async def test_mixed_dialect_pool_serves_both(http: aiohttp.ClientSession) -> None:
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(running_sim(sim_config(e)))
                for e in ("vllm", "sglang")]
        async with run_epp([flag(s) for s in pool]) as epp, run_gateway(epp=epp.address) as gw:
            seen = set()
            for i in range(12):
                status, headers, _ = await _post(http, gw.url, _ok(f"prompt {i} " * (i + 1)))
                assert status == 200
                seen.add(headers[SERVED_BY])
    assert seen == {endpoint_id(s) for s in pool}


async def test_shared_prefix_sticks_to_one_endpoint(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    prefix = "You are a helpful assistant. " * 40
    async with run_epp([flag(s) for s in sims]) as epp, run_gateway(epp=epp.address) as gw:
        seen = set()
        for i in range(6):
            status, headers, _ = await _post(http, gw.url, _ok(prefix + f"question {i}"))
            assert status == 200
            seen.add(headers[SERVED_BY])
        assert len(seen) == 1


async def test_no_endpoints_gives_503_json(engine: str, http: aiohttp.ClientSession) -> None:
    async with run_epp([]) as epp, run_gateway(epp=epp.address) as gw:
        status, headers, body = await _post(http, gw.url, _ok())
    assert status == 503
    assert headers["content-type"] == "application/json"
    assert body["error"]["code"] == 503  # type: ignore[index]
    assert "no endpoint" in body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("bad", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"[1, 2]", id="not-an-object"),
    pytest.param(b'{"prompt": "no model"}', id="missing-model"),
    pytest.param(b'{"model": "m"}', id="no-prompt-or-messages"),
])
async def test_malformed_body_gives_400_and_epp_keeps_serving(
    sims: list[RunningSim], http: aiohttp.ClientSession, bad: bytes
) -> None:
    async with run_epp([flag(s) for s in sims]) as epp, run_gateway(epp=epp.address) as gw:
        status, headers, body = await _post(http, gw.url, bad)
        assert status == 400 and headers["content-type"] == "application/json"
        assert body["error"]["type"] == "BadRequestError"  # type: ignore[index]
        status, _, _ = await _post(http, gw.url, _ok())
        assert status == 200


async def test_sheddable_request_gets_429_when_pool_saturated(
    engine: str, http: aiohttp.ClientSession
) -> None:
    config = (
        "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins:\n- type: queue-scorer\n"
        "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"
        f"objectives:\n- name: {SHEDDABLE}\n  priority: -1\n- name: chat\n  priority: 10\n"
    )
    shed = {"x-gateway-inference-objective": SHEDDABLE}
    slow = sim_config(engine, time_scale=1.0, max_num_seqs=1, itl_ms=20.0)
    async with running_sim(slow) as sim, \
            run_epp([flag(sim)], config_text=config) as epp, \
            run_gateway(epp=epp.address) as gw:

        async def admitted() -> bool:
            return (await _post(http, gw.url, _ok(), shed))[0] == 200

        await wait_until(admitted)  # once scraped, the idle pool admits sheddable work
        long = {"model": MODEL, "prompt": "x", "max_tokens": 500, "ignore_eos": True}
        backlog = [asyncio.create_task(_post(http, sim.url, long)) for _ in range(8)]
        try:
            async def shed_now() -> bool:
                # A body-less GET passes admission too, and is not stuck behind the backlog.
                async with http.get(gw.url + "/v1/models", headers=shed) as resp:
                    return resp.status == 429

            await wait_until(shed_now)  # 1 running + 7 waiting >= queueDepthThreshold 5
            status, headers, err = await _post(http, gw.url, _ok(), shed)
            assert status == 429 and headers["content-type"] == "application/json"
            assert err["error"]["type"] == "TooManyRequests"  # type: ignore[index]
            assert "saturated" in err["error"]["message"]  # type: ignore[index]
        finally:
            for task in backlog:
                task.cancel()
            await asyncio.gather(*backlog, return_exceptions=True)


async def test_client_cannot_pick_its_own_endpoint(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    only, other = sims
    async with run_epp([flag(only)]) as epp, run_gateway(epp=epp.address) as gw:
        status, headers, _ = await _post(
            http, gw.url, _ok(), {"x-gateway-destination-endpoint": endpoint_id(other)})
    assert status == 200 and headers[SERVED_BY] == endpoint_id(only)


async def test_epp_down_fail_open_serves_from_fallback(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    async with run_gateway(epp=f"127.0.0.1:{_free_port()}", failure_mode="FailOpen",
                           fallback_endpoints=tuple(endpoint_id(s) for s in sims)) as gw:
        status, headers, _ = await _post(http, gw.url, _ok())
    assert status == 200 and headers[SERVED_BY] in {endpoint_id(s) for s in sims}


async def test_epp_down_fail_close_gives_503_json(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    async with run_gateway(epp=f"127.0.0.1:{_free_port()}", failure_mode="FailClose",
                           fallback_endpoints=tuple(endpoint_id(s) for s in sims)) as gw:
        status, headers, body = await _post(http, gw.url, _ok())
    assert status == 503 and SERVED_BY not in headers
    assert body["error"]["code"] == 503  # type: ignore[index]


async def test_epp_stopping_mid_run_fails_closed(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    async with run_epp([flag(s) for s in sims]) as epp, run_gateway(epp=epp.address) as gw:
        assert (await _post(http, gw.url, _ok()))[0] == 200
        await epp.shutdown()
        status, _, _ = await _post(http, gw.url, _ok())
    assert status == 503


async def test_epp_health_and_decision_metrics(
    sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    async with run_epp([flag(s) for s in sims]) as epp, run_gateway(epp=epp.address) as gw:
        for _ in range(3):
            assert (await _post(http, gw.url, _ok()))[0] == 200
        assert (await _post(http, gw.url, b"{bad"))[0] == 400
        async with grpc.aio.insecure_channel(f"127.0.0.1:{epp.listening.health_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", "readiness", "liveness"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                         timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with http.get(f"http://127.0.0.1:{epp.listening.metrics_port}/metrics") as resp:
            text = await resp.text()
    routed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("llmd_epp_decisions_total{") and 'outcome="routed"' in line)
    assert routed == 3
    assert 'llmd_epp_decisions_total{endpoint="",outcome="bad_request"} 1.0' in text
    assert "llmd_epp_decision_duration_seconds_count 4.0" in text
    for plugin in ("approx-prefix-cache-producer", "queue-scorer", "max-score-picker"):
        assert f'llmd_epp_plugin_duration_seconds_count{{plugin="{plugin}"}} 3.0' in text
