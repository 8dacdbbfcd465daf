"""Batched prompts on /v1/completions: one sequence per prompt, choices numbered as vLLM does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import openai
import pytest
from _pdtools import MODEL, pd_pair, post, room_fields
from _simtools import StartSim, prompt_of, scrape

from llmd.engines import get_adapter
from llmd.sim import RunningSim


def client(sim: RunningSim) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)


PROMPTS = ["the first prompt", "a second, different prompt", "third"]


async def test_batch_of_strings_with_n(sim: RunningSim) -> None:
    async with client(sim) as c:
        batch = await c.completions.create(model="llmd-sim", prompt=PROMPTS, n=2, max_tokens=6,
                                           seed=4, extra_body={"ignore_eos": True})
        alone = [await c.completions.create(model="llmd-sim", prompt=p, n=2, max_tokens=6,
                                            seed=4, extra_body={"ignore_eos": True})
                 for p in PROMPTS]
    # vLLM: index = prompt index * n + choice index; each prompt answers as it would alone.
    assert [ch.index for ch in batch.choices] == list(range(6))
    assert [ch.text for ch in batch.choices] == [ch.text for r in alone for ch in r.choices]
    assert all(ch.finish_reason == "length" for ch in batch.choices)
    assert batch.usage is not None
    assert batch.usage.prompt_tokens == sum(r.usage.prompt_tokens for r in alone if r.usage)
    assert batch.usage.completion_tokens == 6 * 6
    assert batch.usage.total_tokens == batch.usage.prompt_tokens + 36


@pytest.mark.parametrize("prompt", [
    pytest.param([[5, 6, 7, 8], [9, 10]], id="token-id-lists"),
    pytest.param([5, 6, 7, 8], id="one-token-id-list"),
    pytest.param(["only one"], id="list-of-one-string"),
])
async def test_token_prompts(sim: RunningSim, prompt: list[int] | list[list[int]]) -> None:
    async with client(sim) as c:
        r = await c.completions.create(model="llmd-sim", prompt=prompt, max_tokens=3,
                                       extra_body={"ignore_eos": True})
    count = len(prompt) if isinstance(prompt[0], list) else 1
    assert [ch.index for ch in r.choices] == list(range(count))
    assert r.usage is not None and r.usage.completion_tokens == 3 * count
    if isinstance(prompt[0], list):
        assert r.usage.prompt_tokens == sum(len(p) for p in prompt)  # type: ignore[arg-type]
    elif isinstance(prompt[0], int):
        assert r.usage.prompt_tokens == len(prompt)


async def test_streaming_batch_matches_non_streaming(sim: RunningSim) -> None:
    async with client(sim) as c:
        full = await c.completions.create(model="llmd-sim", prompt=PROMPTS, n=2, max_tokens=9,
                                          seed=1)
        stream = await c.completions.create(model="llmd-sim", prompt=PROMPTS, n=2,
                                            max_tokens=9, seed=1, stream=True,
                                            stream_options={"include_usage": True})
        texts: dict[int, str] = {}
        finish: dict[int, str] = {}
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            for ch in chunk.choices:
                texts[ch.index] = texts.get(ch.index, "") + ch.text
                if ch.finish_reason:
                    finish[ch.index] = ch.finish_reason
    assert texts == {ch.index: ch.text for ch in full.choices}
    assert finish == {ch.index: ch.finish_reason for ch in full.choices}
    assert usage is not None and full.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (full.usage.prompt_tokens,
                                                              full.usage.completion_tokens)


async def test_each_prompt_is_its_own_sequence(engine: str, start_sim: StartSim,
                                               http: aiohttp.ClientSession) -> None:
    # One running sequence at a time: the batch's prompts queue one after another (a batch
    # admitted as one unit would never fit), and prefix hits are counted per prompt.
    sim = await start_sim(max_num_seqs=1, block_size=16)
    warm = prompt_of(200, 3)
    async with client(sim) as c:
        first = await c.completions.create(model="llmd-sim", prompt=warm, max_tokens=1)
        r = await c.completions.create(model="llmd-sim",
                                       prompt=[warm + " again", prompt_of(100, 4), warm],
                                       max_tokens=4, extra_body={"ignore_eos": True})
    assert first.usage is not None and r.usage is not None
    assert len(r.choices) == 3 and r.usage.completion_tokens == 12
    # Both prompts that start with `warm` hit its 12 full blocks (the third one reuses one
    # block less: the last prompt token is always recomputed); the cold one hits nothing.
    details = r.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 12 * 16 + 12 * 16
    engine_ = sim.state.engine
    assert engine_.num_running == 0 and engine_.pool.used == 0
    m = await scrape(http, sim.url, engine)
    assert m.prefix_cache_hits == details.cached_tokens


async def test_too_long_prompt_in_a_batch_names_it(start_sim: StartSim) -> None:
    sim = await start_sim(max_model_len=256)
    async with client(sim) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.completions.create(model="llmd-sim",
                                       prompt=["short", prompt_of(300, 5), "short"],
                                       max_tokens=4)
    message = str(info.value)
    assert "prompt[1]" in message and "maximum context length is 256" in message
    assert sim.state.engine.pool.cached == 0  # nothing ran: the batch is checked up front


async def test_batch_shed_is_429_and_releases_everything(start_sim: StartSim) -> None:
    # Real latency: the first prompt still runs (in its prefill) when the second asks for a slot.
    sim = await start_sim(max_num_seqs=1, max_waiting=0, time_scale=1.0)
    async with client(sim) as c:
        with pytest.raises(openai.RateLimitError):
            await c.completions.create(model="llmd-sim", prompt=["a", "b"], max_tokens=2)
        stream = await c.completions.create(model="llmd-sim", prompt=["a", "b"], max_tokens=2,
                                            stream=True)
        with pytest.raises(openai.APIError, match="queue is full"):
            async for _ in stream:
                pass
    engine = sim.state.engine
    assert engine.num_running == engine.num_waiting == 0 and engine.pool.used == 0


async def test_batch_cannot_be_a_pd_leg(engine: str, http: aiohttp.ClientSession) -> None:
    # A prefill leg's handshake fields name one prompt's KV; a batch is refused, not guessed at.
    leg_fields: dict[str, Callable[[RunningSim], dict[str, Any]]] = {
        "kv-transfer-params": lambda p: {"kv_transfer_params": {"do_remote_decode": True}},
        "bootstrap-room": room_fields,
    }
    async with pd_pair(engine) as (p, _):
        fields = leg_fields[get_adapter(engine).pd.handoff](p)
        answer = await post(http, p.url, {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 4,
                                          **fields})
        assert answer.status == 400, answer.body
        assert "batch" in answer.body["error"]["message"]
        assert p.state.pd.prefill_queue() == 0 and p.state.engine.pool.cached == 0
