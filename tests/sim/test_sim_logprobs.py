"""`logprobs`, `top_logprobs` and `echo` in the OpenAI / vLLM shapes, streaming and not."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from llmd.sim import RunningSim


def client(sim: RunningSim) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)


def _check_top(token: str, logprob: float, top: list[tuple[str, float]], k: int) -> None:
    assert logprob <= 0
    assert len(top) == k
    values = [v for _, v in top]
    assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
    if k:
        assert (token, logprob) in top
    assert len({t for t, _ in top}) == k


async def _completion(sim: RunningSim, **kw: Any) -> Any:
    async with client(sim) as c:
        return await c.completions.create(model="llmd-sim", prompt="tell me about caches",
                                          max_tokens=12, seed=3,
                                          extra_body={"ignore_eos": True}, **kw)


async def test_completion_logprobs_shape(sim: RunningSim) -> None:
    r = await _completion(sim, logprobs=3)
    ch = r.choices[0]
    lp = ch.logprobs
    assert lp is not None and r.usage is not None
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 12
    assert "".join(lp.tokens) == ch.text
    offsets, at = [], 0
    for t in lp.tokens:
        offsets.append(at)
        at += len(t)
    assert lp.text_offset == offsets
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        _check_top(token, value, list(top.items()), 3)
    # Seeded: the same request gives the same values; the sampled token's logprob does not
    # depend on how many alternatives are asked.
    again = await _completion(sim, logprobs=3)
    assert again.choices[0].logprobs == lp
    zero = (await _completion(sim, logprobs=0)).choices[0].logprobs
    assert zero is not None and zero.token_logprobs == lp.token_logprobs
    assert zero.top_logprobs == [None] * 12  # vLLM: no top entries for logprobs=0
    five = (await _completion(sim, logprobs=5)).choices[0].logprobs
    assert five is not None and five.token_logprobs == lp.token_logprobs
    plain = await _completion(sim)
    assert plain.choices[0].logprobs is None and plain.choices[0].text == ch.text


async def test_echo_prepends_the_prompt_and_its_logprobs(sim: RunningSim) -> None:
    plain = await _completion(sim)
    echoed = await _completion(sim, echo=True)
    assert echoed.choices[0].text == "tell me about caches" + plain.choices[0].text
    both = await _completion(sim, echo=True, logprobs=2)
    lp = both.choices[0].logprobs
    assert both.usage is not None and lp is not None
    # Every prompt token (BOS included) then every generated one; nothing predicts the first.
    assert len(lp.tokens) == both.usage.prompt_tokens + both.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset[0] == 0
    assert lp.token_logprobs[-12:] == (await _completion(sim, logprobs=2)
                                       ).choices[0].logprobs.token_logprobs


@pytest.mark.parametrize("echo", [False, True])
async def test_streamed_completion_logprobs_match(sim: RunningSim, echo: bool) -> None:
    full = await _completion(sim, logprobs=2, echo=echo)
    async with client(sim) as c:
        stream = await c.completions.create(model="llmd-sim", prompt="tell me about caches",
                                            max_tokens=12, seed=3, logprobs=2, echo=echo,
                                            stream=True, extra_body={"ignore_eos": True})
        text, tokens, values, offsets = "", [], [], []
        async for chunk in stream:
            for ch in chunk.choices:
                text += ch.text
                assert ch.logprobs is not None
                tokens += ch.logprobs.tokens
                values += ch.logprobs.token_logprobs
                offsets += ch.logprobs.text_offset
    lp = full.choices[0].logprobs
    assert text == full.choices[0].text
    assert (tokens, values, offsets) == (lp.tokens, lp.token_logprobs, lp.text_offset)


async def test_chat_logprobs_and_top_logprobs(sim: RunningSim) -> None:
    messages: Any = [{"role": "user", "content": "hello there"}]
    async with client(sim) as c:
        r = await c.chat.completions.create(model="llmd-sim", messages=messages, max_tokens=10,
                                            n=2, logprobs=True, top_logprobs=4, seed=9,
                                            extra_body={"ignore_eos": True})
        bare = await c.chat.completions.create(model="llmd-sim", messages=messages,
                                               max_tokens=10, logprobs=True, seed=9,
                                               extra_body={"ignore_eos": True})
        stream = await c.chat.completions.create(model="llmd-sim", messages=messages,
                                                 max_tokens=10, n=2, logprobs=True,
                                                 top_logprobs=4, seed=9, stream=True,
                                                 extra_body={"ignore_eos": True})
        streamed: dict[int, list[Any]] = {0: [], 1: []}
        async for chunk in stream:
            for ch in chunk.choices:
                if ch.logprobs is not None and ch.logprobs.content:
                    streamed[ch.index] += ch.logprobs.content
    for ch in r.choices:
        assert ch.logprobs is not None and ch.logprobs.content is not None
        content = ch.logprobs.content
        assert len(content) == 10 and "".join(e.token for e in content) == ch.message.content
        for e in content:
            assert e.bytes == list(e.token.encode())
            _check_top(e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs], 4)
            assert all(t.bytes == list(t.token.encode()) for t in e.top_logprobs)
        assert streamed[ch.index] == content
    assert r.choices[0].logprobs.content != r.choices[1].logprobs.content  # type: ignore[union-attr]
    assert bare.choices[0].logprobs is not None and bare.choices[0].logprobs.content
    first = bare.choices[0].logprobs.content
    assert all(e.top_logprobs == [] for e in first)
    assert [e.logprob for e in first] == [
        e.logprob for e in r.choices[0].logprobs.content]  # type: ignore[union-attr]


async def test_chat_echo_repeats_a_final_assistant_message(sim: RunningSim) -> None:
    messages: Any = [{"role": "user", "content": "finish this"},
                     {"role": "assistant", "content": "Sure, here"}]
    async with client(sim) as c:
        plain = await c.chat.completions.create(model="llmd-sim", messages=messages,
                                                max_tokens=5, seed=2)
        echoed = await c.chat.completions.create(model="llmd-sim", messages=messages,
                                                 max_tokens=5, seed=2,
                                                 extra_body={"echo": True})
        stream = await c.chat.completions.create(model="llmd-sim", messages=messages,
                                                 max_tokens=5, seed=2, stream=True,
                                                 extra_body={"echo": True})
        text = "".join([ch.delta.content or "" async for chunk in stream
                        for ch in chunk.choices])
        user_last = await c.chat.completions.create(model="llmd-sim", messages=messages[:1],
                                                    max_tokens=5, seed=2,
                                                    extra_body={"echo": True})
    assert echoed.choices[0].message.content == "Sure, here" + (plain.choices[0].message.content
                                                                or "")
    assert text == echoed.choices[0].message.content
    assert not (user_last.choices[0].message.content or "").startswith("finish")
