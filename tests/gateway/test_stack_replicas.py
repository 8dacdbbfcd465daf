"""Several EPP replicas behind one Envoy (`LocalStack(epp_replicas=2)`, what `llmd up
--epp-replicas 2` runs): both replicas decide, and one SIGKILLed under load costs no request
and no FailOpen/FailClose event (FailClose here, so one would be a 503); the supervisor restarts
it and Envoy sends it streams again once its health check passes. The replicas share their
picks (`--peer`), so a shared-prefix group keeps its endpoint while they take turns deciding,
and the restarted one catches up from its peer before it serves. Both engines; real
simulators, real `llmd epp` processes, the real Envoy.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import aiohttp
import openai
from _gateway_stack import supervised
from _load import streaming_load

from llmd.gateway import EppProcess, LocalStack, StackSpec
from llmd.sim import SERVED_BY_HEADER

MODEL = "llmd-sim"


async def _metric(http: aiohttp.ClientSession, epp: EppProcess, prefix: str) -> float:
    async with http.get(epp.metrics_url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


async def _decisions(http: aiohttp.ClientSession, epp: EppProcess) -> float:
    return await _metric(http, epp, "llmd_epp_decisions_total{")


async def _stats(http: aiohttp.ClientSession, stack: LocalStack) -> dict[str, int]:
    assert stack.gateway is not None
    async with http.get(stack.gateway.admin_url + "/stats?format=json") as resp:
        data = await resp.json()
    return {s["name"]: int(s["value"]) for s in data["stats"] if "value" in s}


async def _until(pred: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await pred():  # noqa: ASYNC110 (polling a condition under a deadline)
            await asyncio.sleep(0.05)


async def test_two_replicas_decide_and_a_killed_one_costs_nothing(engine: str) -> None:
    spec = StackSpec(engines=(engine,) * 2, model=MODEL, time_scale=0.2, epp_replicas=2,
                     failure_mode="FailClose", max_restarts=10)
    async with LocalStack(spec) as stack, aiohttp.ClientSession() as http, \
            supervised(stack):
        assert [e.name for e in stack.epps] == ["epp-0", "epp-1"]
        assert len({e.address for e in stack.epps}) == 2
        fleet = {ep.address for ep in stack.endpoints}
        async with openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="none",
                                      max_retries=0) as client:
            for i in range(12):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"hello {i}", max_tokens=2)
                assert raw.headers[SERVED_BY_HEADER] in fleet and raw.parse().choices[0].text
        assert all([await _decisions(http, e) > 0 for e in stack.epps])  # round robin
        # The replicas found each other (`llmd up` gives each the others' sync ports)...
        assert [await _metric(http, e, "llmd_epp_sync_peers") for e in stack.epps] == [1, 1]
        # ...so a shared-prefix group stays on one endpoint although the replicas take turns
        # deciding: each learns the other's picks within the sync interval (50 ms).
        await _groups_keep_their_endpoint(stack.url)

        victim = stack.child("epp-0")
        async with streaming_load(stack.url, MODEL, workers=32) as load:
            await _until(lambda: _true(len(load.outcomes) >= 50))
            os.kill(victim.proc.pid, signal.SIGKILL)
            await _until(lambda: _true(victim.restarts == 1))
            # The restarted process counts from 0: it decides again once Envoy's health
            # check (every second) finds it serving.
            await _until(lambda: _positive(_decisions(http, stack.epps[0])))
            # It caught up from its peer's snapshot before it reported SERVING.
            assert await _metric(http, stack.epps[0], "llmd_epp_sync_caught_up") == 1
            seen = len(load.outcomes)
            await _until(lambda: _true(len(load.outcomes) >= seen + 50))
        stats = await _stats(http, stack)
    kinds = load.kinds()
    assert set(kinds) == {"ok"}, (kinds, load.failures("before_first_byte")[:3],
                                  load.failures("mid_stream")[:3])
    # A stream that broke was decided again on the other replica, never by the failure mode.
    assert stats.get("http.failover.ext_proc.failure_mode_allowed", 0) == 0, stats
    assert stats["cluster.epp.health_check.failure"] >= 1  # Envoy saw it dead


async def _groups_keep_their_endpoint(url: str) -> None:
    served: dict[int, list[str]] = {}
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0) as client:
        for group in range(4):
            prefix = " ".join(f"group{group} shared context word{w}" for w in range(60))
            for question in range(5):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"{prefix} question {question}?", max_tokens=2)
                served.setdefault(group, []).append(raw.headers[SERVED_BY_HEADER])
                await asyncio.sleep(0.1)  # two sync intervals: the pick reached the peer
    assert all(len(set(endpoints)) == 1 for endpoints in served.values()), served


async def _true(value: bool) -> bool:
    return value


async def _positive(value: Awaitable[float]) -> bool:
    return await value > 0
