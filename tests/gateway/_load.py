"""Streaming load through the gateway that sorts every request by how it ended, for fault tests:
`ok` (200 and `data: [DONE]`), `before_first_byte` (an error status, or the connection failed
before any response) and `mid_stream` (a 200 whose stream broke off)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from llmd.sim import SERVED_BY_HEADER


@dataclass
class Outcome:
    kind: str
    status: int
    served_by: str
    at: float
    detail: str = ""


@dataclass
class Load:
    outcomes: list[Outcome] = field(default_factory=list)

    def kinds(self) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes)

    def served_after(self, t: float) -> set[str]:
        return {o.served_by for o in self.outcomes if o.kind == "ok" and o.at > t}

    def failures(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]


async def _one(http: aiohttp.ClientSession, url: str, model: str, i: int,
               long_prompt: bool = False) -> Outcome:
    prompt = f"request {i}: tell me about the weather"
    if long_prompt:  # long enough for the P/D decider to send it to a prefill server
        prompt = f"{prompt} and the incident report number {i}. " * 12
    body = {"model": model, "prompt": prompt, "stream": True, "max_tokens": 24,
            "ignore_eos": True}
    status, served, started = 0, "", False
    try:
        async with http.post(url + "/v1/completions", json=body) as resp:
            status, served = resp.status, resp.headers.get(SERVED_BY_HEADER, "")
            if status != 200:
                text = (await resp.read()).decode(errors="replace")
                return Outcome("before_first_byte", status, served, time.monotonic(), text)
            data = b""
            async for chunk in resp.content.iter_any():
                started = True
                data += chunk
            done = data.rstrip().endswith(b"data: [DONE]")
            return Outcome("ok" if done else "mid_stream", status, served, time.monotonic(),
                           "" if done else "stream ended without [DONE]")
    except (aiohttp.ClientError, TimeoutError) as exc:
        # A 200's headers are the response's first bytes: once they reached the client, the
        # stream had begun (Envoy cannot retry it), even if the body broke before its first
        # chunk (the engine died between sending its headers and its first token).
        kind = "mid_stream" if started or status == 200 else "before_first_byte"
        return Outcome(kind, status, served, time.monotonic(), repr(exc))


@contextlib.asynccontextmanager
async def streaming_load(url: str, model: str, workers: int = 24,
                         long_prompts: bool = False) -> AsyncIterator[Load]:
    """`workers` clients each sending streaming completions back to back until the block ends;
    every request is bounded (30 s), so a hung stream shows as a failure, not a hang."""
    load = Load()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30, sock_read=10)

    async def worker(w: int, http: aiohttp.ClientSession) -> None:
        i = 0
        while not stop.is_set():
            load.outcomes.append(await _one(http, url, model, w * 100_000 + i, long_prompts))
            i += 1

    connector = aiohttp.TCPConnector(limit=workers, force_close=False)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        tasks = [asyncio.create_task(worker(w, http), name=f"load-{w}") for w in range(workers)]
        try:
            yield load
        finally:
            stop.set()
            async with asyncio.timeout(40):
                await asyncio.gather(*tasks)
