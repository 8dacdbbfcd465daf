"""Precise prefix-cache routing end to end: simulators publishing KV events in their engine's
dialect, the llmd EPP following them (examples/epp-precise.yaml), the real Envoy, the openai
client. The precise index follows an eviction that the approximate index, which only knows
what it routed, misses.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
from _gateway_stack import MODEL, SERVED_BY, endpoint_id, run_epp, run_gateway, sim_config
from _gateway_stack import wait_until as wait_for

from llmd.engines import get_adapter
from llmd.gateway import LocalStack, StackSpec
from llmd.sim import RunningSim, running_sim

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "epp-precise.yaml"
SYSTEM = "You are a careful assistant who answers questions about the llmd project. " * 24
PROMPT = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is it?"}]


def kv_events_config(engine: str, url: str) -> str:
    """The engine's own `--kv-events-config` publishing on `url` (llm-d's `kv@` topic)."""
    return json.dumps(get_adapter(engine).kv_events.serve_config(url, f"kv@sim@{MODEL}"))


def endpoint_flag(sim: RunningSim, url: str) -> str:
    return (f"127.0.0.1:{sim.port},engine={sim.state.cfg.engine},kv-events={url},"
            f"llm-d.ai/model={MODEL}")


async def metric(http: aiohttp.ClientSession, url: str, line_start: str) -> float:
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
               if x.startswith(line_start))


async def served(client: openai.AsyncOpenAI, messages: list[dict[str, str]]
                 ) -> tuple[str, int]:
    """(endpoint that served the chat request, prompt tokens it found cached)."""
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=1)  # type: ignore[arg-type]
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return raw.headers[SERVED_BY], usage.prompt_tokens_details.cached_tokens or 0


async def test_precise_routing_follows_an_eviction_the_approximate_index_misses(
        engine: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Two `engine` simulators with small KV caches, each behind two gateways: one whose EPP
    runs the precise scorer, one with llm-d's default (approximate) config.

    The long prompt goes first through the approximate gateway (to X), then straight to Y; then
    X's cache is flooded directly, so X evicts it (and says so in its events). The precise EPP
    sends the prompt to Y, which has it cached; the approximate one still believes X has it,
    sends it there, and X computes it all again."""
    async with contextlib.AsyncExitStack() as stack:
        urls = [f"ipc://{tmp_path}/sim-{i}.kv" for i in range(2)]
        pair = [await stack.enter_async_context(running_sim(sim_config(
            engine, kv_cache_blocks=48, max_model_len=512,
            kv_events_config=kv_events_config(engine, url)))) for url in urls]
        flags = [endpoint_flag(sim, url) for sim, url in zip(pair, urls, strict=True)]
        precise_epp = await stack.enter_async_context(run_epp(flags, config_file=EXAMPLE))
        approx_epp = await stack.enter_async_context(run_epp(flags))
        precise_gw = await stack.enter_async_context(run_gateway(epp=precise_epp.address))
        approx_gw = await stack.enter_async_context(run_gateway(epp=approx_epp.address))
        precise, approx = [await stack.enter_async_context(openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="none", max_retries=0))
            for gw in (precise_gw, approx_gw)]
        metrics = f"http://127.0.0.1:{precise_epp.listening.metrics_port}/metrics"
        by_id = {endpoint_id(sim): sim for sim in pair}

        x_id, cached = await served(approx, PROMPT)
        assert cached == 0
        x = by_id[x_id]
        y = next(sim for sim in pair if sim is not x)
        y_id = endpoint_id(y)

        async def held_by(ep: str) -> bool:
            return await metric(http, metrics, f'llmd_epp_kv_index_blocks{{endpoint="{ep}"}}') > 0

        await wait_for(lambda: held_by(x_id))
        # Straight to Y: neither EPP routed it, only Y's events tell.
        direct = openai.AsyncOpenAI(base_url=y.url + "/v1", api_key="none", max_retries=0)
        await stack.enter_async_context(direct)
        await direct.chat.completions.create(model=MODEL, messages=PROMPT,  # type: ignore[arg-type]
                                             max_tokens=1)
        await wait_for(lambda: held_by(y_id))

        removed = f'llmd_epp_kv_events_total{{endpoint="{x_id}",type="BlockRemoved"}}'
        for i in range(4):
            body: dict[str, Any] = {"model": MODEL, "max_tokens": 1, "prompt":
                                    f"flood {i} " + f"lorem {i} ipsum dolor sit amet " * 40}
            async with http.post(x.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()

        async def x_evicted() -> bool:
            return await metric(http, metrics, removed) > 0

        await wait_for(x_evicted)

        chosen, cached = await served(precise, PROMPT)
        assert chosen == y_id and cached >= 10 * x.state.cfg.block_size, (chosen, cached)
        chosen, cached = await served(approx, PROMPT)
        assert (chosen, cached) == (x_id, 0), "the approximate index followed the eviction?"
        hits = f'llmd_epp_precise_prefix_hit_tokens_total{{endpoint="{y_id}"}}'
        assert await metric(http, metrics, hits) > 0


async def test_llmd_up_with_the_precise_example_routes_a_mixed_fleet(
        http: aiohttp.ClientSession) -> None:
    """`llmd up --epp-config-file examples/epp-precise.yaml`: the stack turns the simulators'
    KV events on, the EPP follows both dialects, and a repeated long prompt is sent to the
    endpoint that holds it, for a vLLM and an SGLang simulator alike."""
    spec = StackSpec(engines=("vllm", "sglang"), model=MODEL, time_scale=0,
                     epp_config_file=EXAMPLE)
    async with LocalStack(spec) as stack, openai.AsyncOpenAI(
            base_url=stack.url + "/v1", api_key="none", max_retries=0) as client:
        assert stack.epp is not None
        metrics = stack.epp.metrics_url
        for i, ep in enumerate(stack.endpoints):
            # A prompt per endpoint, sent to it directly: only its events say where it is.
            prompt = [{"role": "system", "content": f"{i} {SYSTEM}"},
                      {"role": "user", "content": "Hello"}]
            direct = openai.AsyncOpenAI(base_url=ep.url + "/v1", api_key="none",
                                        max_retries=0)
            async with direct:
                await direct.chat.completions.create(
                    model=MODEL, messages=prompt, max_tokens=1)  # type: ignore[arg-type]

            async def indexed(ep_id: str = ep.address) -> bool:
                return await metric(
                    http, metrics, f'llmd_epp_kv_index_blocks{{endpoint="{ep_id}"}}') > 0

            await wait_for(indexed, timeout_s=10)
            served_from_cache = 0
            for _ in range(3):
                chosen, cached = await served(client, prompt)
                assert chosen == ep.address and cached > 0, (ep.engine, chosen, cached)
                served_from_cache += cached
            # The index predicted exactly what the simulator served from its cache.
            expected = f'llmd_epp_precise_prefix_hit_tokens_total{{endpoint="{ep.address}"}}'
            assert await metric(http, metrics, expected) == served_from_cache


PD_PRECISE = (Path(__file__).resolve().parents[2] / "examples" / "epp-pd.yaml").read_text() \
    .replace("- type: approx-prefix-cache-producer\n  parameters: {blockSizeTokens: 16}\n",
             "- type: precise-prefix-cache-producer\n")


async def test_llmd_up_pd_with_precise_routing_indexes_decode_and_prefill_sims(
        engine: str, http: aiohttp.ClientSession) -> None:
    """`llmd up --pd` with the P/D config's prefix producer made precise: the decode sim behind
    each sidecar and every prefill sim publish, the sidecar's endpoint carries its decode sim's
    events, and the P/D decider reads them: a prompt the decode sim received by transfer is
    served there alone next time (where the engine's decode role can serve alone: vLLM)."""
    assert "precise-prefix-cache-producer" in PD_PRECISE
    spec = StackSpec(engines=(engine,), model=MODEL, time_scale=0, pd=True,
                     epp_config_text=PD_PRECISE)
    async with LocalStack(spec) as stack, openai.AsyncOpenAI(
            base_url=stack.url + "/v1", api_key="none", max_retries=0) as client:
        assert stack.epp is not None
        prompt = "P/D with precise routing: " + SYSTEM
        first = await client.completions.with_raw_response.create(
            model=MODEL, prompt=prompt, max_tokens=2)
        assert first.headers["x-llmd-kv-source"] == "transfer"
        for ep in (stack.endpoints[0], stack.prefill[0]):  # the sidecar, the prefill sim

            async def indexed(ep_id: str = ep.address) -> bool:
                return await metric(http, stack.epp.metrics_url,  # type: ignore[union-attr]
                                    f'llmd_epp_kv_index_blocks{{endpoint="{ep_id}"}}') > 0

            await wait_for(indexed, timeout_s=10)
        again = await client.completions.with_raw_response.create(
            model=MODEL, prompt=prompt, max_tokens=2)
        alone = get_adapter(engine).pd.decode_alone
        assert again.headers["x-llmd-kv-source"] == ("local" if alone else "transfer")
        usage = again.parse().usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert (usage.prompt_tokens_details.cached_tokens or 0) > 0
