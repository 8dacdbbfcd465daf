"""P/D roles, driven leg by leg against real prefill and decode simulators on 127.0.0.1:0.

Both engines' handshakes (vLLM NIXL v2 `kv_transfer_params`, SGLang bootstrap rooms) must work,
and each way of breaking them must fail loudly: a counted miss and a local prefill (vLLM), or an
error naming the room (SGLang).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _pdtools import MODEL, pd_counters, pd_pair, post, room_fields, two_legs
from _simtools import prompt_of, wait_until

from llmd.engines import get_adapter
from llmd.sim import RunningSim, SimConfig, running_sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def test_two_legs_transfer_instead_of_prefill(engine: str,
                                                    http: aiohttp.ClientSession) -> None:
    async with pd_pair(engine) as (p, d):
        body = {"model": MODEL, "prompt": prompt_of(100, 1), "max_tokens": 8, "ignore_eos": True}
        first, second = await two_legs(engine)(http, p, d, body)
        assert first.status == 200 and second.status == 200, (first.body, second.body)
        assert first.headers["x-llmd-served-by"] == p.state.served_by
        assert second.headers["x-llmd-served-by"] == d.state.served_by
        assert (first.kv_source, second.kv_source) == ("local", "transfer")
        assert first.body["usage"]["completion_tokens"] == 1  # a prefill leg answers one token
        assert second.body["usage"]["completion_tokens"] == 8
        prompt_tokens = second.body["usage"]["prompt_tokens"]
        cached = second.body["usage"]["prompt_tokens_details"]["cached_tokens"]
        # vLLM counts the transferred tokens as cached; SGLang reports only its own hits.
        assert cached == (prompt_tokens
                          if get_adapter(engine).pd.decode_cached_includes_transfer else 0)
        pc, dc = await pd_counters(http, p, engine), await pd_counters(http, d, engine)
        assert pc["computed"] == prompt_tokens and pc["sent"] == prompt_tokens
        assert dc["computed"] == 0 and dc["received"] == prompt_tokens
        assert pc["held"] == 0 and pc["misses"] == dc["misses"] == 0


async def test_decode_reuses_its_own_cache_and_transfers_the_rest(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with pd_pair(engine, decode={"block_size": 16}) as (p, d):
        prefix = prompt_of(160, 2)
        legs = two_legs(engine)
        await legs(http, p, d, {"model": MODEL, "prompt": prefix + " one", "max_tokens": 2})
        before = await pd_counters(http, d, engine)
        _, second = await legs(http, p, d, {"model": MODEL, "prompt": prefix + " two more",
                                            "max_tokens": 2})
        assert second.kv_source == "transfer"
        moved = (await pd_counters(http, d, engine))["received"] - before["received"]
        assert 0 < moved <= second.body["usage"]["prompt_tokens"] - 160


async def test_role_both_ignores_pd_fields(engine: str, http: aiohttp.ClientSession) -> None:
    cfg = SimConfig(engine=engine, port=0, time_scale=0.0)  # type: ignore[arg-type]
    async with running_sim(cfg) as sim:
        body = {"model": MODEL, "prompt": "hello", "max_tokens": 3, "ignore_eos": True,
                "kv_transfer_params": {"do_remote_prefill": True, "remote_engine_id": "x"},
                "bootstrap_host": "10.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 7}
        answer = await post(http, sim.url, body)
        assert answer.status == 200 and answer.kv_source == "local"
        assert answer.body["usage"]["completion_tokens"] == 3


# vLLM NIXL v2 ------------------------------------------------------------------------------


async def _prefilled(http: aiohttp.ClientSession, p: RunningSim, prompt: str) -> dict:
    first = await post(http, p.url, {"model": MODEL, "prompt": prompt, "max_tokens": 1,
                                     "kv_transfer_params": {"do_remote_decode": True}})
    assert first.status == 200, first.body
    params = first.body["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["tp_size"] == 1
    assert (params["remote_host"], params["remote_port"]) == (p.host, p.port)
    assert len(params["remote_block_ids"]) == -(-first.body["usage"]["prompt_tokens"] // 16)
    return dict(params)


@pytest.mark.parametrize("breakage", [
    pytest.param(lambda p: {**p, "remote_engine_id": "someone-else"}, id="unknown-engine"),
    pytest.param(lambda p: {**p, "remote_block_ids": [p["remote_block_ids"][0] + 10**6]},
                 id="unknown-blocks"),
    pytest.param(lambda p: {**p, "remote_block_ids": "nope"}, id="malformed"),
    pytest.param(lambda p: {"do_remote_prefill": True}, id="missing-fields"),
    pytest.param(lambda p: {**p, "remote_port": 1}, id="unreachable"),
])
async def test_vllm_bad_params_prefill_locally_and_count_a_miss(
        http: aiohttp.ClientSession, breakage: object) -> None:
    async with pd_pair("vllm") as (p, d):
        prompt = prompt_of(64, 3)
        params = await _prefilled(http, p, prompt)
        answer = await post(http, d.url, {"model": MODEL, "prompt": prompt, "max_tokens": 2,
                                          "kv_transfer_params": breakage(params)})  # type: ignore[operator]
        assert answer.status == 200 and answer.kv_source == "local"
        dc = await pd_counters(http, d, "vllm")
        assert dc["misses"] == 1 and dc["received"] == 0
        assert dc["computed"] == answer.body["usage"]["prompt_tokens"]


async def test_vllm_blocks_are_released_by_the_pull_or_after_the_hold(
        http: aiohttp.ClientSession) -> None:
    async with pd_pair("vllm", prefill={"kv_hold_s": 0.3}) as (p, d):
        prompt = prompt_of(64, 4)
        params = await _prefilled(http, p, prompt)
        assert (await pd_counters(http, p, "vllm"))["held"] == 4  # 65 tokens: 4 full blocks
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 2, "kv_transfer_params": params}
        assert (await post(http, d.url, body)).kv_source == "transfer"
        assert (await pd_counters(http, p, "vllm"))["held"] == 0
        again = await post(http, d.url, body)  # pulled once: the blocks are gone
        assert again.kv_source == "local"

        expired = await _prefilled(http, p, prompt_of(64, 5))

        async def released() -> bool:
            return (await pd_counters(http, p, "vllm"))["held"] == 0

        await wait_until(released, timeout_s=5, what="the hold to expire")
        late = await post(http, d.url, {"model": MODEL, "prompt": prompt_of(64, 5),
                                         "max_tokens": 2, "kv_transfer_params": expired})
        assert late.kv_source == "local"
        assert (await pd_counters(http, d, "vllm"))["misses"] == 2


async def test_vllm_params_for_another_prompt_are_a_miss(http: aiohttp.ClientSession) -> None:
    async with pd_pair("vllm") as (p, d):
        params = await _prefilled(http, p, prompt_of(64, 6))
        answer = await post(http, d.url, {"model": MODEL, "prompt": prompt_of(64, 7),
                                          "max_tokens": 2, "kv_transfer_params": params})
        assert answer.kv_source == "local"
        assert (await pd_counters(http, d, "vllm"))["misses"] == 1


async def test_vllm_streaming_prefill_leg_is_rejected(http: aiohttp.ClientSession) -> None:
    async with pd_pair("vllm") as (p, _):
        answer = await post(http, p.url, {"model": MODEL, "prompt": "hi", "stream": True,
                                          "kv_transfer_params": {"do_remote_decode": True}})
        assert answer.status == 400 and "stream" in answer.body["error"]["message"]


# SGLang bootstrap rooms ---------------------------------------------------------------------


async def test_sglang_room_that_never_arrives_times_out_naming_it(
        http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang", decode={"bootstrap_timeout_s": 0.3}) as (p, d):
        fields = room_fields(p, room=12345)
        start = time.monotonic()
        answer = await post(http, d.url, {"model": MODEL, "prompt": "hello", **fields})
        assert time.monotonic() - start < 5
        assert answer.status == 504
        assert "bootstrap_room 12345" in answer.body["error"]["message"]
        assert (await pd_counters(http, d, "sglang"))["misses"] == 1


async def test_sglang_prefill_without_decode_peer_fails(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang", prefill={"bootstrap_timeout_s": 0.3}) as (p, _):
        answer = await post(http, p.url, {"model": MODEL, "prompt": "hello",
                                          **room_fields(p, room=99)})
        assert answer.status == 504 and "bootstrap_room 99" in answer.body["error"]["message"]


@pytest.mark.parametrize("drop", ["bootstrap_room", "bootstrap_host"])
async def test_sglang_decode_without_bootstrap_fields_is_400(
        http: aiohttp.ClientSession, drop: str) -> None:
    async with pd_pair("sglang") as (p, d):
        fields = room_fields(p)
        del fields[drop]
        answer = await post(http, d.url, {"model": MODEL, "prompt": "hello", **fields})
        assert answer.status == 400 and answer.body["error"]["param"] == drop


async def test_sglang_unreachable_bootstrap_fails_fast(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang") as (p, d):
        fields = {**room_fields(p), "bootstrap_port": 1}  # nothing listens there
        answer = await post(http, d.url, {"model": MODEL, "prompt": "hello", **fields})
        assert answer.status == 500 and "bootstrap server" in answer.body["error"]["message"]


async def test_sglang_concurrent_requests_never_cross_rooms(http: aiohttp.ClientSession) -> None:
    plain = SimConfig(engine="sglang", port=0, time_scale=0.0)
    async with pd_pair("sglang", prefill={"time_scale": 0.2}, decode={"time_scale": 0.2}) as (
            p, d), running_sim(plain) as reference:
        legs = two_legs("sglang")
        bodies = [{"model": MODEL, "prompt": prompt_of(40 + i, 100 + i), "max_tokens": 4}
                  for i in range(12)]
        pairs = await asyncio.gather(*(legs(http, p, d, b) for b in bodies))
        for body, (first, second) in zip(bodies, pairs, strict=True):
            assert first.status == second.status == 200, (first.body, second.body)
            assert second.kv_source == "transfer"
            # Each decode answered its own prompt (the text is seeded by the prompt's ids).
            alone = await post(http, reference.url, body)
            assert second.body["choices"][0]["text"] == alone.body["choices"][0]["text"]
            assert second.body["usage"]["prompt_tokens"] == alone.body["usage"]["prompt_tokens"]
        assert (await pd_counters(http, d, "sglang"))["misses"] == 0
        assert (await pd_counters(http, p, "sglang"))["sent"] == sum(
            f.body["usage"]["prompt_tokens"] for f, _ in pairs)


async def test_sglang_one_room_for_two_prompts_fails_loudly(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang") as (p, d):
        fields = room_fields(p)
        prefill, decode = await asyncio.gather(
            post(http, p.url, {"model": MODEL, "prompt": prompt_of(40, 1), **fields}),
            post(http, d.url, {"model": MODEL, "prompt": prompt_of(40, 2), **fields}))
        assert prefill.status >= 400 and decode.status == 409
        assert f"bootstrap_room {fields['bootstrap_room']}" in decode.body["error"]["message"]


async def test_sglang_room_claimed_twice_is_a_conflict(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang", prefill={"bootstrap_timeout_s": 1.0},
                       decode={"bootstrap_timeout_s": 1.0}) as (p, d):
        fields = room_fields(p)
        body = {"model": MODEL, "prompt": "same room", **fields}
        one, two = await asyncio.gather(post(http, d.url, body), post(http, d.url, body))
        assert sorted([one.status, two.status]) == [409, 504]
        a, b = await asyncio.gather(post(http, p.url, body), post(http, p.url, body))
        assert sorted([a.status, b.status]) == [409, 504]


async def test_sglang_prefill_role_reports_its_queues(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang", prefill={"bootstrap_timeout_s": 2.0}) as (p, d):
        pending = asyncio.create_task(post(http, p.url, {"model": MODEL, "prompt": "wait",
                                                         **room_fields(p, room=5)}))
        names = get_adapter("sglang").pd

        async def queued() -> bool:
            async with http.get(p.url + "/metrics") as resp:
                return f'{names.prefill_queue}{{model_name="{MODEL}"}} 1.0' in await resp.text()

        try:
            await wait_until(queued, what="one request in the prefill bootstrap queue")
            answer = await post(http, d.url, {"model": MODEL, "prompt": "wait",
                                              **room_fields(p, room=5)})
            assert answer.status == 200 and answer.kv_source == "transfer"
            assert (await pending).status == 200
        finally:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        async with http.get(d.url + "/metrics") as resp:
            assert f'{names.transfer_queue}{{model_name="{MODEL}"}} 0.0' in await resp.text()



async def test_sglang_native_generate_legs(http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang") as (p, d):
        body = {"text": prompt_of(50, 8), "sampling_params": {"max_new_tokens": 4},
                **room_fields(p)}
        first, second = await asyncio.gather(post(http, p.url, body, "/generate"),
                                             post(http, d.url, body, "/generate"))
        assert first.status == second.status == 200, (first.body, second.body)
        assert second.kv_source == "transfer"
        assert first.body["meta_info"]["completion_tokens"] == 1
        assert second.body["meta_info"]["completion_tokens"] == 4


async def test_sglang_streaming_prefill_leg_reports_a_missing_peer_in_the_stream(
        http: aiohttp.ClientSession) -> None:
    async with pd_pair("sglang", prefill={"bootstrap_timeout_s": 0.2}) as (p, _):
        body = {"model": MODEL, "prompt": "hello", "stream": True, **room_fields(p, room=77)}
        async with http.post(p.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert "bootstrap_room 77" in text and text.endswith("data: [DONE]\n\n")
