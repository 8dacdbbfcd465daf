"""Engine-specific routes: the simulator mounts exactly what the adapter lists."""

from __future__ import annotations

import json

import aiohttp
import pytest

from llmd.engines import ADAPTERS, get_adapter
from llmd.sim import RunningSim

ALL_EXTRAS = sorted(set().union(*(a.extra_routes for a in ADAPTERS.values())))
_POST = {"/tokenize", "/generate"}


@pytest.mark.parametrize("path", ALL_EXTRAS)
async def test_mounted_iff_adapter_lists_it(engine: str, sim: RunningSim,
                                            http: aiohttp.ClientSession, path: str) -> None:
    method = "POST" if path in _POST else "GET"
    body = {"prompt": "hi"} if path == "/tokenize" else {"text": "hi"}
    async with http.request(method, sim.url + path, json=body) as resp:
        if path in get_adapter(engine).extra_routes:
            assert resp.status == 200, await resp.text()
        else:
            assert resp.status in (404, 405)


async def test_health_probes_of_the_adapter(engine: str, sim: RunningSim,
                                            http: aiohttp.ClientSession) -> None:
    probes = get_adapter(engine).probes
    for probe in (probes.startup, probes.readiness, probes.liveness):
        async with http.get(sim.url + probe.path) as resp:
            assert resp.status == 200, probe.path


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw: object) -> object:
    async with http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status == 200, await resp.text()
        return await resp.json()


@pytest.mark.parametrize("engine", ["vllm"])
async def test_vllm_tokenize(sim: RunningSim, http: aiohttp.ClientSession) -> None:
    out = await _json(http, "POST", sim.url + "/tokenize", json={"prompt": "hello world"})
    assert isinstance(out, dict) and out["count"] == len(out["tokens"]) == 3
    assert out["max_model_len"] == 8192
    chat = await _json(http, "POST", sim.url + "/tokenize",
                       json={"messages": [{"role": "user", "content": "hello"}]})
    comp = await _json(http, "POST", sim.url + "/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1})
    assert isinstance(chat, dict) and isinstance(comp, dict)
    assert chat["count"] == comp["usage"]["prompt_tokens"]


@pytest.mark.parametrize("engine", ["sglang"])
async def test_sglang_native_generate(sim: RunningSim, http: aiohttp.ClientSession) -> None:
    body = {"text": "The capital of", "sampling_params": {"max_new_tokens": 6, "ignore_eos": True}}
    out = await _json(http, "POST", sim.url + "/generate", json=body)
    assert isinstance(out, dict) and out["text"]
    meta = out["meta_info"]
    assert meta["completion_tokens"] == 6 and meta["prompt_tokens"] == 4
    assert meta["finish_reason"] == {"type": "length", "length": 6}
    assert meta["cached_tokens"] == 0
    async with http.post(sim.url + "/generate", json={**body, "stream": True}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in (await resp.text()).split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["text"] == out["text"]  # SGLang streams the text so far
    assert all(chunks[i]["text"].startswith(chunks[i - 1]["text"]) for i in range(1, len(chunks)))
    many = await _json(http, "POST", sim.url + "/generate",
                       json={"input_ids": [5, 6, 7], "sampling_params": {"n": 2,
                                                                         "max_new_tokens": 2}})
    assert isinstance(many, list) and len(many) == 2
    async with http.post(sim.url + "/generate", json={"sampling_params": {}}) as resp:
        assert resp.status == 400


@pytest.mark.parametrize("engine", ["sglang"])
async def test_sglang_info_and_load(sim: RunningSim, http: aiohttp.ClientSession) -> None:
    info = await _json(http, "GET", sim.url + "/get_model_info")
    assert isinstance(info, dict) and info["model_path"] == "llmd-sim" and info["is_generation"]
    server = await _json(http, "GET", sim.url + "/get_server_info")
    assert isinstance(server, dict)
    assert server["page_size"] == 16 and server["port"] == sim.port
    load = await _json(http, "GET", sim.url + "/get_load")
    assert load == [{"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}]
