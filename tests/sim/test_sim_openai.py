"""The official openai client against both dialects: chat and completions, streaming and not."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from _simtools import StartSim, wait_until

from llmd.sim import SERVED_BY_HEADER, RunningSim


def client(sim: RunningSim) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="none", max_retries=0)


async def test_chat_streaming_with_usage(sim: RunningSim) -> None:
    async with client(sim) as c:
        stream = await c.chat.completions.create(
            model="llmd-sim", messages=[{"role": "user", "content": "Hello there"}],
            max_tokens=12, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    assert text.strip() and finish == "length"
    assert usage is not None and usage.completion_tokens == 12
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + 12
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0


async def test_chat_non_streaming_n_and_max_completion_tokens(sim: RunningSim) -> None:
    async with client(sim) as c:
        resp = await c.chat.completions.create(
            model="llmd-sim", messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hi"}],
            max_completion_tokens=5, n=3, seed=7, extra_body={"ignore_eos": True})
    assert [ch.index for ch in resp.choices] == [0, 1, 2]
    assert all(ch.finish_reason == "length" and ch.message.content for ch in resp.choices)
    assert resp.usage is not None and resp.usage.completion_tokens == 15
    assert len({ch.message.content for ch in resp.choices}) > 1, "choices should differ"


async def test_completions_streaming_and_not_agree(sim: RunningSim) -> None:
    async with client(sim) as c:
        full = await c.completions.create(model="llmd-sim", prompt="Once upon a time",
                                          max_tokens=20, seed=3)
        stream = await c.completions.create(model="llmd-sim", prompt="Once upon a time",
                                            max_tokens=20, seed=3, stream=True)
        pieces = [ch.choices[0].text async for ch in stream if ch.choices]
    assert full.choices[0].text == "".join(pieces)
    assert full.usage is not None and 1 <= full.usage.completion_tokens <= 20


async def test_output_is_deterministic_and_seeded(sim: RunningSim) -> None:
    async with client(sim) as c:
        async def text(seed: int | None) -> str:
            r = await c.completions.create(model="llmd-sim", prompt="same prompt",
                                           max_tokens=16, seed=seed, temperature=0.7,
                                           extra_body={"ignore_eos": True})
            return r.choices[0].text

        assert await text(None) == await text(None)
        assert await text(1) == await text(1)
        assert await text(1) != await text(2)


async def test_stop_string_ends_the_choice(sim: RunningSim) -> None:
    async with client(sim) as c:
        base = await c.completions.create(model="llmd-sim", prompt="stop test", max_tokens=30,
                                          seed=5, extra_body={"ignore_eos": True})
        words = base.choices[0].text.split()
        stop = " " + words[3]
        cut = await c.completions.create(model="llmd-sim", prompt="stop test", max_tokens=30,
                                         seed=5, stop=[stop], extra_body={"ignore_eos": True})
        stream = await c.completions.create(model="llmd-sim", prompt="stop test",
                                            max_tokens=30, seed=5, stop=stop, stream=True,
                                            extra_body={"ignore_eos": True})
        streamed = "".join([ch.choices[0].text async for ch in stream if ch.choices])
    expected = base.choices[0].text[: base.choices[0].text.index(stop)]
    assert cut.choices[0].text == expected == streamed
    assert cut.choices[0].finish_reason == "stop"


async def test_eos_without_ignore_eos_stops_early(start_sim: StartSim) -> None:
    sim = await start_sim(eos_min_tokens=3, eos_max_tokens=6)
    async with client(sim) as c:
        r = await c.completions.create(model="llmd-sim", prompt="short answer", max_tokens=50)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and 3 <= r.usage.completion_tokens <= 6


async def test_models_list_and_served_by_header(sim: RunningSim,
                                                http: aiohttp.ClientSession) -> None:
    async with client(sim) as c:
        models = await c.models.list()
    assert [m.id for m in models.data] == ["llmd-sim"]
    for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/nope"),
                         ("POST", "/v1/completions")):
        async with http.request(method, sim.url + path, data=b"{}") as resp:
            assert resp.headers[SERVED_BY_HEADER] == f"127.0.0.1:{sim.port}", path


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_client_disconnect_frees_sequence_and_blocks(start_sim: StartSim, api: str,
                                                           http: aiohttp.ClientSession) -> None:

    sim = await start_sim(time_scale=1.0, itl_ms=20)
    engine = sim.state.engine
    body = {"model": "llmd-sim", "max_tokens": 1000, "ignore_eos": True, "stream": True}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": "a long answer please"}]
    else:
        body["prompt"] = "a long answer please"
    async with http.post(f"{sim.url}/v1/{'chat/' if api == 'chat' else ''}completions",
                         json=body) as resp:
        assert resp.status == 200
        await resp.content.readline()
        assert engine.num_running == 1 and engine.pool.used > 0
        resp.close()

    async def released() -> bool:
        return engine.num_running == 0 and engine.pool.used == 0

    await wait_until(released, what="the sequence to be released after disconnect")
