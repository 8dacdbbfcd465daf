"""Generated tokens enter the prefix cache: a client that resends the history, the previous reply
included, hits the reply's full blocks too (as vLLM's prefix cache and SGLang's radix cache do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
from _cli import llmd_process, read_until
from _pdtools import MODEL, pd_pair, two_legs
from _simtools import StartSim, prompt_of

from llmd.sim import RunningSim

BLOCK = 16


def client(sim: RunningSim) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)


def _cached(usage: Any) -> int:
    assert usage is not None and usage.prompt_tokens_details is not None
    return int(usage.prompt_tokens_details.cached_tokens or 0)


def _kv_blocks(prompt_tokens: int, output_tokens: int) -> int:
    """Full blocks whose KV was computed: the last sampled token never is."""
    return (prompt_tokens + output_tokens - 1) // BLOCK


async def test_completions_next_turn_hits_the_reply(start_sim: StartSim) -> None:
    sim = await start_sim(block_size=BLOCK)
    turn1 = prompt_of(100, 31)
    async with client(sim) as c:
        first = await c.completions.create(model="llmd-sim", prompt=turn1, max_tokens=40,
                                           extra_body={"ignore_eos": True})
        assert first.usage is not None
        p1 = first.usage.prompt_tokens
        assert sim.state.engine.pool.cached == _kv_blocks(p1, 40)
        second = await c.completions.create(
            model="llmd-sim", prompt=turn1 + first.choices[0].text + " and then what",
            max_tokens=4)
    # Before: only the prompt's 6 full blocks; now the reply's 2 more as well.
    assert _cached(second.usage) == _kv_blocks(p1, 40) * BLOCK > (p1 // BLOCK) * BLOCK


async def test_every_choice_is_cached(start_sim: StartSim) -> None:
    sim = await start_sim(block_size=BLOCK)
    turn1 = prompt_of(60, 32)
    async with client(sim) as c:
        first = await c.completions.create(model="llmd-sim", prompt=turn1, max_tokens=50, n=2,
                                           seed=5, extra_body={"ignore_eos": True})
        assert first.usage is not None
        p1 = first.usage.prompt_tokens
        for ch in first.choices:
            nxt = await c.completions.create(model="llmd-sim", prompt=turn1 + ch.text + " ok",
                                             max_tokens=1)
            assert _cached(nxt.usage) == _kv_blocks(p1, 50) * BLOCK


async def _chat_turns(c: openai.AsyncOpenAI, turns: int, max_tokens: int = 37
                      ) -> list[tuple[int, int, int]]:
    """Run a multi-turn chat that resends the whole history (replies included) each turn.

    For every turn after the first: (cached prompt tokens, tokens in the previous turn's full
    KV blocks of prompt and reply, tokens in the previous prompt's own full blocks).
    """
    history: list[Any] = [{"role": "system", "content": "You answer questions about caches."},
                          {"role": "user", "content": "What is a prefix cache?"}]
    out, previous, previous_prompt = [], 0, 0
    for turn in range(turns):
        r = await c.chat.completions.create(model="llmd-sim", messages=history,
                                            max_tokens=max_tokens, extra_body={"ignore_eos": True})
        assert r.usage is not None and r.usage.completion_tokens == max_tokens
        if turn:
            out.append((_cached(r.usage), previous, previous_prompt))
        previous = _kv_blocks(r.usage.prompt_tokens, max_tokens) * BLOCK
        previous_prompt = r.usage.prompt_tokens // BLOCK * BLOCK
        history += [{"role": "assistant", "content": r.choices[0].message.content},
                    {"role": "user", "content": "Tell me more."}]
    return out


async def test_chat_next_turn_hits_the_reply(start_sim: StartSim, shared_dir: Path) -> None:
    # A real tokenizer.json: re-encoding the rendered history gives back the generated ids.
    tokenizer = shared_dir / "fixtures" / "tiny-llama" / "tokenizer.json"
    sim = await start_sim(block_size=BLOCK, tokenizer=str(tokenizer))
    async with client(sim) as c:
        turns = await _chat_turns(c, 4)
    assert all(cached == kv > prompt for cached, kv, prompt in turns), turns


async def test_llmd_sim_chat_next_turn_hits_the_reply_builtin_tokenizer(engine: str) -> None:
    # The default built-in tokenizer splits whitespace like GPT-2 (the template's "\n" apart
    # from the reply's " word"), so the resent history re-encodes to the generated ids too.
    async with llmd_process("sim", "--engine", engine, "--port", "0", "--time-scale", "0",
                            "--block-size", str(BLOCK)) as proc:
        m, _ = await read_until(proc, r"listening on ([\d.]+):(\d+)")
        url = f"http://{m.group(1)}:{m.group(2)}/v1"
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as c:
            turns = await _chat_turns(c, 3)
    # Turns 2 and 3 hit the previous turn's prompt and reply blocks, not only its prompt's.
    assert len(turns) == 2 and all(cached == kv > prompt for cached, kv, prompt in turns), turns


async def test_pd_prefill_keeps_the_prompt_decode_keeps_the_reply(
        engine: str) -> None:
    async with (pd_pair(engine, prefill={"block_size": BLOCK}, decode={"block_size": BLOCK})
                as (p, d), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http):
        body = {"model": MODEL, "prompt": prompt_of(100, 33), "max_tokens": 40,
                "ignore_eos": True}
        first, second = await two_legs(engine)(http, p, d, body)
        assert first.status == second.status == 200, (first.body, second.body)
        prompt_tokens = second.body["usage"]["prompt_tokens"]
        # The prefill leg computed the prompt (and one token): only the prompt's blocks.
        assert p.state.engine.pool.cached == prompt_tokens // BLOCK
        # The decode server holds the transferred prompt and the reply it generated.
        assert d.state.engine.pool.cached == _kv_blocks(prompt_tokens, 40)
        assert p.state.engine.pool.used == d.state.engine.pool.used == 0
