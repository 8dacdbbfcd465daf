"""Errors as the engines give them: OpenAI JSON, the right status, never a traceback or a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest
from _simtools import StartSim, prompt_of, wait_until

from llmd.sim import RunningSim


async def _post(http: aiohttp.ClientSession, url: str, data: Any) -> tuple[int, dict[str, Any]]:
    kwargs = {"data": data} if isinstance(data, bytes) else {"json": data}
    async with http.post(url, **kwargs) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def _chat(**over: Any) -> dict[str, Any]:
    return {"model": "llmd-sim", "messages": [{"role": "user", "content": "hi"}], **over}


@pytest.mark.parametrize(("path", "body", "needle"), [
    pytest.param("/v1/chat/completions", b"{not json", "not valid JSON", id="malformed-json"),
    pytest.param("/v1/completions", b"[1, 2]", "JSON object", id="not-an-object"),
    pytest.param("/v1/completions", {"model": "llmd-sim"}, "prompt", id="missing-prompt"),
    pytest.param("/v1/chat/completions", {"model": "llmd-sim"}, "messages", id="missing-messages"),
    pytest.param("/v1/chat/completions", _chat(messages=[]), "messages", id="empty-messages"),
    pytest.param("/v1/chat/completions", _chat(max_tokens="many"), "max_tokens", id="bad-type"),
    pytest.param("/v1/chat/completions", _chat(max_tokens=0), "max_tokens", id="zero-tokens"),
    pytest.param("/v1/completions", {"prompt": "x", "n": 0}, "n", id="n-zero"),
    pytest.param("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}},
                 "stream=True", id="stream-options-without-stream"),
    pytest.param("/v1/completions", {"prompt": []}, "empty list", id="empty-prompt-list"),
    pytest.param("/v1/completions", {"prompt": [[1, 2], [3, 1 << 40]]}, "prompt[1]: token id",
                 id="batched-token-out-of-vocab"),
    pytest.param("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs",
                 id="logprobs-above-20"),
    pytest.param("/v1/completions", {"prompt": "x", "logprobs": -2}, "logprobs",
                 id="logprobs-negative"),
    pytest.param("/v1/chat/completions", _chat(logprobs=True, top_logprobs=21), "top_logprobs",
                 id="top-logprobs-above-20"),
    pytest.param("/v1/chat/completions", _chat(logprobs=True, top_logprobs=-1), "top_logprobs",
                 id="top-logprobs-negative"),
    pytest.param("/v1/chat/completions", _chat(top_logprobs=3), "`logprobs` must be set",
                 id="top-logprobs-without-logprobs"),
    pytest.param("/v1/completions", {"prompt": [1, 2, 1 << 40]}, "vocabulary",
                 id="token-out-of-vocab"),
    pytest.param("/v1/chat/completions", _chat(messages=[{"content": "no role"}]), "role",
                 id="message-without-role"),
])
async def test_bad_requests_are_400(sim: RunningSim, http: aiohttp.ClientSession, path: str,
                                    body: Any, needle: str) -> None:
    status, err = await _post(http, sim.url + path, body)
    assert status == 400
    assert err["error"]["type"] == "BadRequestError" and err["error"]["code"] == 400
    assert needle in err["error"]["message"] or needle == err["error"]["param"]
    assert "Traceback" not in err["error"]["message"]


async def test_unknown_model_is_404(sim: RunningSim) -> None:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(openai.NotFoundError) as info:
            await c.chat.completions.create(model="gpt-nope",
                                            messages=[{"role": "user", "content": "hi"}])
    assert "gpt-nope" in str(info.value)


async def test_too_long_prompt_is_400_and_huge_body_413(start_sim: StartSim,
                                                        http: aiohttp.ClientSession) -> None:
    sim: RunningSim = await start_sim(max_model_len=256, max_body_bytes=64 * 1024)
    status, err = await _post(http, sim.url + "/v1/completions", {"prompt": prompt_of(300, 1)})
    assert status == 400 and "maximum context length is 256" in err["error"]["message"]
    status, err = await _post(http, sim.url + "/v1/completions",
                              {"prompt": prompt_of(200, 2), "max_tokens": 100})
    assert status == 400 and "201 in the messages, 100 in the completion" in err["error"]["message"]
    status, err = await _post(http, sim.url + "/v1/completions",
                              {"prompt": "x " * 50_000, "max_tokens": 1})
    assert status == 413 and err["error"]["code"] == 413


async def test_full_waiting_queue_is_429(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    sim: RunningSim = await start_sim(time_scale=1.0, itl_ms=20, max_num_seqs=1, max_waiting=1)
    engine = sim.state.engine
    body = {"prompt": "hold the slot", "max_tokens": 500, "ignore_eos": True}
    held = [asyncio.create_task(http.post(sim.url + "/v1/completions", json=body))
            for _ in range(2)]
    try:
        async def busy() -> bool:
            return engine.num_running == 1 and engine.num_waiting == 1

        await wait_until(busy, what="one running and one waiting")
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x",
                                      max_retries=0) as c:
            with pytest.raises(openai.RateLimitError) as info:
                await c.completions.create(model="llmd-sim", prompt="one more", max_tokens=1)
        assert "queue is full" in str(info.value)
    finally:
        for t in held:
            t.cancel()
        await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.parametrize(("kind", "status", "exc"), [
    pytest.param("rate_limit", 429, openai.RateLimitError, id="rate-limit"),
    pytest.param("server_error", 503, openai.InternalServerError, id="server-error"),
    pytest.param("invalid_api_key", 401, openai.AuthenticationError, id="invalid-api-key"),
])
async def test_failure_injection(start_sim: StartSim, http: aiohttp.ClientSession, kind: str,
                                 status: int, exc: type[Exception]) -> None:
    sim: RunningSim = await start_sim(failure_rate=1.0, failure_kinds=(kind,))
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(exc):
            await c.completions.create(model="llmd-sim", prompt="hi", max_tokens=1)
    status_got, err = await _post(http, sim.url + "/v1/chat/completions", _chat())
    assert status_got == status and "injected" in err["error"]["message"]
    async with http.get(sim.url + "/v1/models") as resp:  # only generation is failed
        assert resp.status == 200


async def test_failure_rate_is_a_fraction(start_sim: StartSim, http: aiohttp.ClientSession) -> None:
    sim: RunningSim = await start_sim(failure_rate=0.5, seed=1)
    body = {"prompt": "x", "max_tokens": 1}
    statuses = [(await _post(http, sim.url + "/v1/completions", body))[0] for _ in range(40)]
    assert 5 < statuses.count(200) < 35
    assert set(statuses) <= {200, 429, 503}


async def test_unknown_route_and_method_are_json(sim: RunningSim,
                                                 http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + "/v1/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == 404
    async with http.get(sim.url + "/v1/completions") as resp:
        assert resp.status == 405 and (await resp.json())["error"]["code"] == 405
