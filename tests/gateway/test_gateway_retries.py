"""The gateway's side of "no request lost before its first byte": Envoy tries the EPP's
fallback endpoints in order when one refuses, never anything the EPP did not name, and every
error Envoy answers itself is OpenAI-style JSON. Real Envoy, real simulators, the EPP in-process
with scraping off (so a dead endpoint stays a candidate and the retry path is what is tested)."""

from __future__ import annotations

import asyncio
import io
import json
import socket

import aiohttp
import pytest
from _gateway_stack import MODEL, SERVED_BY, endpoint_id, flag, run_epp, run_gateway
from aiohttp import web

from llmd._http import listen_socket
from llmd.engines import get_adapter
from llmd.sidecar import RETRIABLE_HEADER, SidecarConfig, build_app
from llmd.sim import RunningSim

NO_SCRAPING = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins: [{pluginRef: random-picker}]
dataLayer: {sources: []}
"""
BODY = {"model": MODEL, "prompt": "Say hello", "max_tokens": 2}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _stat(http: aiohttp.ClientSession, admin_url: str, name: str) -> int:
    async with http.get(f"{admin_url}/stats?filter=^{name}$&format=json") as resp:
        stats = (await resp.json())["stats"]
    return int(stats[0]["value"]) if stats else 0


@pytest.mark.parametrize("mode", ["buffered", "full-duplex"])
async def test_a_refused_pick_is_retried_on_the_next_endpoint(
        engine: str, mode: str, sims: list[RunningSim], http: aiohttp.ClientSession) -> None:
    dead = f"127.0.0.1:{_dead_port()}"
    pool = [dead, *(endpoint_id(s) for s in sims)]
    async with run_epp([f"{dead},engine={engine}", *(flag(s) for s in sims)],
                       config_text=NO_SCRAPING, fallback_endpoints=2) as epp, \
            run_gateway(epp=epp.address, endpoints=tuple(pool), ext_proc_mode=mode) as gw:
        served = []
        for i in range(24):
            body = BODY | {"stream": i % 2 == 1}
            async with http.post(f"{gw.url}/v1/completions", json=body) as resp:
                await resp.read()
                assert resp.status == 200, await resp.text()
                served.append(resp.headers[SERVED_BY])
        retried = await _stat(http, gw.admin_url, "cluster.pool.upstream_rq_retry_success")
    assert set(served) <= {endpoint_id(s) for s in sims}
    assert retried > 0  # the random picker chose the dead endpoint, and Envoy moved on


async def test_a_list_of_dead_endpoints_is_a_json_503_and_nothing_else_is_tried(
        engine: str, sims: list[RunningSim], http: aiohttp.ClientSession) -> None:
    dead = [f"127.0.0.1:{_dead_port()}" for _ in range(2)]
    live = [endpoint_id(s) for s in sims]  # in Envoy's pool, but the EPP never names them
    async with run_epp([f"{d},engine={engine}" for d in dead], config_text=NO_SCRAPING,
                       fallback_endpoints=1) as epp, \
            run_gateway(epp=epp.address, endpoints=(*dead, *live)) as gw:
        async with http.post(f"{gw.url}/v1/completions", json=BODY) as resp:
            assert resp.status == 503
            assert resp.content_type == "application/json"
            error = (await resp.json())["error"]
    assert error["code"] == 503 and error["type"] == "ServiceUnavailable"
    assert error["message"]  # Envoy's own reason, e.g. "no healthy upstream"
    for sim in sims:
        prompt_tokens = sim.state.adapter.metric_names.prompt_tokens + "_total"
        assert not sim.state.registry.get_sample_value(prompt_tokens, {"model_name": MODEL})


async def _raw(gw_port: int, data: bytes, *, read_s: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw_port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(read_s):
            return await reader.read(65536)
    finally:
        writer.close()


def _json_status(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)["error"]


async def test_envoys_own_errors_are_openai_json(engine: str, sims: list[RunningSim],
                                                  http: aiohttp.ClientSession) -> None:
    async with run_epp([flag(s) for s in sims]) as epp, \
            run_gateway(epp=epp.address, endpoints=tuple(endpoint_id(s) for s in sims),
                        request_headers_timeout_s=0.5, max_request_bytes=1 << 20) as gw:
        async with http.post(f"{gw.url}/v1/completions", json=BODY,
                             headers={"x-big": "a" * 70_000}) as resp:
            assert resp.status == 431 and (await resp.json())["error"]["code"] == 431
        async with http.post(f"{gw.url}/v1/completions",
                             data=io.BytesIO(b"x" * (2 << 20))) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 413 and error["type"] == "PayloadTooLargeError"
        status, error = _json_status(await _raw(gw.port, b"POST /v1/completions HTTP/1.1\r\n"
                                                         b"Host: x\r\nContent-Le"))
        assert status == 408 and error["code"] == 408  # headers never finished: cut off
        status, error = _json_status(await _raw(gw.port, b"GARBAGE\r\n\r\n"))
        assert status == 400 and error["type"] == "BadRequestError"
        # The EPP's own JSON and the simulators' pass unchanged (not wrapped twice).
        async with http.post(f"{gw.url}/v1/completions", data=b"not json") as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["message"].startswith("request body is not")


async def test_fail_close_reply_is_left_as_it_is(http: aiohttp.ClientSession) -> None:
    async with run_gateway(epp=f"127.0.0.1:{_dead_port()}", failure_mode="FailClose") as gw:
        async with http.post(f"{gw.url}/v1/completions", json=BODY) as resp:
            error = (await resp.json())["error"]
    assert resp.status == 503 and "fails closed" in error["message"]


async def test_a_sidecar_whose_engine_is_gone_is_retried_elsewhere(
        engine: str, sims: list[RunningSim], http: aiohttp.ClientSession) -> None:
    """The sidecar is up but its decode engine refuses: its 503 says nothing was computed, and
    Envoy moves the request to the EPP's next endpoint; the marker never reaches the client."""
    cfg = SidecarConfig(host="127.0.0.1", port=0, model_server_port=_dead_port(),
                        kv_connector=get_adapter(engine).sidecar_connector)
    runner = web.AppRunner(build_app(cfg), access_log=None)
    await runner.setup()
    sock = listen_socket("127.0.0.1", 0)
    await web.SockSite(runner, sock).start()
    orphan = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        pool = [orphan, *(endpoint_id(s) for s in sims)]
        async with run_epp([f"{ep},engine={engine}" for ep in pool], config_text=NO_SCRAPING,
                           fallback_endpoints=2) as epp, \
                run_gateway(epp=epp.address, endpoints=tuple(pool)) as gw:
            for _ in range(16):
                async with http.post(f"{gw.url}/v1/completions", json=BODY) as resp:
                    assert resp.status == 200, await resp.text()
                    assert RETRIABLE_HEADER not in resp.headers
                    assert resp.headers[SERVED_BY] != orphan
            retried = await _stat(http, gw.admin_url, "cluster.pool.upstream_rq_retry_success")
    finally:
        await runner.cleanup()
    assert retried > 0
