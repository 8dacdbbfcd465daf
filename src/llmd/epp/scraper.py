"""Poll every endpoint's metrics page through its engine adapter into the datastore.

The URL is `scheme://ip:port/path` from the config's `metrics-data-source` (default
http, /metrics) and the adapter is the engine the `core-metrics-extractor` reads from the
endpoint's labels (`engine_of`; default: the `llm-d.ai/engine-type` label, else vllm).

One loop per endpoint (a slow endpoint never delays the others), all owned by one TaskGroup
and sharing one aiohttp session. A failed scrape keeps the previous metrics, which then age:
once older than the saturation detector's `metricsStalenessThreshold` (default 2 s) the
endpoint counts as saturated.

The loops also keep each endpoint's health (`Datastore.set_healthy`): a scrape whose connection
is refused or reset, or answered 502/503 (the P/D sidecar in front of a dead engine), takes the
endpoint out of scheduling at once (a dead process), metrics
older than `stale_after_s` (a hung or unreachable one: timeouts, errors) take it out then, and
the first good scrape puts it back. Each transition is logged once and counted in
`llmd_epp_endpoint_health_transitions_total`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from llmd.engines import EndpointMetrics, MetricsPage, get_adapter
from llmd.epp.datastore import Datastore, Endpoint, EndpointId, EndpointSpec
from llmd.epp.metrics import EppMetrics
from llmd.errors import EngineError

__all__ = ["ScrapeSettings", "Scraper"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScrapeSettings:
    interval_s: float = 0.05
    timeout_s: float = 1.0
    path: str = "/metrics"
    scheme: str = "http"
    verify_tls: bool = True
    engine_of: Callable[[EndpointSpec], str] | None = None  # None: `EndpointSpec.engine`
    stale_after_s: float = 2.0


class Scraper:
    def __init__(
        self,
        store: Datastore,
        session: aiohttp.ClientSession,
        settings: ScrapeSettings = ScrapeSettings(),
        metrics: EppMetrics | None = None,
    ) -> None:
        self.store, self.session, self.settings, self.metrics = store, session, settings, metrics
        self.errors: dict[EndpointId, int] = {}

    async def scrape_once(self, spec: EndpointSpec) -> EndpointMetrics:
        """One scrape of `spec`; raises aiohttp/timeout/EngineError errors."""
        s = self.settings
        host = f"[{spec.address}]" if ":" in spec.address else spec.address
        url = f"{s.scheme}://{host}:{spec.port}{s.path}"
        adapter = get_adapter(spec.engine if s.engine_of is None else s.engine_of(spec))
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        async with self.session.get(url, timeout=timeout, ssl=s.verify_tls) as resp:
            if resp.status in _PROXY_DOWN:
                raise _ServerGone(f"GET {url}: HTTP {resp.status}")
            if resp.status != 200:
                raise EngineError(f"GET {url}: HTTP {resp.status}")
            text = await resp.text()
        return adapter.endpoint_metrics(MetricsPage.parse(text, adapter.scraped_families))

    async def run(self, stop: asyncio.Event) -> None:
        """Scrape until `stop`, following the datastore's endpoint set."""
        loops: dict[EndpointId, asyncio.Task[None]] = {}
        generation = -1
        async with asyncio.TaskGroup() as tg:
            while not stop.is_set():
                if self.store.generation != generation:
                    generation = self.store.generation
                    live = {ep.id for ep in self.store.endpoints()}
                    for ep_id in [k for k in loops if k not in live]:
                        loops.pop(ep_id).cancel()
                        self.errors.pop(ep_id, None)
                        if self.metrics is not None:
                            self.metrics.forget_endpoint(ep_id)
                    for ep_id in live - loops.keys():
                        loops[ep_id] = tg.create_task(self._loop(ep_id, stop),
                                                      name=f"scrape {ep_id}")
                if self.metrics is not None:
                    self.metrics.endpoints.set(len(loops))
                await _wait(stop, self.settings.interval_s * 4)
            for task in loops.values():
                task.cancel()

    async def _loop(self, ep_id: EndpointId, stop: asyncio.Event) -> None:
        failing = False
        joined = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            ep = self.store.get(ep_id)
            if ep is None:
                return
            try:
                metrics = await self.scrape_once(ep.spec)
            except (aiohttp.ClientError, TimeoutError, EngineError, ValueError) as exc:
                # ValueError: a page that is not text (UnicodeDecodeError); one bad endpoint
                # must never end the scraper, which is a root task of the EPP.
                self.errors[ep_id] = self.errors.get(ep_id, 0) + 1
                if self.metrics is not None:
                    self.metrics.scrape_errors.labels(ep_id).inc()
                if not failing:
                    log.warning("scraping %s failed: %s", ep_id, _describe(exc))
                failing = True
                self._judge(ep, joined, exc)
            else:
                if failing:
                    log.info("scraping %s recovered", ep_id)
                failing = False
                if not ep.healthy:
                    self._transition(ep_id, True, "its metrics answer again")
                self.store.update_metrics(ep_id, metrics, started)
            delay = self.settings.interval_s - (time.monotonic() - started)
            await _wait(stop, max(delay, 0.0))

    def _judge(self, ep: Endpoint, joined: float, exc: Exception) -> None:
        """After a failed scrape: unhealthy at once when the process is gone, else once the
        last good scrape (or the endpoint's arrival) is older than `stale_after_s`."""
        if not ep.healthy:
            return
        if _refused(exc):
            self._transition(ep.id, False, f"its metrics connection failed ({_describe(exc)})")
            return
        age = time.monotonic() - (joined if ep.metrics_at is None else ep.metrics_at)
        if age > self.settings.stale_after_s:
            self._transition(ep.id, False, f"no good scrape for {age:.1f} s "
                                           f"(last error: {_describe(exc)})")

    def _transition(self, ep_id: EndpointId, healthy: bool, why: str) -> None:
        state = "healthy" if healthy else "unhealthy"
        log.log(logging.INFO if healthy else logging.WARNING,
                "endpoint %s is %s: %s", ep_id,
                "a candidate again" if healthy else "out of scheduling", why)
        self.store.set_healthy(ep_id, healthy)
        if self.metrics is not None:
            self.metrics.health_transitions.labels(ep_id, state).inc()


_PROXY_DOWN = frozenset({502, 503})


class _ServerGone(EngineError):
    """The metrics page answered 502/503: a proxy in front of the engine (the P/D sidecar)
    cannot reach it."""


def _refused(exc: Exception) -> bool:
    """A connection that was refused, reset or dropped, or a proxy saying its server is: the
    process behind it is gone. Timeouts are not (a busy server answers late), nor other HTTP
    errors (it is there)."""
    if isinstance(exc, _ServerGone):
        return True
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(exc, TimeoutError)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _wait(stop: asyncio.Event, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await stop.wait()
    except TimeoutError:
        pass
