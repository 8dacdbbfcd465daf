"""/metrics uses the engine's own names: the adapter reads back what the simulator exports."""

from __future__ import annotations

import asyncio

import aiohttp
from _simtools import StartSim, prompt_of, scrape, wait_until

from llmd.engines import get_adapter


async def test_metrics_reflect_load(engine: str, start_sim: StartSim,
                                    http: aiohttp.ClientSession) -> None:
    sim = await start_sim(time_scale=1.0, itl_ms=10, max_num_seqs=2, block_size=16,
                          kv_cache_blocks=512)
    idle = await scrape(http, sim.url, engine)
    assert (idle.waiting, idle.running, idle.kv_usage) == (0, 0, 0.0)
    assert (idle.block_size, idle.total_blocks) == (16, 512)

    body = {"model": "llmd-sim", "prompt": prompt_of(100, 1), "max_tokens": 400,
            "ignore_eos": True, "stream": True}
    responses = [await http.post(sim.url + "/v1/completions", json=body) for _ in range(2)]
    extra = [asyncio.create_task(http.post(sim.url + "/v1/completions", json=body))
             for _ in range(5)]
    try:
        async def queued() -> bool:
            m = await scrape(http, sim.url, engine)
            return m.waiting == 5 and m.running == 2

        await wait_until(queued, what="5 waiting and 2 running")
        busy = await scrape(http, sim.url, engine)
        # 101 prompt tokens (BOS + 100) + 400 output = 32 blocks per sequence, of which the 6
        # full prompt blocks are shared: 6 + 2 x 26 = 58
        assert busy.kv_usage == 58 / 512
        assert busy.prefix_cache_queries is not None and busy.prefix_cache_queries >= 200
        assert busy.prefix_cache_hits is not None and busy.prefix_cache_hits >= 96  # 2nd shares
    finally:
        for r in responses:
            r.close()
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)

    async def drained() -> bool:
        m = await scrape(http, sim.url, engine)
        return (m.waiting, m.running, m.kv_usage) == (0, 0, 0.0)

    await wait_until(drained, what="the queue to drain after the clients left")


async def test_counters_and_histograms_by_engine_names(engine: str, start_sim: StartSim,
                                                       http: aiohttp.ClientSession) -> None:
    sim = await start_sim()
    names = get_adapter(engine).metric_names
    for _ in range(3):
        async with http.post(sim.url + "/v1/completions", json={
                "prompt": prompt_of(40, 2), "max_tokens": 4, "ignore_eos": True}) as resp:
            assert resp.status == 200
    async with http.get(sim.url + "/metrics") as resp:
        text = await resp.text()
    types = {line.split()[2]: line.split()[3] for line in text.splitlines()
             if line.startswith("# TYPE")}
    for gauge in (names.waiting, names.running, names.kv_usage, names.cache_config_info):
        assert types[gauge] == "gauge", gauge
    for counter in (names.prompt_tokens, names.generation_tokens, names.prefix_hits,
                    names.prefix_queries, names.request_success):
        assert types[counter + "_total"] == "counter", counter
    for hist in (names.ttft, names.itl, names.e2e, names.queue_time):
        assert types[hist] == "histogram", hist
        assert f'{hist}_count{{model_name="llmd-sim"}} ' in text
    assert f'{names.generation_tokens}_total{{model_name="llmd-sim"}} 12.0' in text
    assert f'{names.request_success}_total{{model_name="llmd-sim"}} 3.0' in text
    m = await scrape(http, sim.url, engine)
    assert m.prefix_cache_hits == 64.0  # 2 later requests x 2 full blocks of the 41-token prompt
