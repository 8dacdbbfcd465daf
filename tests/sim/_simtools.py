"""Helpers for simulator tests: waiting on conditions with a deadline, prompts of a known size."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import aiohttp

from llmd.engines import EndpointMetrics, MetricsPage, get_adapter
from llmd.kvcache import BuiltinTokenizer
from llmd.sim import RunningSim

StartSim = Callable[..., Awaitable[RunningSim]]
"""The `start_sim` fixture: `await start_sim(**SimConfig fields)`."""

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def prompt_of(tokens: int, seed: int) -> str:
    """A prompt of exactly `tokens` built-in tokens (no BOS), distinct per seed."""
    rng = random.Random(seed)
    # Letters only: like GPT-2, the built-in tokenizer splits "alpha123" into two pieces.
    text = " ".join(rng.choice(WORDS) + _letters(rng.randrange(1000)) for _ in range(tokens))
    assert len(BuiltinTokenizer().encode(text, add_special_tokens=False)) == tokens
    return text


def _letters(n: int) -> str:
    return "".join("abcdefghij"[int(d)] for d in str(n))


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout_s: float = 10.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)


async def scrape(http: aiohttp.ClientSession, url: str, engine: str) -> EndpointMetrics:
    """The sim's /metrics read back through the engine adapter, as the EPP reads it."""
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    adapter = get_adapter(engine)
    full = adapter.endpoint_metrics(MetricsPage.parse(text))
    # The EPP's scraper parses only the families the adapter reads: both must agree.
    assert adapter.endpoint_metrics(MetricsPage.parse(text, adapter.scraped_families)) == full
    return full
