"""The scraper against a small aiohttp server serving each engine's metric page."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from _pages import serve_text
from prometheus_client import CollectorRegistry, generate_latest

from llmd.engines import EndpointMetrics, get_adapter
from llmd.epp import Datastore, EndpointSpec, Scraper, ScrapeSettings
from llmd.epp.metrics import EppMetrics


def _page(engine: str, waiting: int, running: int, kv: float) -> str:
    n = get_adapter(engine).metric_names
    return (f"# TYPE {n.waiting} gauge\n{n.waiting}{{model_name=\"m\"}} {waiting}\n"
            f"# TYPE {n.running} gauge\n{n.running}{{model_name=\"m\"}} {running}\n"
            f"# TYPE {n.kv_usage} gauge\n{n.kv_usage}{{model_name=\"m\"}} {kv}\n"
            "# TYPE unrelated_metric gauge\nunrelated_metric 1\n")


@pytest.fixture
async def metrics_server(engine: str) -> AsyncIterator[int]:
    async with serve_text("/metrics", _page(engine, 4, 2, 0.25)) as port:
        yield port


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_scrape_once_reads_the_engine_dialect(engine: str, metrics_server: int) -> None:
    spec = EndpointSpec("127.0.0.1", metrics_server, {"llm-d.ai/engine-type": engine})
    async with aiohttp.ClientSession() as session:
        got = await Scraper(Datastore(), session).scrape_once(spec)
    assert got == EndpointMetrics(waiting=4, running=2, kv_usage=0.25)


async def test_run_fills_datastore_and_counts_errors(engine: str, metrics_server: int) -> None:
    store = Datastore()
    live = EndpointSpec("127.0.0.1", metrics_server, {"llm-d.ai/engine-type": engine})
    dead = EndpointSpec("127.0.0.1", _dead_port(), {"llm-d.ai/engine-type": engine})
    store.set_endpoints([live, dead])
    metrics = EppMetrics(CollectorRegistry())
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        scraper = Scraper(store, session, ScrapeSettings(interval_s=0.01), metrics)
        task = asyncio.create_task(scraper.run(stop))
        try:
            async with asyncio.timeout(5):
                while (  # noqa: ASYNC110 (polling a condition under a deadline)
                    store.get(live.id).metrics_at is None  # type: ignore[union-attr]
                    or not scraper.errors.get(dead.id)
                ):
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            async with asyncio.timeout(5):
                await task
    assert store.get(live.id).metrics.waiting == 4  # type: ignore[union-attr]
    assert store.get(dead.id).metrics_at is None  # type: ignore[union-attr]
    assert metrics.scrape_errors.labels(dead.id)._value.get() >= 1


def test_datastore_keeps_metrics_of_staying_endpoints_and_drops_leavers() -> None:
    clock = iter([10.0, 20.0]).__next__
    store = Datastore(max_endpoints=2, clock=clock)
    a, b, c = (EndpointSpec("10.0.0.1", p) for p in (1, 2, 3))
    store.set_endpoints([a, b, c])
    assert [e.id for e in store.endpoints()] == [a.id, b.id]  # bounded
    store.update_metrics(a.id, EndpointMetrics(waiting=3))
    generation = store.generation
    store.set_endpoints([a])
    assert store.generation == generation + 1
    snap = store.snapshot()
    assert snap.candidates[0].metrics.waiting == 3 and snap.candidates[0].age_s(snap.now) == 10.0
    store.update_metrics(b.id, EndpointMetrics(waiting=9))  # left meanwhile: ignored
    assert store.get(b.id) is None


@pytest.mark.parametrize("page", [
    pytest.param(b"\xff\xfe\x00 not utf-8", id="binary"),
    pytest.param(b"vllm:num_requests_waiting {{{ broken", id="unparseable"),
])
async def test_bad_pages_are_errors_not_crashes(page: bytes) -> None:
    stop = asyncio.Event()
    async with serve_text("/metrics", page) as port:
        spec = EndpointSpec("127.0.0.1", port)
        store = Datastore()
        store.set_endpoints([spec])
        metrics = EppMetrics(CollectorRegistry())
        async with aiohttp.ClientSession() as session:
            scraper = Scraper(store, session, ScrapeSettings(interval_s=0.01), metrics)
            task = asyncio.create_task(scraper.run(stop))
            async with asyncio.timeout(5):
                while scraper.errors.get(spec.id, 0) < 3:  # noqa: ASYNC110 (polling a condition)
                    await asyncio.sleep(0.01)
            assert not task.done()
            store.set_endpoints([])  # the endpoint leaves: its series go with it
            async with asyncio.timeout(5):
                while spec.id in scraper.errors:  # noqa: ASYNC110 (polling a condition)
                    await asyncio.sleep(0.01)
            assert "127.0.0.1" not in generate_latest(metrics.registry).decode()
            stop.set()
            async with asyncio.timeout(5):
                await task
