"""The fault suite: kill parts of a running `LocalStack` (what `llmd up` runs) under load.

A simulator killed mid-load loses no request that had not started streaming (the EPP drops it
at its next scrape; Envoy retries a refused connection on the EPP's next endpoint) and comes
back on its port, where the EPP routes again. The EPP killed mid-load: FailOpen keeps serving
(round robin), FailClose answers JSON 503s, and either way it is restarted and decides again.
Envoy killed: restarted on the same port. Both engines; real processes on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import aiohttp
from _gateway_stack import supervised
from _load import Load, streaming_load

from llmd.gateway import LocalStack, StackSpec

MODEL = "llmd-sim"


def _spec(engine: str, failure_mode: str) -> StackSpec:
    # Streams of ~24 tokens x 8 ms: long enough that a kill lands mid-stream for some.
    return StackSpec(engines=(engine,) * 3, model=MODEL, time_scale=1.0,
                     failure_mode=failure_mode, max_restarts=10)  # type: ignore[arg-type]


async def _until(pred: object, timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():  # type: ignore[operator]  # noqa: ASYNC110 (polling under a deadline)
            await asyncio.sleep(0.05)


async def _decisions(http: aiohttp.ClientSession, stack: LocalStack) -> float:
    assert stack.epp is not None
    async with http.get(stack.epp.metrics_url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmd_epp_decisions_total{"))


async def _diagnosis(http: aiohttp.ClientSession, stack: LocalStack, load: Load,
                     since: float) -> str:
    assert stack.epp is not None
    async with http.get(stack.epp.metrics_url) as resp:
        epp = [line for line in (await resp.text()).splitlines()
               if line.startswith(("llmd_epp_endpoint_healthy", "llmd_epp_decisions_total",
                                   "llmd_epp_endpoint_health_transitions"))]
    after = Counter((o.served_by, o.kind) for o in load.outcomes if o.at > since)
    return f"not served again; after the restart: {dict(after)}; EPP: {epp}"


async def test_killed_simulator_and_epp_lose_nothing_and_come_back(engine: str) -> None:
    """FailOpen: neither a dead endpoint nor a dead picker costs a request that had not
    started streaming; both are restarted and used again."""
    async with LocalStack(_spec(engine, "FailOpen")) as stack, \
            aiohttp.ClientSession() as http, supervised(stack):
        victim = stack.endpoints[0]
        async with streaming_load(stack.url, MODEL) as load:
            await _until(lambda: victim.address in load.served_after(0.0))
            os.kill(stack.child(victim.name).proc.pid, signal.SIGKILL)
            await _until(lambda: stack.child(victim.name).restarts == 1)
            back = time.monotonic()
            # Back on its port, and the EPP sends it traffic again.
            try:
                await _until(lambda: victim.address in load.served_after(back))
            except TimeoutError:
                raise AssertionError(await _diagnosis(http, stack, load, back)) from None
            epp = stack.child("epp")
            os.kill(epp.proc.pid, signal.SIGKILL)
            await _until(lambda: epp.restarts == 1)
            before, restarted = await _decisions(http, stack), time.monotonic()
            await _until(lambda: len(load.served_after(restarted + 0.5)) > 0)
            assert await _decisions(http, stack) > before  # the restarted EPP decides again
    kinds = load.kinds()
    assert kinds["before_first_byte"] == 0, load.failures("before_first_byte")[:5]
    assert kinds["ok"] >= 60
    # Streams that were running on the killed simulator end (no hang), with a broken stream.
    assert all(o.served_by == victim.address for o in load.failures("mid_stream"))


async def test_fail_close_answers_json_503_while_the_epp_restarts(engine: str) -> None:
    async with LocalStack(_spec(engine, "FailClose")) as stack, \
            aiohttp.ClientSession() as http, supervised(stack):
        async with streaming_load(stack.url, MODEL, workers=8) as load:
            await _until(lambda: len(load.outcomes) >= 10)
            epp = stack.child("epp")
            os.kill(epp.proc.pid, signal.SIGKILL)
            await _until(lambda: epp.restarts == 1)
            back = time.monotonic()
            await _until(lambda: len(load.served_after(back + 0.5)) > 0)
        # The gateway itself: back on its port.
        envoy = stack.child("envoy")
        os.kill(envoy.proc.pid, signal.SIGKILL)
        await _until(lambda: envoy.restarts == 1)
        async with http.post(stack.url + "/v1/completions", json={
                "model": MODEL, "prompt": "hi", "max_tokens": 2}) as resp:
            assert resp.status == 200
    refused = load.failures("before_first_byte")
    assert refused, "no request arrived while the EPP was down"
    for outcome in refused:
        assert outcome.status == 503
        assert "the endpoint picker is unavailable" in outcome.detail
    assert not load.failures("mid_stream")


async def test_pd_kills_lose_nothing_before_the_first_byte(engine: str) -> None:
    """P/D under load: a decode engine killed behind its sidecar (the sidecar's 503 says
    retriable, Envoy moves on) and a prefill server killed (the sidecar tries the next prefill
    candidate) cost only the streams that were running on the killed engine."""
    spec = StackSpec(engines=(engine,) * 2, model=MODEL, time_scale=1.0, pd=True,
                     prefill_per_engine=2, max_restarts=10,
                     sim_args=("--prefill-overhead-ms", "1"))
    async with LocalStack(spec) as stack, supervised(stack):
        async with streaming_load(stack.url, MODEL, workers=12, long_prompts=True) as load:
            await _until(lambda: len(load.outcomes) >= 20)
            for victim in (stack.decode[0], stack.prefill[0]):
                os.kill(stack.child(victim.name).proc.pid, signal.SIGKILL)
                await _until(lambda v=victim: stack.child(v.name).restarts == 1)
                seen = len(load.outcomes)
                await _until(lambda s=seen: len(load.outcomes) >= s + 20)
    kinds = load.kinds()
    assert kinds["before_first_byte"] == 0, load.failures("before_first_byte")[:5]
    assert kinds["ok"] >= 40
