"""llm-d v1.0's guide configs (written for these tests after the upstream guides) and the v1
default config, loaded unchanged and routing through a real Envoy for both engines: the
optimized baseline (from a Helm values file), the v1 default over a mixed vLLM + SGLang pool
with per-engine peakPrefillThroughput, and the P/D guide behind sidecars."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import aiohttp
import openai
from _gateway_stack import MODEL, SERVED_BY, endpoint_id, flag, run_epp, run_gateway, sim_config

from llmd.epp._values import config_from_values
from llmd.epp.config import DEFAULT_CONFIG, v1_default_config
from llmd.gateway import LocalStack, StackSpec
from llmd.sim import RunningSim, running_sim

GUIDES = Path(__file__).parents[1] / "epp" / "guides"


def _prompt(seed: int, words: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(f"topic{rng.randrange(10_000)}" for _ in range(words))


async def _served(gw_url: str, prompts: list[str], concurrently: bool = False) -> list[str]:
    async with openai.AsyncOpenAI(base_url=gw_url + "/v1", api_key="none",
                                  max_retries=0) as client:
        async def one(p: str) -> str:
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt=p, max_tokens=2)
            assert raw.parse().choices[0].text
            return raw.headers[SERVED_BY]

        if concurrently:
            return list(await asyncio.gather(*(one(p) for p in prompts)))
        return [await one(p) for p in prompts]


async def test_optimized_baseline_values_route_and_stick(sims: list[RunningSim]) -> None:
    values = GUIDES / "optimized-baseline.values.yaml"
    async with run_epp([flag(s) for s in sims], values_file=values) as epp, \
            run_gateway(epp=epp.address) as gw:
        shared = _prompt(1)
        first, *again = await _served(gw.url, [shared] * 4)
        assert set(again) == {first}  # the prefix holder stays sticky while it is not loaded
        fleet = {endpoint_id(s) for s in sims}
        assert first in fleet
        assert set(await _served(gw.url, [_prompt(i) for i in range(2, 6)])) <= fleet


async def test_v1_default_spreads_a_mixed_pool_by_per_engine_throughput() -> None:
    text = v1_default_config({"vllm": 15928, "sglang": 30720})
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(running_sim(sim_config(e)))
                for e in ("vllm", "sglang")]
        async with run_epp([flag(s) for s in pool], config_text=text) as epp, \
                run_gateway(epp=epp.address) as gw:
            served = await _served(gw.url, [_prompt(100 + i, 2000) for i in range(8)],
                                   concurrently=True)
    assert set(served) == {endpoint_id(s) for s in pool}  # token load spreads a burst


async def test_pd_guide_disaggregates_through_the_sidecar(engine: str) -> None:
    text, _ = config_from_values(GUIDES / "pd-disaggregation.values.yaml", DEFAULT_CONFIG)
    spec = StackSpec(engines=(engine,), model=MODEL, time_scale=0, pd=True,
                     epp_config_text=text)
    async with LocalStack(spec) as stack, aiohttp.ClientSession() as http:
        async with http.post(stack.url + "/v1/completions", json={
                "model": MODEL, "prompt": _prompt(7), "max_tokens": 3}) as resp:
            assert resp.status == 200, await resp.text()
            # always-disagg-pd-decider: every request's prompt came from the prefill sim.
            assert resp.headers["x-llmd-kv-source"] == "transfer"
            assert resp.headers[SERVED_BY] == stack.decode[0].address
