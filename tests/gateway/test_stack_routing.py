"""End to end through the real Envoy and the llmd EPP: the openai client against a fleet holding
both dialects, prefix affinity against spreading, and load-aware routing away from a long queue.

The serving endpoint is observable in every simulator response (`x-llmd-served-by`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import aiohttp
import openai
from _gateway_stack import (
    MODEL,
    SERVED_BY,
    assert_completion_and_chat_answered,
    endpoint_id,
    flag,
    run_epp,
    run_gateway,
    sim_config,
    wait_until,
)

from llmd.engines import ENGINES
from llmd.gateway import LocalStack, StackSpec
from llmd.sim import running_sim

SYSTEM = "You are a careful assistant who answers questions about the llmd project. " * 12


def _other(engine: str) -> str:
    return next(e for e in ENGINES if e != engine)


async def test_openai_client_through_the_gateway_over_both_dialects(engine: str) -> None:
    """A fleet of two `engine` and one other-dialect simulator: completions and chat, streaming
    and not, all answered through Envoy; a shared long prefix sticks to one endpoint while
    unrelated prompts spread over several."""
    spec = StackSpec(engines=(engine, engine, _other(engine)), model=MODEL, time_scale=0)
    async with LocalStack(spec) as stack, openai.AsyncOpenAI(
            base_url=stack.url + "/v1", api_key="none", max_retries=0) as client:
        fleet = {ep.address for ep in stack.endpoints}
        await assert_completion_and_chat_answered(client, fleet)
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text
        plain = await client.completions.create(model=MODEL, prompt="Once", max_tokens=4,
                                                stream=True)
        assert "".join([c.choices[0].text async for c in plain if c.choices])

        sticky = set()
        for i in range(6):
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, max_tokens=2, messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"question number {i}"}])
            sticky.add(raw.headers[SERVED_BY])
        assert len(sticky) == 1, sticky

        spread = set()
        for i in range(12):
            raw = await client.completions.with_raw_response.create(
                model=MODEL, max_tokens=2, prompt=f"{i:03d} an unrelated prompt, topic {i}")
            spread.add(raw.headers[SERVED_BY])
        assert len(spread) >= 2, spread  # random tie-break among idle endpoints


async def test_endpoint_with_a_long_queue_stops_receiving_new_work(
    engine: str, http: aiohttp.ClientSession
) -> None:
    """Saturate one simulator directly (one running, a backlog waiting): once the EPP has
    scraped that queue (its per-endpoint gauge shows it), every new request goes to the other
    endpoint."""
    slow = sim_config(engine, time_scale=1.0, max_num_seqs=1, itl_ms=20.0)
    async with contextlib.AsyncExitStack() as stack:
        busy, idle = [await stack.enter_async_context(running_sim(slow)) for _ in range(2)]
        epp = await stack.enter_async_context(run_epp([flag(busy), flag(idle)]))
        gw = await stack.enter_async_context(run_gateway(epp=epp.address))

        async def served_by(i: int) -> str:
            body = {"model": MODEL, "prompt": f"{i:04d} request {i}", "max_tokens": 1}
            async with http.post(gw.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                return resp.headers[SERVED_BY]

        both = {endpoint_id(busy), endpoint_id(idle)}
        seen: set[str] = set()

        tries = itertools.count()

        async def both_served() -> bool:  # before the load: either endpoint gets work
            seen.add(await served_by(next(tries)))
            return seen == both

        await wait_until(both_served, timeout_s=30)
        long = {"model": MODEL, "prompt": "hold", "max_tokens": 400, "ignore_eos": True}
        backlog = [asyncio.create_task(http.post(busy.url + "/v1/completions", json=long))
                   for _ in range(6)]
        metrics_url = f"http://127.0.0.1:{epp.listening.metrics_port}/metrics"
        busy_waiting = f'llmd_epp_endpoint_waiting_requests{{endpoint="{endpoint_id(busy)}"}} '

        async def epp_sees_the_queue() -> bool:
            async with http.get(metrics_url) as resp:
                text = await resp.text()
            line = next(x for x in text.splitlines() if x.startswith(busy_waiting))
            return float(line.rsplit(" ", 1)[1]) >= 3

        try:
            await wait_until(epp_sees_the_queue, timeout_s=30)
            chosen = [await served_by(next(tries)) for _ in range(12)]  # new to both
            assert set(chosen) == {endpoint_id(idle)}, chosen
            assert busy.state.engine.num_waiting >= 3  # it had a queue all along
        finally:
            for task in backlog:
                task.cancel()
            results = await asyncio.gather(*backlog, return_exceptions=True)
            for result in results:
                if isinstance(result, aiohttp.ClientResponse):
                    result.release()
