"""`LocalStack(pd=True)` (what `llmd up --pd` runs), end to end through the real Envoy for each
engine: prefill sims, decode sims behind `llmd sidecar`, the EPP with the P/D config.

What shows where a prompt was computed: the decode sim answers `x-llmd-kv-source: transfer`
when its KV came from a prefill sim and `local` when it computed it, and every sim counts the
prompt tokens it computed (`llmd_sim_prompt_tokens_computed_total`) and the KV tokens it sent
or received (`llmd_sim_kv_transfer_tokens_total{direction}`).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from collections.abc import Iterable

import aiohttp
import openai
import pytest
from _cli import llmd_process, read_until
from prometheus_client.parser import text_string_to_metric_families

from llmd._proc import stop_process
from llmd.engines import get_adapter
from llmd.gateway import LocalStack, StackSpec
from llmd.sim import SimConfig, running_sim
from llmd.sim.fleet import FleetEndpoint

MODEL = "llmd-sim"
KV_SOURCE = "x-llmd-kv-source"
WORDS = ("incident", "report", "engineer", "latency", "queue", "cache", "replica", "rollout",
         "gateway", "prefill", "decode", "token", "kernel", "budget", "owner", "risk")


def long_prompt(seed: int, words: int = 120) -> str:
    """A prompt far above the decider's 16 uncached tokens, distinct per seed."""
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(WORDS)}{rng.randrange(1000)}" for _ in range(words))


def pd_spec(engine: str, **fields: object) -> StackSpec:
    return StackSpec(engines=(engine,), model=MODEL, time_scale=0, pd=True,
                     **fields)  # type: ignore[arg-type]


async def counters(http: aiohttp.ClientSession, eps: Iterable[FleetEndpoint]) -> dict[str, float]:
    """Prompt tokens computed, KV tokens sent and received, summed over `eps`."""
    out = {"computed": 0.0, "sent": 0.0, "received": 0.0}
    for ep in eps:
        async with http.get(ep.url + "/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "llmd_sim_prompt_tokens_computed_total":
                    out["computed"] += s.value
                elif s.name == "llmd_sim_kv_transfer_tokens_total":
                    out[s.labels["direction"]] += s.value
    return out


def client(stack: LocalStack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="none", max_retries=0,
                              timeout=20)


async def test_pd_stack_disaggregates_long_prompts_only(engine: str) -> None:
    """Long uncached prompts go through a prefill sim; short and cached ones stay on decode;
    streaming carries usage; concurrent requests never cross (same text as a plain sim);
    with every prefill sim gone a disaggregated request is a clear, quick error."""
    spec = pd_spec(engine, prefill_per_engine=2, prefill_args=("--time-scale", "0.2"))
    async with LocalStack(spec) as stack, aiohttp.ClientSession() as http, \
            client(stack) as gw:
        assert len(stack.prefill) == 2 and len(stack.decode) == len(stack.endpoints) == 1
        decode = stack.decode[0]
        prompt = long_prompt(1)
        raw = await gw.completions.with_raw_response.create(
            model=MODEL, prompt=prompt, max_tokens=5, extra_body={"ignore_eos": True})
        done = raw.parse()
        assert raw.headers[KV_SOURCE] == "transfer"
        assert raw.headers["x-llmd-served-by"] == decode.address
        assert done.usage is not None and done.usage.completion_tokens == 5
        tokens = done.usage.prompt_tokens
        pre, dec = await counters(http, stack.prefill), await counters(http, [decode])
        assert pre["computed"] == pre["sent"] == tokens  # the prefill sim served the prompt
        assert dec["computed"] == 0 and dec["received"] == tokens  # decode: a transfer

        # Short, then the same long prompt (cached on decode): decode alone where the engine's
        # decode role can serve alone (vLLM); SGLang decode mode needs a bootstrap room on every
        # request, so the EPP still pairs it with a prefill sim, which finds the prompt cached.
        alone = get_adapter(engine).pd.decode_alone
        for text in ("hi", prompt):
            raw = await gw.completions.with_raw_response.create(
                model=MODEL, prompt=text, max_tokens=3)
            assert raw.headers[KV_SOURCE] == ("local" if alone else "transfer"), text[:20]
        after = await counters(http, stack.prefill)
        if alone:
            assert after == pre  # no prefill counter moved
        else:  # "hi" plus the cached prompt's partial last block, not the prompt again
            assert 0 < after["computed"] - pre["computed"] < tokens / 2

        async with gw.chat.completions.with_streaming_response.create(
                model=MODEL, messages=[{"role": "user", "content": long_prompt(2)}],
                max_tokens=6, stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True}) as resp:
            assert resp.headers[KV_SOURCE] == "transfer"
            chunks = [chunk async for chunk in await resp.parse()]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens == 6
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 0  # the prefill side's count

        await _never_cross(gw, engine)

        for ep in stack.prefill:
            child = next(c for c in stack.children if c.spec.name == ep.name)
            await stop_process(child.proc)
        await _epp_sees_unhealthy(http, stack, {ep.address for ep in stack.prefill})
        # Every prefill endpoint is gone: a decode role that serves alone (vLLM) computes the
        # prompt itself; one that cannot (SGLang decode mode) is a 503 saying why.
        if alone:
            raw = await gw.completions.with_raw_response.create(
                model=MODEL, prompt=long_prompt(3), max_tokens=3)
            assert raw.headers[KV_SOURCE] == "local"
        else:
            start = time.monotonic()
            with pytest.raises(openai.APIStatusError) as info:
                await gw.completions.create(model=MODEL, prompt=long_prompt(3), max_tokens=3)
            assert time.monotonic() - start < 15
            assert info.value.status_code == 503, info.value
            assert "no prefill endpoint" in info.value.message


async def _epp_sees_unhealthy(http: aiohttp.ClientSession, stack: LocalStack,
                              addresses: set[str]) -> None:
    """Until the EPP's /metrics reports every one of `addresses` out of scheduling."""
    assert stack.epp is not None
    async with asyncio.timeout(10):
        while True:
            async with http.get(stack.epp.metrics_url) as resp:
                text = await resp.text()
            down = {s.labels["endpoint"] for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == "llmd_epp_endpoint_healthy" and not s.value}
            if addresses <= down:
                return
            await asyncio.sleep(0.05)  # polling a condition under a deadline


async def _never_cross(gw: openai.AsyncOpenAI, engine: str) -> None:
    """16 concurrent disaggregated requests answer exactly what a plain sim answers."""
    plain_cfg = SimConfig(engine=engine, model=MODEL, port=0, time_scale=0)  # type: ignore[arg-type]
    async with running_sim(plain_cfg) as sim, openai.AsyncOpenAI(
            base_url=sim.url + "/v1", api_key="none", max_retries=0) as plain:
        prompts = [long_prompt(100 + i, 40 + i) for i in range(16)]

        async def both(prompt: str) -> tuple[str, str, str]:
            pd, alone = await asyncio.gather(
                gw.completions.with_raw_response.create(model=MODEL, prompt=prompt,
                                                        max_tokens=5),
                plain.completions.create(model=MODEL, prompt=prompt, max_tokens=5))
            return pd.headers[KV_SOURCE], pd.parse().choices[0].text, alone.choices[0].text

        answers = await asyncio.gather(*(both(p) for p in prompts))
    assert {source for source, _, _ in answers} == {"transfer"}
    assert all(got == want for _, got, want in answers)


async def test_pd_stack_prefill_error_reaches_the_client(engine: str) -> None:
    spec = pd_spec(engine, prefill_args=("--failure-rate", "1",
                                         "--failure-kinds", "invalid_request"))
    async with LocalStack(spec) as stack, client(stack) as gw:
        start = time.monotonic()
        # A new prompt each time: the EPP's approximate prefix index learns a prompt when it
        # schedules it, failed or not (as llm-d's does), so a repeat would count as cached.
        for seed, stream in ((4, False), (5, True)):
            with pytest.raises(openai.BadRequestError, match="injected failure"):
                await gw.completions.create(model=MODEL, prompt=long_prompt(seed), max_tokens=3,
                                            stream=stream)
        assert time.monotonic() - start < 15


async def test_pd_stack_disallowed_prefill_target_is_403(engine: str) -> None:
    spec = pd_spec(engine, ssrf_protection=False,
                   sidecar_args=("--enable-ssrf-protection", "--prefill-allow", "10.9.9.9"))
    async with LocalStack(spec) as stack, client(stack) as gw:
        with pytest.raises(openai.PermissionDeniedError, match="not allowed"):
            await gw.completions.create(model=MODEL, prompt=long_prompt(6), max_tokens=3)


async def test_llmd_up_pd_serves_both_engines_and_ctrl_c_stops_all() -> None:
    """`llmd up --pd`: a prefill sim and a decode sim behind a sidecar per engine; a long prompt
    on each engine's decode sim arrives by transfer; Ctrl-C leaves no child behind."""
    async with llmd_process("up", "--pd", "--per-engine", "1", "--gateway-port", "0",
                            "--base-port", "0", "--bootstrap-port", "0",
                            "--time-scale", "0") as proc:
        out = (await read_until(proc, r"Ctrl-C stops every process", 60))[1]
        rows = re.findall(r"│ (\S+)\s*│ (\w+)\s*│ (\S+)\s*│\s*(\d+) │ (\w+)", out)
        kinds = [r[1] for r in rows]
        assert kinds == ["gateway", "picker", "prefill", "prefill", "decode", "decode",
                         "sidecar", "sidecar"], out
        decode = {r[2].removeprefix("http://"): r[0] for r in rows if r[1] == "decode"}
        engines_seen = set()
        async with openai.AsyncOpenAI(base_url=rows[0][2] + "/v1", api_key="none",
                                      max_retries=0) as gw:
            for seed in range(12):
                raw = await gw.completions.with_raw_response.create(
                    model=MODEL, prompt=long_prompt(50 + seed), max_tokens=2)
                assert raw.headers[KV_SOURCE] == "transfer"
                engines_seen.add(decode[raw.headers["x-llmd-served-by"]].split("-")[1])
                if len(engines_seen) == 2:
                    break
        assert engines_seen == {"vllm", "sglang"}
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    for pid in (int(r[3]) for r in rows):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_pd_spec_ports_and_loopback_aliases() -> None:
    spec = StackSpec(engines=("vllm", "sglang", "sglang"), pd=True, prefill_per_engine=2,
                     base_port=9100, gateway_port=9080, bootstrap_port=9998)
    names = dict(spec.fixed_ports())
    assert names["gateway"] == 9080 and names["prefill bootstrap"] == 9998
    assert [names[f"decode-{e}-{i}"] for i, e in enumerate(spec.engines)] == [9100, 9101, 9102]
    assert [names[f"prefill-{e}-{i}"] for i, e in
            enumerate(("vllm", "vllm", "sglang", "sglang"))] == [9103, 9104, 9105, 9106]
    assert names["sidecar-sglang-2"] == 9109 and names["epp ext_proc"] == 9110
    with pytest.raises(ValueError, match="loopback aliases"):
        StackSpec(engines=("sglang",), pd=True, prefill_per_engine=2, host="::1")
    StackSpec(engines=("vllm",), pd=True, prefill_per_engine=2, host="::1")  # no side port


async def test_pd_sidecars_called_directly_refuse_every_other_target(engine: str) -> None:
    """SSRF protection is on by default: a client calling a sidecar directly can make it send a
    prefill leg only to its engine's prefill sims, not to Envoy's admin page, the EPP, the
    decode engine or anything else on the host."""
    async with LocalStack(pd_spec(engine)) as stack, aiohttp.ClientSession() as http:
        assert stack.gateway is not None and stack.epp is not None
        sidecar, prefill = stack.endpoints[0], stack.prefill[0]
        admin_port = stack.gateway.admin_url.rsplit(":", 1)[1]
        targets = {
            f"127.0.0.1:{admin_port}": 403, stack.epp.address: 403,
            f"127.0.0.1:{stack.epp.metrics_port}": 403, stack.decode[0].address: 403,
            "127.0.0.1:22": 403, "169.254.169.254:80": 403, "127.1:1": 400,
            f"{prefill.address},127.0.0.1:{admin_port}": 200, prefill.address: 200,
        }
        for target, status in targets.items():
            async with http.post(sidecar.url + "/v1/completions",
                                 headers={"x-prefiller-host-port": target},
                                 json={"model": MODEL, "prompt": long_prompt(7),
                                       "max_tokens": 2}) as resp:
                body = await resp.json()
                assert resp.status == status, (target, body)
                if status != 200:
                    assert body["error"]["code"] == status
