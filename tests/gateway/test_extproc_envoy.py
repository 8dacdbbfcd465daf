"""The EPP behind a real Envoy: routing, 503, 400, 429 and the pool's failure modes."""

from __future__ import annotations

import json
import socket

import aiohttp
import openai
import pytest

from _gateway_stack import SERVED_BY, Backend, run_epp, run_gateway, wait_until

MODEL = "tiny"
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
        return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(text) if text else None


async def test_openai_requests_are_routed_by_the_epp(backends: list[Backend]) -> None:
    async with run_epp([b.flag() for b in backends]) as epp, run_gateway(epp=epp.address) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        try:
            served = set()
            for i in range(8):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"unrelated prompt number {i} " * 3)
                served.add(raw.headers[SERVED_BY])
                assert raw.parse().choices[0].text == raw.headers[SERVED_BY]
            chat = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}])
            served.add(chat.headers[SERVED_BY])
        finally:
            await client.close()
        assert served <= {b.id for b in backends}
        assert sum(b.served for b in backends) == 9


async def test_shared_prefix_sticks_to_one_endpoint(
    backends: list[Backend], http: aiohttp.ClientSession
) -> None:
    prefix = "You are a helpful assistant. " * 40
    async with run_epp([b.flag() for b in backends]) as epp, run_gateway(epp=epp.address) as gw:
        seen = set()
        for i in range(6):
            status, headers, _ = await _post(http, gw.url, {"model": MODEL,
                                                            "prompt": prefix + f"question {i}"})
            assert status == 200
            seen.add(headers[SERVED_BY])
        assert len(seen) == 1


async def test_no_endpoints_gives_503_json(engine: str, http: aiohttp.ClientSession) -> None:
    async with run_epp([]) as epp, run_gateway(epp=epp.address) as gw:
        status, headers, body = await _post(http, gw.url, {"model": MODEL, "prompt": "hi"})
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
    backends: list[Backend], http: aiohttp.ClientSession, bad: bytes
) -> None:
    async with run_epp([b.flag() for b in backends]) as epp, run_gateway(epp=epp.address) as gw:
        status, _, body = await _post(http, gw.url, bad)
        assert status == 400
        assert body["error"]["type"] == "BadRequestError"  # type: ignore[index]
        status, _, _ = await _post(http, gw.url, {"model": MODEL, "prompt": "fine"})
        assert status == 200


async def test_sheddable_request_gets_429_when_pool_saturated(
    backends: list[Backend], http: aiohttp.ClientSession, tmp_path: object
) -> None:
    config = (
        "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins:\n- type: queue-scorer\n"
        "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue-scorer\n"
        f"objectives:\n- name: {SHEDDABLE}\n  priority: -1\n- name: chat\n  priority: 10\n"
    )
    body = {"model": MODEL, "prompt": "hi"}
    shed = {"x-gateway-inference-objective": SHEDDABLE}
    async with run_epp([b.flag() for b in backends], config_text=config) as epp, \
            run_gateway(epp=epp.address) as gw:

        async def admitted() -> bool:
            return (await _post(http, gw.url, body, shed))[0] == 200

        await wait_until(admitted)  # once scraped, the idle pool admits sheddable work
        for b in backends:
            b.waiting = 50

        async def shed_now() -> bool:
            return (await _post(http, gw.url, body, shed))[0] == 429

        await wait_until(shed_now)
        status, headers, err = await _post(http, gw.url, body, shed)
        assert status == 429 and headers["content-type"] == "application/json"
        assert err["error"]["type"] == "TooManyRequests"  # type: ignore[index]
        for objective in ("chat", "unknown-objective"):
            status, _, _ = await _post(http, gw.url, body,
                                       {"x-gateway-inference-objective": objective})
            assert status == 200


async def test_client_cannot_pick_its_own_endpoint(
    backends: list[Backend], http: aiohttp.ClientSession
) -> None:
    only = backends[0]
    async with run_epp([only.flag()]) as epp, run_gateway(epp=epp.address) as gw:
        status, headers, _ = await _post(
            http, gw.url, {"model": MODEL, "prompt": "x"},
            {"x-gateway-destination-endpoint": backends[1].id})
    assert status == 200 and headers[SERVED_BY] == only.id


async def test_epp_down_fail_open_serves_from_fallback(
    backends: list[Backend], http: aiohttp.ClientSession
) -> None:
    async with run_gateway(epp=f"127.0.0.1:{_free_port()}", failure_mode="FailOpen",
                           fallback_endpoints=tuple(b.id for b in backends)) as gw:
        status, headers, _ = await _post(http, gw.url, {"model": MODEL, "prompt": "x"})
    assert status == 200 and headers[SERVED_BY] in {b.id for b in backends}


async def test_epp_down_fail_close_gives_503_json(
    backends: list[Backend], http: aiohttp.ClientSession
) -> None:
    async with run_gateway(epp=f"127.0.0.1:{_free_port()}", failure_mode="FailClose",
                           fallback_endpoints=tuple(b.id for b in backends)) as gw:
        status, _, body = await _post(http, gw.url, {"model": MODEL, "prompt": "x"})
    assert status == 503
    assert body["error"]["code"] == 503  # type: ignore[index]
    assert sum(b.served for b in backends) == 0


async def test_epp_stopping_mid_run_fails_closed(
    backends: list[Backend], http: aiohttp.ClientSession
) -> None:
    async with run_epp([b.flag() for b in backends]) as epp, run_gateway(epp=epp.address) as gw:
        assert (await _post(http, gw.url, {"model": MODEL, "prompt": "x"}))[0] == 200
        await epp.shutdown()
        status, _, _ = await _post(http, gw.url, {"model": MODEL, "prompt": "x"})
    assert status == 503
