"""Fixtures for simulator tests: in-process simulators on 127.0.0.1:0, one dialect per `engine`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from _simtools import StartSim

from llmd.sim import RunningSim, SimConfig, running_sim


@pytest.fixture
async def start_sim(engine: str) -> AsyncIterator[StartSim]:
    """`await start_sim(**SimConfig fields)`: a simulator of `engine`'s dialect (zero latency
    unless `time_scale` is given), stopped at the end of the test."""
    async with AsyncExitStack() as stack:

        async def start(**fields: Any) -> RunningSim:
            cfg = SimConfig(engine=engine, port=0, **{"time_scale": 0.0, **fields})  # type: ignore[arg-type]
            return await stack.enter_async_context(running_sim(cfg))

        yield start


@pytest.fixture
async def sim(start_sim: StartSim) -> RunningSim:
    return await start_sim()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
