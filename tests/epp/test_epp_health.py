"""Endpoint health: a dead or hung endpoint leaves scheduling, its first good scrape brings it
back; one log line and one counted transition each way, whatever the config."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from _pages import serve_text
from prometheus_client import CollectorRegistry, generate_latest

from llmd.engines import get_adapter
from llmd.epp import Datastore, Director, EndpointSpec, Scraper, ScrapeSettings, load_config
from llmd.epp.metrics import EppMetrics, PoolCollector
from llmd.errors import NoEndpointError


def _page(engine: str) -> str:
    name = get_adapter(engine).metric_names.waiting
    return f"# TYPE {name} gauge\n{name} 0\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics_server(port: int, engine: str, delay_s: float = 0.0
                    ) -> contextlib.AbstractAsyncContextManager[int]:
    """A metrics page on a fixed port (so a "restarted" endpoint comes back where it was)."""
    return serve_text("/metrics", _page(engine), port=port, delay_s=delay_s)


@contextlib.asynccontextmanager
async def _scraping(store: Datastore, settings: ScrapeSettings,
                    metrics: EppMetrics) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(Scraper(store, session, settings, metrics).run(stop))
        try:
            yield
        finally:
            stop.set()
            async with asyncio.timeout(5):
                await task


async def _until(pred: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 (polling a condition under a deadline)
            await asyncio.sleep(0.01)


def _candidates(store: Datastore) -> set[str]:
    return {ep.id for ep in store.snapshot().candidates}


async def test_a_dead_endpoint_leaves_at_once_and_returns_on_its_first_good_scrape(
        engine: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmd.epp.scraper")
    labels = {"llm-d.ai/engine-type": engine}
    ports = _free_port(), _free_port()
    live, dying = (EndpointSpec("127.0.0.1", p, labels) for p in ports)
    store = Datastore()
    store.set_endpoints([live, dying])
    metrics = EppMetrics(CollectorRegistry())
    settings = ScrapeSettings(interval_s=0.01, stale_after_s=60.0)  # only refusals count here
    async with _metrics_server(ports[0], engine), _scraping(store, settings, metrics):
        async with _metrics_server(ports[1], engine):
            await _until(lambda: all(ep.metrics_at for ep in store.endpoints()))
            assert _candidates(store) == {live.id, dying.id}
        # Killed: its next scrape is refused and it is out, long before it could go stale.
        await _until(lambda: _candidates(store) == {live.id})
        refused = metrics.scrape_errors.labels(dying.id)
        await _until(lambda: refused._value.get() >= 10)  # many failed scrapes ...
        out = [r for r in caplog.records if "out of scheduling" in r.getMessage()]
        assert len(out) == 1 and dying.id in out[0].getMessage()  # ... one line
        async with _metrics_server(ports[1], engine):  # restarted on the same port
            await _until(lambda: _candidates(store) == {live.id, dying.id})
    back = [r for r in caplog.records if "a candidate again" in r.getMessage()]
    assert len(back) == 1
    transitions = metrics.health_transitions
    assert transitions.labels(dying.id, "unhealthy")._value.get() == 1
    assert transitions.labels(dying.id, "healthy")._value.get() == 1
    assert transitions.labels(live.id, "unhealthy")._value.get() == 0


async def test_a_hung_endpoint_leaves_once_its_metrics_are_stale(engine: str) -> None:
    port = _free_port()
    spec = EndpointSpec("127.0.0.1", port, {"llm-d.ai/engine-type": engine})
    store = Datastore()
    store.set_endpoints([spec])
    metrics = EppMetrics(CollectorRegistry())
    settings = ScrapeSettings(interval_s=0.01, timeout_s=0.05, stale_after_s=1.0)
    async with _metrics_server(port, engine, delay_s=10.0), \
            _scraping(store, settings, metrics):
        timeouts = metrics.scrape_errors.labels(spec.id)
        await _until(lambda: timeouts._value.get() >= 1)
        assert _candidates(store) == {spec.id}  # a slow answer is not a dead process
        await _until(lambda: not _candidates(store))
    assert metrics.health_transitions.labels(spec.id, "unhealthy")._value.get() == 1


RANDOM = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: random-picker
"""


@pytest.mark.parametrize("config", [None, RANDOM], ids=["default-config", "random-picker"])
def test_unhealthy_endpoints_are_never_picked_whatever_the_config(config: str | None) -> None:
    store = Datastore()
    specs = [EndpointSpec("10.0.0.1", 8000 + i) for i in range(3)]
    store.set_endpoints(specs)
    store.set_healthy(specs[0].id, False)
    director = Director(store, load_config(text=config))
    body = b'{"model": "m", "prompt": "hello"}'
    picked = {director.decide(f"r{i}", "/v1/completions", {}, body).endpoint for i in range(60)}
    picked |= {director.decide("h", "/v1/models", {}, None).endpoint for _ in range(30)}
    assert specs[0].id not in picked and picked == {specs[1].id, specs[2].id}
    registry = CollectorRegistry()
    registry.register(PoolCollector(store))
    page = generate_latest(registry).decode()
    assert f'llmd_epp_endpoint_healthy{{endpoint="{specs[0].id}"}} 0.0' in page
    assert f'llmd_epp_endpoint_healthy{{endpoint="{specs[1].id}"}} 1.0' in page


def test_no_healthy_endpoint_is_a_503_that_says_so() -> None:
    store = Datastore()
    spec = EndpointSpec("10.0.0.1", 8000)
    store.set_endpoints([spec])
    store.set_healthy(spec.id, False)
    with pytest.raises(NoEndpointError, match="no healthy endpoint.*all 1 are unreachable"):
        Director(store, load_config()).decide("r", "/v1/completions", {},
                                              b'{"model": "m", "prompt": "x"}')


@pytest.mark.parametrize(("status", "leaves"), [
    pytest.param(503, True, id="503-a-sidecar-whose-engine-is-gone"),
    pytest.param(502, True, id="502-likewise"),
    pytest.param(500, False, id="500-there-but-failing-goes-stale-later"),
])
async def test_a_proxy_saying_its_server_is_gone_counts_as_refused(status: int,
                                                                   leaves: bool) -> None:
    async with serve_text("/metrics", '{"error": "down"}', status=status) as port:
        spec = EndpointSpec("127.0.0.1", port)
        store = Datastore()
        store.set_endpoints([spec])
        metrics = EppMetrics(CollectorRegistry())
        async with _scraping(store, ScrapeSettings(interval_s=0.01, stale_after_s=60.0),
                             metrics):
            await _until(lambda: metrics.scrape_errors.labels(spec.id)._value.get() >= 3)
            assert (not _candidates(store)) is leaves
