"""Both ext_proc body modes through a real Envoy: llmd's BUFFERED and GIE's FULL_DUPLEX_STREAMED
(the mode other Gateway API inference gateways use with llm-d's EPP)."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest
from _gateway_stack import MODEL, SERVED_BY, endpoint_id, flag, run_epp, run_gateway

from llmd.sim import RunningSim

MODES = [pytest.param("buffered", id="buffered"), pytest.param("full-duplex", id="full-duplex")]


@pytest.mark.parametrize("mode", MODES)
async def test_routing_streaming_and_large_bodies(
    sims: list[RunningSim], http: aiohttp.ClientSession, mode: str
) -> None:
    ids = {endpoint_id(s) for s in sims}
    async with run_epp([flag(s) for s in sims]) as epp, \
            run_gateway(epp=epp.address, ext_proc_mode=mode) as gw:
        client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
        try:
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt="hello there", max_tokens=4)
            assert raw.headers[SERVED_BY] in ids and raw.parse().choices[0].text
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                stream=True)
            assert [c async for c in stream]
        finally:
            await client.close()
        big = "lorem ipsum " * 20_000  # 240 KB: several 62 KB chunks in duplex mode
        async with http.post(gw.url + "/v1/completions",
                             json={"model": MODEL, "prompt": big, "max_tokens": 1}) as resp:
            # The simulator itself rejects the length: proof the whole body reached it intact.
            assert resp.status == 400 and resp.headers[SERVED_BY] in ids
            assert "40002" in (await resp.text())  # the prompt's token count
        async with http.get(gw.url + "/v1/models") as resp:  # headers-only request
            assert resp.status == 200 and resp.headers[SERVED_BY] in ids
        async with http.post(gw.url + "/v1/completions", data=b"{oops",
                             headers={"content-type": "application/json"}) as resp:
            assert resp.status == 400
            assert json.loads(await resp.text())["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize("mode", MODES)
async def test_empty_pool_503_in_each_mode(
    engine: str, http: aiohttp.ClientSession, mode: str
) -> None:
    async with run_epp([]) as epp, run_gateway(epp=epp.address, ext_proc_mode=mode) as gw:
        async with http.post(gw.url + "/v1/completions",
                             json={"model": MODEL, "prompt": "x"}) as resp:
            assert resp.status == 503
            assert json.loads(await resp.text())["error"]["code"] == 503
