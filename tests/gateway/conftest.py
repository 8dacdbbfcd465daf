"""Fixtures for gateway tests: two backends per engine dialect and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from _gateway_stack import Backend


@pytest.fixture
async def backends(engine: str) -> AsyncIterator[list[Backend]]:
    """Two backends speaking `engine`'s metrics dialect."""
    started = [Backend(engine), Backend(engine)]
    try:
        for b in started:
            await b.start()
        yield started
    finally:
        for b in started:
            if b.runner is not None:
                await b.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
