"""Precise prefix-cache routing against two real vLLM servers (CPU wheel, the tiny local Llama):
the EPP's index, fed only by their KV events, predicts what each server serves from its prefix
cache (`vllm:prefix_cache_hits_total`) within a few percent, evictions included.

Both servers publish KV events on an `ipc://` socket of their own (vLLM binds it; nothing
listens on the network) and run with a small KV cache (`--num-gpu-blocks-override`), so the
shared prefixes do not all fit and the servers evict. `llmd.gateway.LocalStack` (what `llmd up
--endpoint ...` runs) fronts them with the llmd EPP and Envoy; the official `openai` client
sends chat and completions requests through the gateway, one at a time (a decision made while
an earlier request is still being prefilled could not know its blocks yet, in any index).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from llmd._proc import Child, ChildSpec, Supervisor
from llmd.gateway import LocalStack, StackSpec

MODEL = "tiny"
ENGINE_BLOCK = 32
GPU_BLOCKS = 48  # x 32 tokens per server: room for about 5 of the 12 shared prefixes
GROUPS = 12
REQUESTS = 72
TOLERANCE = 0.03  # "within a few percent" of what each server reports

WORDS = ("cache route token block engine prefix model server decode prefill pool event "
         "index score queue load batch stream gateway picker kernel memory tensor").split()


def precise_config(tokenizer: Path) -> str:
    return f"""\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-scorer
  parameters:
    tokenizer: {tokenizer}
    tokenProcessorConfig: {{blockSize: 16}}
    kvEventsConfig: {{engineType: vllm}}
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: precise-prefix-cache-scorer, weight: 3}}
  - {{pluginRef: queue-scorer, weight: 2}}
  - {{pluginRef: kv-cache-utilization-scorer, weight: 2}}
  - pluginRef: max-score-picker
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vllm_argv(python: Path, model: Path, port: int, events: str) -> list[str]:
    # The flags real-engines.md found to start fast and serve on this CPU.
    config = ('{"enable_kv_cache_events": true, "publisher": "zmq", '
              f'"endpoint": "{events}", "topic": "kv@127.0.0.1:{port}@{MODEL}"}}')
    return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "512", "--enforce-eager", "--dtype", "float32",
            "--block-size", str(ENGINE_BLOCK), "--enable-prefix-caching",
            "--num-gpu-blocks-override", str(GPU_BLOCKS), "--disable-uvicorn-access-log",
            "--kv-events-config", config]


async def wait_healthy(child: Child, url: str, timeout_s: float = 240) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        async with asyncio.timeout(timeout_s):
            while True:
                assert child.proc.returncode is None, child.describe_exit()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url + "/health") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def vllm_servers(python: Path, model: Path, run_dir: Path, n: int
                       ) -> AsyncIterator[list[tuple[int, str]]]:
    """`n` real vLLM servers: (port, KV-event socket) each."""
    async with Supervisor() as sup:
        servers = []
        for i in range(n):
            port, events = free_port(), f"ipc://{run_dir}/vllm-{i}.kv"
            env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "VLLM_CPU_OMP_THREADS_BIND": str(i % 2)}
            child = await sup.start(ChildSpec(f"vllm-{i}", vllm_argv(python, model, port, events),
                                              env=env, prints_listening=False,
                                              start_timeout_s=240))
            servers.append((child, port, events))
        await asyncio.gather(*(wait_healthy(c, f"http://127.0.0.1:{p}") for c, p, _ in servers))
        yield [(port, events) for _, port, events in servers]


async def metric(http: aiohttp.ClientSession, url: str, pattern: str) -> float:
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(float(m.group(1)) for m in re.finditer(pattern + r"\S* (\S+)\n", text))


def workload() -> list[tuple[str, int, str]]:
    """(kind, group, question): GROUPS shared prefixes, chat and completions, shuffled."""
    rng = random.Random(0)
    order = [(("chat", "completions")[g % 2], g, f"question {i}: " + " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(3, 30)))) for i, g in
        enumerate(rng.choice(range(GROUPS)) for _ in range(REQUESTS))]
    return order


def system_prompt(group: int) -> str:
    rng = random.Random(1000 + group)
    return f"Group {group} rules. " + " ".join(rng.choice(WORDS) for _ in range(160))


@pytest.mark.timeout(900)  # two real servers start in about a minute on 2 cores
async def test_the_precise_index_predicts_real_vllm_prefix_cache_hits(
        vllm_python: Path, tiny_llama: Path, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        servers = await stack.enter_async_context(
            vllm_servers(vllm_python, tiny_llama, tmp_path, 2))
        flags = tuple(f"127.0.0.1:{port},engine=vllm,kv-events={events}"
                      for port, events in servers)
        up = await stack.enter_async_context(LocalStack(StackSpec(
            external=flags, epp_config_text=precise_config(tiny_llama), gateway_port=0,
            base_port=0, start_timeout_s=60)))
        assert up.epp is not None
        http = await stack.enter_async_context(aiohttp.ClientSession())
        client = await stack.enter_async_context(openai.AsyncOpenAI(
            base_url=up.url + "/v1", api_key="none", max_retries=0))
        hits = r'vllm:prefix_cache_hits_total\{'
        before = [await metric(http, f"http://127.0.0.1:{p}/metrics", hits) for p, _ in servers]
        await asyncio.sleep(1.0)  # the EPP's subscriptions are connected

        prompt_tokens = 0
        started = time.monotonic()
        for kind, group, question in workload():
            if kind == "chat":
                chat = await client.chat.completions.create(model=MODEL, max_tokens=4, messages=[
                    {"role": "system", "content": system_prompt(group)},
                    {"role": "user", "content": question}])
                assert chat.usage is not None
                prompt_tokens += chat.usage.prompt_tokens
            else:
                done = await client.completions.create(
                    model=MODEL, max_tokens=4, prompt=f"{system_prompt(group)}\n{question}")
                assert done.usage is not None
                prompt_tokens += done.usage.prompt_tokens
            await asyncio.sleep(0.05)  # the last request's events reach the EPP
        elapsed = time.monotonic() - started

        await asyncio.sleep(0.5)
        report = []
        for (port, _), hits_before in zip(servers, before, strict=True):
            ep = f"127.0.0.1:{port}"
            actual = await metric(http, f"http://127.0.0.1:{port}/metrics", hits) - hits_before
            predicted = await metric(http, up.epp.metrics_url,
                                     rf'llmd_epp_precise_prefix_hit_tokens_total\{{endpoint="{ep}"')
            removed = await metric(http, up.epp.metrics_url,
                                   rf'llmd_epp_kv_events_total\{{endpoint="{ep}",type="BlockRemoved"')
            report.append((ep, actual, predicted, removed))
        print(f"\n{REQUESTS} requests in {elapsed:.1f} s, {prompt_tokens} prompt tokens; "
              "per server (endpoint, vllm:prefix_cache_hits, EPP predicted, BlockRemoved "
              f"events): {report}")
        for ep, actual, predicted, _ in report:
            assert actual > 0.2 * prompt_tokens / len(servers), (ep, actual, prompt_tokens)
            assert abs(predicted - actual) <= TOLERANCE * actual, (ep, actual, predicted)
        assert sum(r[3] for r in report) > 0, "no server evicted: the cache is too large"
