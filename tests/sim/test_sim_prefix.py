"""Prefix reuse by chained block hash, and LRU eviction when the KV cache runs short."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
from _simtools import StartSim, prompt_of, scrape

from llmd.sim import RunningSim


async def _ttft_and_usage(c: openai.AsyncOpenAI, prompt: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    stream = await c.completions.create(model="llmd-sim", prompt=prompt, max_tokens=4,
                                        stream=True, stream_options={"include_usage": True},
                                        extra_body={"ignore_eos": True})
    ttft = None
    cached = prompt_tokens = 0
    async for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].text:
            ttft = time.perf_counter() - start
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            cached = details.cached_tokens or 0 if details else 0
            prompt_tokens = chunk.usage.prompt_tokens
    assert ttft is not None
    return ttft, cached, prompt_tokens


async def test_shared_2k_prefix_is_cached_and_faster(engine: str, start_sim: StartSim,
                                                     http: aiohttp.ClientSession) -> None:
    # 0.2 ms per uncached token: ~410 ms for the cold 2k prompt vs ~12 ms warm, a margin a
    # loaded 2-core machine cannot blur.
    sim: RunningSim = await start_sim(time_scale=1.0, prefill_per_token_ms=0.2)
    prefix = prompt_of(2000, 11)
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        cold_ttft, cold_cached, _ = await _ttft_and_usage(c, prefix + " first question here")
        warm_ttft, warm_cached, _ = await _ttft_and_usage(c, prefix + " another one entirely")
    assert cold_cached == 0
    assert warm_cached >= 0.9 * 2000
    assert warm_ttft < cold_ttft
    m = await scrape(http, sim.url, engine)
    assert m.prefix_cache_hits == warm_cached


async def test_chat_prefix_reuse(start_sim: StartSim) -> None:
    sim: RunningSim = await start_sim()
    system = {"role": "system", "content": prompt_of(500, 12)}
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        usages = []
        for q in ("what is up?", "and now?"):
            r = await c.chat.completions.create(
                model="llmd-sim", messages=[system, {"role": "user", "content": q}],
                max_tokens=2)
            assert r.usage is not None and r.usage.prompt_tokens_details is not None
            usages.append(r.usage.prompt_tokens_details.cached_tokens or 0)
    assert usages[0] == 0 and usages[1] >= 480


async def test_eviction_under_capacity_pressure(start_sim: StartSim) -> None:
    # 64 blocks of 16 tokens; each 600-token request holds 38 blocks, so two never fit at once.
    sim: RunningSim = await start_sim(kv_cache_blocks=64, block_size=16, max_model_len=1024)
    pool = sim.state.engine.pool
    a, b, c_ = prompt_of(600, 21), prompt_of(600, 22), prompt_of(600, 23)
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        async def cached(prompt: str) -> int:
            r = await c.completions.create(model="llmd-sim", prompt=prompt, max_tokens=8,
                                           extra_body={"ignore_eos": True})
            assert r.usage is not None and r.usage.prompt_tokens_details is not None
            return r.usage.prompt_tokens_details.cached_tokens or 0

        assert await cached(a) == 0
        assert await cached(a) >= 0.9 * 600  # resident while nothing else needs the room
        assert pool.evictions == 0
        assert await cached(b) == 0  # B pushes A's least recently used blocks out
        assert pool.evictions > 0
        assert await cached(a) < 0.9 * 600
        # Under pressure requests wait for blocks instead of failing, and all complete.
        results = await asyncio.gather(*(cached(p) for p in (a, b, c_, a, b, c_)))
    assert len(results) == 6
    assert pool.used == 0 and pool.cached <= 64
