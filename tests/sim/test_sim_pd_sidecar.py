"""P/D through the real `llmd sidecar` (both connectors) in front of decode simulators.

The sidecar runs in-process (its aiohttp app on 127.0.0.1:0) for most cases and as a process
beside `llmd sim --role prefill|decode` processes for one end-to-end case per engine.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import openai
import pytest
from _pdtools import MODEL, pd_counters, pd_pair, post
from _sidecar_tools import running_sidecar
from _simtools import prompt_of, scrape, wait_until
from openai.types import CompletionUsage

from llmd._http import listen_socket
from llmd._proc import stop_process
from llmd.engines import get_adapter
from llmd.sidecar import PREFILLER_HEADER, SidecarConfig
from llmd.sim import RunningSim, SimConfig, running_sim

LLMD = [sys.executable, "-c", "from llmd.cli import main; main()"]


@asynccontextmanager
async def pd_stack(engine: str, prefill: dict[str, Any] | None = None, host: str = "127.0.0.1",
                   **sidecar: Any) -> AsyncIterator[tuple[RunningSim, RunningSim, str]]:
    """Prefill sim, decode sim and a sidecar in front of the decode sim, for `engine`."""
    async with pd_pair(engine, prefill={"host": host, **(prefill or {})},
                       decode={"host": host}) as (p, d):
        fields: dict[str, Any] = {
            "host": "127.0.0.1", "port": 0, "model_server_port": d.port,
            "model_server_host": host,
            "kv_connector": get_adapter(engine).sidecar_connector,
            "sglang_bootstrap_port": p.side_ports.get("bootstrap", 8998), **sidecar}
        async with running_sidecar(SidecarConfig(**fields)) as url:
            yield p, d, url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def _client(url: str, prefill: RunningSim | str) -> openai.AsyncOpenAI:
    target = prefill if isinstance(prefill, str) else prefill.url.removeprefix("http://")
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                              default_headers={PREFILLER_HEADER: target})


async def test_disaggregated_through_the_sidecar(engine: str,
                                                 http: aiohttp.ClientSession) -> None:
    async with pd_stack(engine) as (p, d, url), _client(url, p) as client:
        raw = await client.completions.with_raw_response.create(
            model=MODEL, prompt=prompt_of(120, 1), max_tokens=6, extra_body={"ignore_eos": True})
        answer = raw.parse()
        assert raw.headers["x-llmd-served-by"] == d.state.served_by
        assert raw.headers["x-llmd-kv-source"] == "transfer"
        assert answer.usage is not None and answer.usage.completion_tokens == 6
        prompt_tokens = answer.usage.prompt_tokens
        pc, dc = await pd_counters(http, p, engine), await pd_counters(http, d, engine)
        assert pc["computed"] == prompt_tokens and dc["computed"] == 0
        assert dc["received"] == prompt_tokens and dc["misses"] == 0
        # cached_tokens come from the prefill side (nothing was cached there yet).
        assert answer.usage.prompt_tokens_details is not None
        assert answer.usage.prompt_tokens_details.cached_tokens == 0


async def test_streaming_and_prefill_cached_tokens(engine: str,
                                                   http: aiohttp.ClientSession) -> None:
    async with pd_stack(engine) as (p, _, url), _client(url, p) as client:
        prefix = prompt_of(200, 2)

        async def ask(question: str) -> tuple[str, CompletionUsage]:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prefix + question}],
                max_tokens=8, stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True})
            text, usage = "", None
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                if chunk.usage is not None:
                    usage = chunk.usage
            assert usage is not None and usage.completion_tokens == 8
            return text, usage

        text, cold = await ask(" first")
        assert text.strip()
        before = (await scrape(http, p.url, engine)).prefix_cache_hits or 0
        _, warm = await ask(" second")
        after = (await scrape(http, p.url, engine)).prefix_cache_hits or 0
        assert cold.prompt_tokens_details is not None and warm.prompt_tokens_details is not None
        assert cold.prompt_tokens_details.cached_tokens == 0
        # The final SSE chunk carries the prefill side's cached tokens, whatever the decode
        # side counted (vLLM's decode would report the whole transferred prompt).
        assert warm.prompt_tokens_details.cached_tokens == after - before >= 192


async def test_ipv6_hosts(engine: str) -> None:
    async with pd_stack(engine, host="::1") as (p, _, url), _client(url, p) as client:
        assert p.url.startswith("http://[::1]:")
        raw = await client.completions.with_raw_response.create(
            model=MODEL, prompt=prompt_of(40, 3), max_tokens=3)
        assert raw.headers["x-llmd-kv-source"] == "transfer"


async def test_concurrent_requests_never_cross(engine: str) -> None:
    cfg = SimConfig(engine=engine, port=0, time_scale=0.0)  # type: ignore[arg-type]
    async with pd_stack(engine, prefill={"time_scale": 0.2}) as (p, _, url), \
            _client(url, p) as client, running_sim(cfg) as reference, \
            openai.AsyncOpenAI(base_url=reference.url + "/v1", api_key="x") as plain:
        prompts = [prompt_of(30 + i, 200 + i) for i in range(16)]

        async def both(prompt: str) -> tuple[str, str]:
            pd, alone = await asyncio.gather(
                client.completions.create(model=MODEL, prompt=prompt, max_tokens=5),
                plain.completions.create(model=MODEL, prompt=prompt, max_tokens=5))
            return pd.choices[0].text, alone.choices[0].text

        for got, want in await asyncio.gather(*(both(p) for p in prompts)):
            assert got == want


async def test_prefill_down_decodes_alone_or_is_a_clear_error(engine: str) -> None:
    """Nothing was computed: a decode engine that serves alone (vLLM) prefills the request
    itself; one that cannot (SGLang decode mode) answers a 503 naming the prefill endpoint."""
    closed = listen_socket("127.0.0.1", 0)
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with pd_stack(engine) as (_, _, url), _client(url, dead) as client:
        start = time.monotonic()
        if get_adapter(engine).pd.decode_alone:
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt="hello", max_tokens=4)
            assert raw.headers["x-llmd-kv-source"] == "local"
            return
        with pytest.raises(openai.APIStatusError) as info:
            await client.completions.create(model=MODEL, prompt="hello", max_tokens=4)
        assert time.monotonic() - start < 10
        assert info.value.status_code in (502, 503)
        assert "prefill" in info.value.message or "bootstrap" in info.value.message


async def test_disallowed_prefill_target_is_403(engine: str) -> None:
    async with pd_stack(engine, enable_ssrf_protection=True,
                        prefill_allowlist=("10.9.9.9",)) as (p, _, url), \
            _client(url, p) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.completions.create(model=MODEL, prompt="hello", max_tokens=4)


async def test_prefill_error_reaches_the_client_and_nothing_hangs(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with pd_stack(engine, prefill={"failure_rate": 1.0,
                                         "failure_kinds": ("invalid_request",)}) as (p, d, url), \
            _client(url, p) as client:
        start = time.monotonic()
        with pytest.raises(openai.BadRequestError):
            await client.completions.create(model=MODEL, prompt="hello", max_tokens=4,
                                            stream=True)
        assert time.monotonic() - start < 10

        async def idle() -> bool:
            return d.state.engine.num_running == 0 and d.state.pd.transfer_queue() == 0

        await wait_until(idle, timeout_s=5, what="the decode leg to be released")
        assert (await pd_counters(http, p, engine))["injected"] == 1


async def test_nixlv2_retries_prefill_503(http: aiohttp.ClientSession) -> None:
    async with pd_stack("vllm", prefill={"failure_rate": 1.0, "failure_kinds": ("server_error",)},
                        prefill_max_retries=2, prefill_retry_backoff_s=0.01) as (p, _, url), \
            _client(url, p) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.completions.create(model=MODEL, prompt="hello", max_tokens=4)
        assert info.value.status_code == 503
        assert (await pd_counters(http, p, "vllm"))["injected"] == 3  # first try + 2 retries

    async with pd_stack("vllm", prefill={"failure_rate": 0.5, "failure_kinds": ("server_error",),
                                         "seed": 3},
                        prefill_max_retries=6, prefill_retry_backoff_s=0.001) as (p, d, url), \
            _client(url, p) as client:
        for i in range(6):
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt=prompt_of(40, i), max_tokens=2)
            assert raw.headers["x-llmd-kv-source"] == "transfer"
        assert (await pd_counters(http, p, "vllm"))["injected"] > 0
        assert (await pd_counters(http, d, "vllm"))["misses"] == 0


async def test_no_header_is_decode_only(engine: str, http: aiohttp.ClientSession) -> None:
    async with pd_stack(engine) as (p, d, url):
        answer = await post(http, url, {"model": MODEL, "prompt": "hello", "max_tokens": 2})
        if get_adapter(engine).pd.handoff == "bootstrap-room":
            # An SGLang decode-mode server cannot serve alone: no room, a clear 400.
            assert answer.status == 400 and answer.body["error"]["param"] == "bootstrap_room"
        else:
            assert answer.status == 200 and answer.kv_source == "local"
        assert (await pd_counters(http, p, engine))["computed"] == 0


# Real processes ----------------------------------------------------------------------------


async def _start(stack: AsyncExitStack, *args: str, lines: int = 1) -> list[tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(*LLMD, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    stack.push_async_callback(stop_process, proc, 10)
    assert proc.stdout is not None
    found: list[tuple[str, int]] = []
    seen = ""
    async with asyncio.timeout(30):
        while len(found) < lines:
            line = (await proc.stdout.readline()).decode()
            assert line, f"llmd {' '.join(args)} exited early:\n{seen}"
            seen += line
            if m := re.search(r"listening on ([\d.]+):(\d+)", line):
                found.append((m.group(1), int(m.group(2))))
    return found


async def test_processes_disaggregate_and_stream(engine: str) -> None:
    common = ("sim", "--engine", engine, "--port", "0", "--time-scale", "0.1")
    async with AsyncExitStack() as stack:
        # An SGLang prefill server also prints `bootstrap listening on HOST:PORT`.
        side = get_adapter(engine).pd.handoff == "bootstrap-room"
        prefill = await _start(stack, *common, "--role", "prefill",
                               "--disaggregation-bootstrap-port", "0", lines=1 + side)
        (d_host, d_port), = await _start(stack, *common, "--role", "decode")
        bootstrap = prefill[1][1] if len(prefill) > 1 else 8998
        (s_host, s_port), = await _start(
            stack, "sidecar", "--host", "127.0.0.1", "--port", "0",
            "--model-server-port", str(d_port),
            "--kv-connector", get_adapter(engine).sidecar_connector,
            "--sglang-bootstrap-port", str(bootstrap))
        p_host, p_port = prefill[0]
        async with openai.AsyncOpenAI(
                base_url=f"http://{s_host}:{s_port}/v1", api_key="x", max_retries=0,
                default_headers={PREFILLER_HEADER: f"{p_host}:{p_port}"}) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": prompt_of(80, 9)}],
                max_tokens=5, stream=True)
            assert raw.headers["x-llmd-served-by"] == f"{d_host}:{d_port}"
            assert raw.headers["x-llmd-kv-source"] == "transfer"
            text = "".join([c.choices[0].delta.content or "" async for c in raw.parse()
                            if c.choices])
            assert text.strip()


async def test_sim_rejects_an_unknown_role() -> None:
    proc = await asyncio.create_subprocess_exec(*LLMD, "sim", "--role", "prefil",
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2 and "role" in out and "'prefill'" in out
