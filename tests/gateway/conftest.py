"""Fixtures for gateway tests: two simulators of the `engine` dialect and an HTTP client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _gateway_stack import sim_config

from llmd.sim import RunningSim, running_sim


@pytest.fixture
async def sims(engine: str) -> AsyncIterator[list[RunningSim]]:
    """Two zero-latency simulators speaking `engine`'s dialect."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_sim(sim_config(engine)))
               for _ in range(2)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
