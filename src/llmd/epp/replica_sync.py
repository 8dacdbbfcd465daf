"""Replica sync (`zmq-mesh-syncer`): N EPP replicas, one view of the approximate index and load.

Each replica publishes only facts it observed itself, so merging is commutative and nothing can
conflict:

- the blocks its approximate prefix producers recorded after its own decisions (an add-set:
  a peer applies them to the same endpoint's LRU, as if it had made the pick);
- its in-flight gauge per endpoint (`llmd.epp.inflight`): a peer replaces that origin's previous
  gauge with it, and drops it once the origin is silent for `peerExpiry`.

Transport: each replica binds a ZeroMQ PUB socket on its sync port and connects a SUB socket to
every peer's (`llmd epp --peer`, `static-peer-discovery`, `k8s-peer-discovery`; the set follows
discovery). Every `syncInterval` a replica sends one `STATE` frame (`llmd.epp._sync_wire`): its
gauge and the records buffered since the last one (the decision path only appends to a list).
The frame is also the heartbeat. A bad frame is dropped and counted, never raised.

Catch-up: a replica that starts with peers asks for snapshots (`STATE.w`) and reports NOT_SERVING
on gRPC health until it has one from every peer it hears (each peer answers with its whole index
in `SNAPSHOT` chunks, cut short after `publishTimeout`), or until `catchUpTimeout`, after which
it serves anyway and logs it. The precise index needs no sync: every replica hears every
engine's KV events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import zmq
import zmq.asyncio

from llmd.epp import _sync_wire as wire
from llmd.epp._config_replica import ReplicaSyncConfig
from llmd.epp.datastore import Datastore, EndpointId
from llmd.epp.inflight import InflightLedger
from llmd.epp.metrics import SyncMetrics
from llmd.epp.plugins.producer.approx_prefix import ApproxPrefixCacheProducer
from llmd.epp.plugins.replica.syncer import ZmqMeshSyncer
from llmd.errors import ConfigError

__all__ = ["ReplicaSync", "replica_id"]

log = logging.getLogger(__name__)

Records = dict[str, list[tuple[EndpointId, tuple[int, ...]]]]


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class ReplicaSync:
    def __init__(self, config: ReplicaSyncConfig, params: ZmqMeshSyncer.Params, *,
                 store: Datastore, ledger: InflightLedger,
                 producers: Mapping[str, ApproxPrefixCacheProducer], metrics: SyncMetrics,
                 host: str, static_peers: Sequence[str] = (), kube: Any = None) -> None:
        self.config, self.params = config, params
        self.store, self.ledger, self.producers = store, ledger, dict(producers)
        self.metrics, self.host, self.kube = metrics, host, kube
        self.static_peers = tuple(static_peers)
        self.id = replica_id()
        self.ready = asyncio.Event()
        self._seq = 0
        self._out: Records = {}
        self._out_hashes = 0
        self._per_frame = max(64, (params.max_frame_bytes - 4096) // 10)
        self._heard: dict[str, float] = {}
        self._snapshots_from: set[str] = set()
        self._snapshot_sent: dict[str, float] = {}
        self._wants = False
        self._connected: set[str] = set()
        self._peers_known = asyncio.Event()
        ctx = zmq.asyncio.Context.instance()
        self._pub = ctx.socket(zmq.PUB)
        self._sub = ctx.socket(zmq.SUB)
        for sock in (self._pub, self._sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IPV6, 1)
        self._sub.setsockopt(zmq.MAXMSGSIZE, 4 * params.max_frame_bytes)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        for name, producer in self.producers.items():
            producer.publish = self._buffer_for(name)
        metrics.peers.set_function(lambda: len(self._alive()))
        metrics.addresses.set_function(lambda: len(self._connected))
        metrics.peer_inflight.set_function(ledger.peer_total)

    def bind(self, port: int) -> int:
        """Bind the PUB socket (`port` 0: a free one); the port bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            self._pub.bind(f"tcp://{host}:{port or '*'}")
        except zmq.ZMQError as exc:
            raise ConfigError(f"--sync-port {port}: cannot listen on {host} ({exc}); is the "
                              "port taken?") from exc
        bound = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        return int(bound.rsplit(":", 1)[1])

    def close(self) -> None:
        for producer in self.producers.values():
            producer.publish = None
        self._pub.close(0)
        self._sub.close(0)

    async def run(self, stop: asyncio.Event, discovered: asyncio.Event) -> None:
        """Until `stop`: follow the peers, publish, receive, and catch up once the endpoint
        set (`discovered`) is known."""
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._follow_peers(stop), name="sync peers"),
                     tg.create_task(self._publish_loop(stop), name="sync publish"),
                     tg.create_task(self._receive_loop(), name="sync receive"),
                     tg.create_task(self._catch_up(stop, discovered), name="sync catch-up")]
            await stop.wait()
            for task in tasks:
                task.cancel()

    # --- the decision path ---------------------------------------------------------------

    def _buffer_for(self, name: str) -> Callable[[EndpointId, tuple[int, ...]], None]:
        limit = 8 * self._per_frame

        def buffer(ep_id: EndpointId, hashes: tuple[int, ...]) -> None:
            if self._out_hashes + len(hashes) > limit:
                self.metrics.dropped.labels("overflow").inc()
                return
            self._out.setdefault(name, []).append((ep_id, hashes))
            self._out_hashes += len(hashes)
        return buffer

    # --- peers ---------------------------------------------------------------------------

    async def _follow_peers(self, stop: asyncio.Event) -> None:
        discovery = self.config.peer_discovery
        if discovery is None:
            self._set_peers(self.static_peers)
            return
        async for found in discovery.peers(stop, self.kube):
            self._set_peers((*self.static_peers, *found))

    def _set_peers(self, peers: Sequence[str]) -> None:
        want = set(peers)
        for peer in sorted(want - self._connected):
            self._sub.connect(f"tcp://{peer}")
        for peer in sorted(self._connected - want):
            self._sub.disconnect(f"tcp://{peer}")
        if want != self._connected:
            log.info("replica sync: peers %s", ", ".join(sorted(want)) or "(none)")
        self._connected = want
        self._peers_known.set()

    def _alive(self) -> list[str]:
        cutoff = time.monotonic() - self.params.peer_expiry
        return [o for o, at in self._heard.items() if at >= cutoff]

    # --- publishing ----------------------------------------------------------------------

    async def _publish_loop(self, stop: asyncio.Event) -> None:
        interval = self.config.interval_s
        while not stop.is_set():
            started = time.monotonic()
            for origin in self.ledger.expire(self.params.peer_expiry):
                log.warning("replica sync: peer %s silent for %.2fs; its in-flight load no "
                            "longer counts", origin, self.params.peer_expiry)
                self._heard.pop(origin, None)
            records, self._out, self._out_hashes = self._out, {}, 0
            inflight = self.ledger.local()  # in every chunk: each frame replaces the gauge
            for chunk in self._chunks(records):
                self._send(wire.STATE, inflight, chunk)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def _chunks(self, records: Records) -> Iterator[Records]:
        """`records` in frames of at most `_per_frame` hashes (at least one frame)."""
        chunk: Records = {}
        size = 0
        for name, items in records.items():
            for ep_id, hashes in items:
                for i in range(0, len(hashes), self._per_frame):
                    part = hashes[i:i + self._per_frame]
                    if size + len(part) > self._per_frame and size:
                        yield chunk
                        chunk, size = {}, 0
                    chunk.setdefault(name, []).append((ep_id, part))
                    size += len(part)
        yield chunk

    def _send(self, kind: int, inflight: Mapping[EndpointId, int], prefix: Records,
              to: str = "", last: bool = False) -> None:
        self._seq += 1
        data = wire.encode(wire.Frame(self.id, self._seq, time.time(), kind, inflight, prefix,
                                      self.ready.is_set(), self._wants, to, last))
        try:
            self._pub.send(data, zmq.NOBLOCK)
        except zmq.Again:  # PUB drops rather than blocks; kept for a full pipe all the same
            self.metrics.dropped.labels("overflow").inc()
            return
        self.metrics.messages.labels("sent").inc()
        self.metrics.bytes.labels("sent").inc(len(data))

    async def _send_snapshot(self, to: str) -> None:
        started = time.monotonic()
        records: Records = {name: list(p.export()) for name, p in self.producers.items()}
        inflight = self.ledger.local()
        for chunk in self._chunks(records):
            if time.monotonic() - started > self.config.publish_timeout_s:
                log.warning("replica sync: snapshot for %s cut short after publishTimeout "
                            "%.2fs", to, self.config.publish_timeout_s)
                break
            self._send(wire.SNAPSHOT, inflight, chunk, to)
            inflight = {}
            await asyncio.sleep(0)  # decisions go on between chunks
        self._send(wire.SNAPSHOT, {}, {}, to, last=True)

    # --- receiving -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        background: set[asyncio.Task[None]] = set()
        while True:
            data = await self._sub.recv()
            self.metrics.messages.labels("received").inc()
            self.metrics.bytes.labels("received").inc(len(data))
            try:
                frame = wire.decode(data, self.params.max_frame_bytes)
            except wire.BadFrame as exc:
                self.metrics.dropped.labels(exc.reason).inc()
                log.debug("replica sync: dropped a frame: %s", exc)
                continue
            if frame.origin == self.id:
                continue
            self._heard[frame.origin] = time.monotonic()
            if frame.kind == wire.SNAPSHOT and frame.to != self.id:
                continue  # another replica's catch-up: its records are not news here
            self.metrics.apply_lag.observe(max(0.0, time.time() - frame.sent_at))
            if frame.inflight or frame.kind == wire.STATE:
                self.ledger.set_peer(frame.origin, frame.inflight)
            self._apply(frame.prefix)
            if frame.kind == wire.SNAPSHOT and frame.last:
                self._snapshots_from.add(frame.origin)
            elif frame.kind == wire.STATE and frame.wants_snapshot and self._may_answer(frame):
                task = asyncio.create_task(self._send_snapshot(frame.origin))
                background.add(task)
                task.add_done_callback(background.discard)

    def _may_answer(self, frame: wire.Frame) -> bool:
        now = time.monotonic()
        again_after = max(4 * self.config.interval_s, 0.25)
        if now - self._snapshot_sent.get(frame.origin, -again_after) < again_after:
            return False
        self._snapshot_sent[frame.origin] = now
        return True

    def _apply(self, prefix: wire.Records) -> None:
        for name, records in prefix.items():
            producer = self.producers.get(name)
            if producer is None:
                self.metrics.dropped.labels("unknown_producer").inc()
                continue
            for ep_id, hashes in records:
                ep = self.store.get(ep_id)
                if ep is not None:  # an endpoint this replica does not have is not indexed
                    producer.learn(ep, tuple(hashes))

    # --- catch-up ------------------------------------------------------------------------

    async def _catch_up(self, stop: asyncio.Event, discovered: asyncio.Event) -> None:
        await discovered.wait()
        await self._peers_known.wait()
        if not self._connected:
            log.info("replica sync: no peers; serving")
            self._caught_up()
            return
        self._wants = True
        started = time.monotonic()
        deadline = started + self.params.catch_up_timeout
        settle = 2 * self.config.interval_s
        while time.monotonic() < deadline and not stop.is_set():
            alive = set(self._alive())
            if (alive and alive <= self._snapshots_from
                    and time.monotonic() - started >= settle):
                log.info("replica sync: caught up from %s in %.3fs", ", ".join(sorted(alive)),
                         time.monotonic() - started)
                break
            await asyncio.sleep(self.config.interval_s / 2)
        else:
            log.warning("replica sync: no snapshot from every peer within catchUpTimeout "
                        "%.1fs (snapshots from: %s); serving anyway", self.params.catch_up_timeout,
                        ", ".join(sorted(self._snapshots_from)) or "none")
        self._caught_up()

    def _caught_up(self) -> None:
        self._wants = False
        self.metrics.caught_up.set(1)
        self.ready.set()
