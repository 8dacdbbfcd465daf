"""The replica sync over real ZeroMQ sockets on loopback, replicas in this process.

Each replica is a Datastore, a Director over a loaded config, an in-flight ledger and a
`ReplicaSync`, as `serve()` wires them (`serve()` itself is covered by the process tests in
test_epp_replicas.py). Peers find each other through static peer lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import msgpack  # type: ignore[import-untyped]
import pytest
import zmq
import zmq.asyncio
from _pages import serve_text
from prometheus_client import CollectorRegistry

from llmd.engines import EndpointMetrics, get_adapter
from llmd.epp import (
    Datastore,
    Director,
    EppSettings,
    Scraper,
    ScrapeSettings,
    load_config,
    parse_endpoint_flag,
    server,
)
from llmd.epp import _sync_wire as wire
from llmd.epp._config_replica import ReplicaSyncConfig
from llmd.epp.inflight import InflightLedger
from llmd.epp.metrics import SyncMetrics
from llmd.epp.plugins import ApproxPrefixCacheProducer, UtilizationDetector
from llmd.epp.plugins.replica.syncer import LocalSyncer, ZmqMeshSyncer
from llmd.epp.replica_sync import ReplicaSync
from llmd.epp.server import attach_inflight

INTERVAL = 0.05
ENDPOINTS = [f"127.0.0.1:{8000 + i}" for i in range(4)]

PREFIX_ONLY = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-scorer
"""

QUEUE_ONLY = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
"""


@dataclass
class Replica:
    store: Datastore
    director: Director
    ledger: InflightLedger
    sync: ReplicaSync
    metrics: SyncMetrics
    port: int

    @property
    def producer(self) -> ApproxPrefixCacheProducer:
        return next(iter(self.sync.producers.values()))

    def route(self, prompt: str) -> str:
        body = json.dumps({"model": "m", "prompt": prompt}).encode()
        decision = self.director.decide("r", "/v1/completions", {}, body)
        self.director.after_decision(decision)
        return decision.endpoint

    def counter(self, name: str, label: str) -> float:
        value = getattr(self.metrics, name).labels(label)._value.get()
        return float(value)

    def peers(self) -> float:
        return float(next(iter(self.metrics.peers.collect())).samples[0].value)


def _params(**kwargs: object) -> ZmqMeshSyncer.Params:
    return ZmqMeshSyncer.Params.model_validate({"peerExpiry": 0.4, "catchUpTimeout": 3.0,
                                                **kwargs})


@contextlib.asynccontextmanager
async def _replica(config: str, ports: Sequence[int] = (), port: int = 0,
                   waiting: Sequence[int] = (0, 0, 0, 0), **params: object
                   ) -> AsyncIterator[Replica]:
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag(e) for e in ENDPOINTS])
    for ep, n in zip(ENDPOINTS, waiting, strict=True):
        store.update_metrics(ep, EndpointMetrics(waiting=n))
    loaded = load_config(text=config)
    ledger = InflightLedger()
    store.attach_inflight(ledger.totals, ledger.scraped)
    producers = {n: p for n, p in loaded.plugins.items()
                 if isinstance(p, ApproxPrefixCacheProducer)}
    metrics = SyncMetrics(CollectorRegistry())
    sync_config = ReplicaSyncConfig(ZmqMeshSyncer("syncer", _params(**params)), INTERVAL, 1.0)
    sync = ReplicaSync(sync_config, sync_config.syncer.params,  # type: ignore[attr-defined]
                       store=store, ledger=ledger, producers=producers, metrics=metrics,
                       host="127.0.0.1", static_peers=[f"127.0.0.1:{p}" for p in ports])
    bound = sync.bind(port)
    stop, discovered = asyncio.Event(), asyncio.Event()
    discovered.set()
    task = asyncio.create_task(sync.run(stop, discovered))
    try:
        yield Replica(store, Director(store, loaded, inflight=ledger), ledger, sync, metrics,
                      bound)
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task
        sync.close()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _until(pred: Callable[[], bool], timeout_s: float = 5.0) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 (polling a condition under a deadline)
            await asyncio.sleep(0.002)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def _pair(config: str, **params: object) -> AsyncIterator[tuple[Replica, Replica]]:
    pa, pb = _free_port(), _free_port()
    async with (_replica(config, [pb], pa, **params) as a,
                _replica(config, [pa], pb, **params) as b):
        async with asyncio.timeout(5):
            await a.sync.ready.wait()
            await b.sync.ready.wait()
        yield a, b


async def test_picks_of_one_replica_reach_the_others_index_within_the_interval() -> None:
    async with _pair(PREFIX_ONLY) as (a, b):
        lags = []
        for i in range(10):
            prompt = f"conversation {i} " * 40
            ep = a.route(prompt)
            blocks = tuple(a.producer._index[ep])[-5:]
            lags.append(await _until(lambda: all(
                h in b.producer._index.get(ep, {}) for h in blocks)))  # noqa: B023
            assert b.route(prompt) == ep  # the same affinity as one replica
        # Applied within one publish interval plus delivery (generous on a shared 2-core box).
        assert max(lags) < INTERVAL + 0.2, lags
        assert a.counter("messages", "sent") > 0 and b.counter("messages", "received") > 0
        assert b.metrics.apply_lag._sum.get() > 0


def test_an_opted_out_producer_stays_local() -> None:
    config = PREFIX_ONLY.replace("- type: approx-prefix-cache-producer",
                                 "- type: approx-prefix-cache-producer\n"
                                 "  parameters: {syncCrossReplicaState: false}")
    config += "dataLayer:\n  crossReplica: {syncerPluginRef: s}\n"
    config = config.replace("plugins:\n", "plugins:\n- {type: zmq-mesh-syncer, name: s}\n", 1)
    loaded = load_config(text=config)
    assert loaded.replica_sync is not None
    store, ledger = Datastore(), InflightLedger()
    sync = server._replica_sync(loaded.replica_sync, loaded, EppSettings(), store, ledger,
                                CollectorRegistry(), None)
    try:
        assert sync.producers == {}
        producer = next(p for p in loaded.plugins.values()
                        if isinstance(p, ApproxPrefixCacheProducer))
        assert producer.publish is None  # its picks are never buffered for the peers
    finally:
        sync.close()


async def test_shared_in_flight_spreads_a_burst_instead_of_piling() -> None:
    # e0 has an empty queue, the others 4 waiting: without in-flight load every decision
    # until the next scrape goes to e0.
    waiting = (0, 4, 4, 4)
    async with _pair(QUEUE_ONLY, waiting=waiting) as (a, b):
        picks = [a.route(f"p{i}") for i in range(4)]
        assert picks == [ENDPOINTS[0]] * 4  # A's own count lifts e0 to the others' 4
        await _until(lambda: b.ledger.totals.get(ENDPOINTS[0]) == 4)
        # B sees A's 4 on e0: all four tie at 4, each pick lifts one to 5.
        assert sorted(b.route(f"q{i}") for i in range(4)) == sorted(ENDPOINTS)
    async with _replica(QUEUE_ONLY, waiting=waiting) as alone:  # no peer: B would not know
        assert {alone.route(f"q{i}") for i in range(4)} == {ENDPOINTS[0]}


async def test_a_scrape_that_started_after_a_pick_reflects_it(engine: str) -> None:
    name = get_adapter(engine).metric_names.waiting
    ledger = InflightLedger()
    store = Datastore()
    store.attach_inflight(ledger.totals, ledger.scraped)
    async with serve_text("/metrics", f"# TYPE {name} gauge\n{name} 1\n") as port:
        spec = parse_endpoint_flag(f"127.0.0.1:{port},engine={engine}")
        store.set_endpoints([spec])
        ledger.picked(spec.id)
        ledger.picked(spec.id)
        assert store.snapshot().inflight == {spec.id: 2}
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            scraper = Scraper(store, session, ScrapeSettings(interval_s=0.02))
            task = asyncio.create_task(scraper.run(stop))
            await _until(lambda: store.get(spec.id).metrics_at is not None)  # type: ignore[union-attr]
            stop.set()
            await task
    assert store.get(spec.id).metrics.waiting == 1  # type: ignore[union-attr]
    assert store.snapshot().inflight == {}


async def test_a_killed_peer_stops_counting_and_the_survivor_serves() -> None:
    pa, pb = _free_port(), _free_port()
    async with _replica(QUEUE_ONLY, [pa], pb, catchUpTimeout=0.3) as b:
        async with _replica(QUEUE_ONLY, [pb], pa) as a:
            for i in range(3):
                a.route(f"p{i}")
            await _until(lambda: sum(b.ledger.totals.values()) == 3)
            assert b.peers() == 1
        # A is gone (its sockets closed): after peerExpiry (0.4 s) its load no longer counts.
        waited = await _until(lambda: not b.ledger.totals, timeout_s=3)
        assert 0.2 < waited < 1.5, waited
        assert b.peers() == 0
        assert b.route("after") in ENDPOINTS


async def test_a_late_replica_takes_a_snapshot_before_it_is_ready() -> None:
    pa, pb = _free_port(), _free_port()
    async with _replica(PREFIX_ONLY, [pb], pa, catchUpTimeout=0.3) as a:
        await asyncio.wait_for(a.sync.ready.wait(), 5)  # B does not exist yet: A waits, then
        prompts = [f"session {i} " * 30 for i in range(12)]  # serves (catchUpTimeout)
        chosen = [a.route(p) for p in prompts]
        async with _replica(PREFIX_ONLY, [pa], pb) as b:
            assert not b.sync.ready.is_set()
            await asyncio.wait_for(b.sync.ready.wait(), 5)
            assert a.sync.id in b.sync._snapshots_from
            for ep in set(chosen):
                assert list(b.producer._index[ep]) == list(a.producer._index[ep])
            assert [b.route(p) for p in prompts] == chosen


async def test_bad_frames_are_dropped_and_counted_never_fatal() -> None:
    ctx = zmq.asyncio.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    good = [wire.encode(wire.Frame("rogue", i, time.time(), wire.STATE, {ENDPOINTS[1]: 7}))
            for i in range(2)]
    try:
        async with _replica(PREFIX_ONLY, [port], maxFrameBytes=4096) as b:
            async def until_heard() -> None:
                while b.ledger.totals.get(ENDPOINTS[1]) != 7:
                    await pub.send(good[0])
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(until_heard(), 5)
            bad = {
                "garbage": b"\xc1 not msgpack",
                "version": msgpack.packb([99, "rogue", 1, 0.0, 0, {}]),
                "malformed": msgpack.packb([1, "rogue", 1, 0.0, 0, {"i": {"e": -1}}]),
                "too_large": b"\x00" * 5000,
            }
            for data in bad.values():
                await pub.send(data)
            await pub.send(wire.encode(wire.Frame("rogue", 9, time.time(), wire.STATE,
                                                  {ENDPOINTS[2]: 1})))
            await _until(lambda: ENDPOINTS[2] in b.ledger.totals)
            for reason in bad:
                assert b.counter("dropped", reason) == 1, reason
            assert b.route("still deciding") in ENDPOINTS
    finally:
        pub.close(0)


def test_local_syncer_shares_nothing() -> None:
    assert not LocalSyncer.shares and ZmqMeshSyncer.shares


@pytest.mark.parametrize("frame", [
    wire.Frame("a", 1, 1.5, wire.STATE, {"e:1": 3}, {"p": [("e:1", (1, 2, (1 << 64) - 1))]},
               ready=False, wants_snapshot=True),
    wire.Frame("a", 2, 1.5, wire.SNAPSHOT, {}, {"p": []}, to="b", last=True),
])
def test_frames_round_trip(frame: wire.Frame) -> None:
    back = wire.decode(wire.encode(frame), 1 << 20)
    assert back == wire.Frame(frame.origin, frame.seq, frame.sent_at, frame.kind,
                              frame.inflight, {k: list(v) for k, v in frame.prefix.items()},
                              frame.ready, frame.wants_snapshot, frame.to, frame.last)


def test_the_saturation_detector_counts_in_flight_as_waiting() -> None:
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag(e) for e in ENDPOINTS[:2]])
    for ep in ENDPOINTS[:2]:
        store.update_metrics(ep, EndpointMetrics(waiting=1))
    ledger = InflightLedger()
    store.attach_inflight(ledger.totals, ledger.scraped)
    detector = UtilizationDetector("d", UtilizationDetector.Params())  # queueDepthThreshold 5
    assert detector.saturation(store.snapshot()) == pytest.approx(0.2)
    for _ in range(4):
        ledger.picked(ENDPOINTS[0])
    pool = store.snapshot()
    assert detector.saturation(pool) == pytest.approx((1.0 + 0.2) / 2)
    assert [ep.id for ep in detector.filter(None, pool)] == [ENDPOINTS[1]]  # type: ignore[arg-type]


@pytest.mark.parametrize(("syncer", "counted"), [
    pytest.param(ZmqMeshSyncer("s", ZmqMeshSyncer.Params()), False, id="zmq-mesh-default"),
    pytest.param(ZmqMeshSyncer("s", ZmqMeshSyncer.Params.model_validate(
        {"countInflight": True})), True, id="zmq-mesh-countInflight"),
    pytest.param(LocalSyncer("s", LocalSyncer.Params()), True, id="local-syncer"),
])
def test_the_scorers_see_in_flight_only_when_the_syncer_counts_it(
        syncer: ZmqMeshSyncer | LocalSyncer, counted: bool) -> None:
    """Off by default for zmq-mesh-syncer: counted as queued load, the few requests sent since
    a scrape swing the queue scorer's min-max and spread prefix groups (docs/benchmarks.md,
    "EPP replicas"); the gauges are still kept, reset by scrapes and shared."""
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag(e) for e in ENDPOINTS[:2]])
    ledger = InflightLedger()
    attach_inflight(store, ledger, syncer)
    ledger.picked(ENDPOINTS[0])
    assert ledger.local() == {ENDPOINTS[0]: 1}
    assert dict(store.snapshot().inflight) == ({ENDPOINTS[0]: 1} if counted else {})
