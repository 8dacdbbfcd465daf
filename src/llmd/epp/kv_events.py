"""The EPP's KV-event subscriptions: every endpoint's engine events, into a `PrefixIndex`.

Which socket each endpoint publishes on:

- an endpoint with a `kv-events` label (`llmd epp --endpoint ip:port,...,kv-events=tcp://h:p`)
  publishes there: the EPP connects to it (the engine binds, as both engines do for `tcp://*`);
- otherwise, with pod discovery (`discoverPods`, llm-d's default), `tcp://<endpoint ip>:
  <socketPort>` (5557 unless configured: the llm-d guides use 5556);
- centralized (`zmqEndpoint` set): the EPP binds one socket there and every engine connects to
  it; a message is attributed to the endpoint its topic names (`kv@<ip>:<port>@<model>`).

Messages are decoded in the endpoint's engine dialect (its `llm-d.ai/engine-type` label, or
`engineType`) and applied to the index: `BlockStored` under the chain root of its model (the
topic's, or the endpoint's `llm-d.ai/model` label), LoRA adapter and cache salt, `BlockRemoved`,
`AllBlocksCleared`. Nothing an endpoint sends can stop the follower: an undecodable message or
event, an event whose parent block is unknown or whose block size the index cannot map, is
counted (`llmd_epp_kv_events_skipped_total{reason}`) and skipped. A sequence number that goes
back means the publisher restarted (its cache is empty): the endpoint's blocks are cleared. A
sequence gap (batches lost) is counted; the blocks it held stay until the engine removes them.
An endpoint that leaves the pool leaves the index, and its socket is closed. ZMQ reconnects on
its own when a publisher comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry, Counter, Gauge

from llmd.engines import get_adapter, parse_kv_topic
from llmd.epp.datastore import Endpoint, EndpointId, endpoint_id
from llmd.epp.plugins.base import EndpointView
from llmd.errors import EngineError
from llmd.kvcache import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventDecodeError,
    PrefixIndex,
    chain_root,
    decode_message,
)

__all__ = ["KV_EVENTS_LABEL", "KvEventsFollower", "SubscribeSettings"]

log = logging.getLogger(__name__)

KV_EVENTS_LABEL = "kv-events"
"""Endpoint label naming the endpoint's KV-event socket (`tcp://host:port`)."""
MODEL_LABEL = "llm-d.ai/model"
MAX_MESSAGE_BYTES = 64 << 20
"""A larger message (no engine sends one: a batch is a few steps' events) drops the
connection; ZMQ then reconnects."""


@dataclass(frozen=True, slots=True)
class SubscribeSettings:
    """llm-d's `kvEventsConfig`, as far as subscribing goes."""

    topic_filter: str = "kv@"
    discover_pods: bool = True
    socket_port: int = 5557
    zmq_endpoint: str | None = None
    engine_type: str | None = None
    poll_s: float = 0.2


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.events = Counter("llmd_epp_kv_events", "KV events applied to the prefix index",
                              ["endpoint", "type"], registry=registry)
        self.skipped = Counter("llmd_epp_kv_events_skipped",
                               "KV events or messages skipped, by reason",
                               ["endpoint", "reason"], registry=registry)
        self.blocks = Gauge("llmd_epp_kv_index_blocks",
                            "Engine blocks the precise prefix index holds per endpoint",
                            ["endpoint"], registry=registry)

    def forget(self, ep_id: str) -> None:
        for metric in (self.events, self.skipped, self.blocks):
            for labels in [k for k in metric._metrics if k[0] == ep_id]:  # noqa: SLF001
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)


class KvEventsFollower:
    """Keeps `index` in step with the engines' KV events (see the module docstring)."""

    def __init__(self, index: PrefixIndex, settings: SubscribeSettings,
                 registry: CollectorRegistry | None = None,
                 on_applied: Callable[[EndpointId], None] | None = None) -> None:
        self.index, self.settings = index, settings
        self.metrics = _Metrics(registry)
        self._on_applied = on_applied
        self._ctx = zmq.asyncio.Context.instance()
        self._last_seq: dict[EndpointId, int] = {}
        self._endpoints: dict[EndpointId, Endpoint] = {}

    async def run(self, pool: EndpointView, stop: asyncio.Event) -> None:
        """Follow `pool`'s endpoints until `stop` (never raises for what they send)."""
        if self.settings.zmq_endpoint:
            await self._run_centralized(pool, stop)
            return
        tasks: dict[tuple[EndpointId, str], asyncio.Task[None]] = {}
        generation = -1
        try:
            while not stop.is_set():
                if pool.generation != generation:
                    generation = pool.generation
                    wanted = {}
                    self._endpoints = {ep.id: ep for ep in pool.endpoints()}
                    for ep in self._endpoints.values():
                        url = self._url(ep)
                        if url is not None:
                            wanted[(ep.id, url)] = ep
                    for key in [k for k in tasks if k not in wanted]:
                        tasks.pop(key).cancel()
                        self._forget(key[0])
                    for key, ep in wanted.items():
                        if key not in tasks:
                            tasks[key] = asyncio.create_task(
                                self._follow(ep, key[1], stop), name=f"kv-events {ep.id}")
                await _wait(stop, 0.25)
        finally:
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.wait(tasks.values())

    def _url(self, ep: Endpoint) -> str | None:
        explicit = ep.labels.get(KV_EVENTS_LABEL)
        if explicit:
            return explicit
        if not self.settings.discover_pods:
            return None
        host = f"[{ep.spec.address}]" if ":" in ep.spec.address else ep.spec.address
        return f"tcp://{host}:{self.settings.socket_port}"

    async def _follow(self, ep: Endpoint, url: str, stop: asyncio.Event) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt_string(zmq.SUBSCRIBE, self.settings.topic_filter)
        try:
            sock.connect(url)
        except zmq.ZMQError as exc:
            log.warning("KV events of %s: cannot connect to %s: %s", ep.id, url, exc)
            sock.close()
            return
        log.info("KV events of %s: subscribed to %s", ep.id, url)
        try:
            raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
            while not stop.is_set():
                if await sock.poll(int(self.settings.poll_s * 1000)):
                    for frames in _waiting(raw):
                        self._apply(ep, frames)
                    await asyncio.sleep(0)  # a flood of events must not hold the decisions
        finally:
            sock.close()

    async def _run_centralized(self, pool: EndpointView, stop: asyncio.Event) -> None:
        assert self.settings.zmq_endpoint is not None
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt_string(zmq.SUBSCRIBE, self.settings.topic_filter)
        sock.bind(self.settings.zmq_endpoint)
        log.info("KV events: bound %s (engines connect)", self.settings.zmq_endpoint)
        generation = -1
        raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        try:
            while not stop.is_set():
                if pool.generation != generation:
                    generation = pool.generation
                    live = {ep.id: ep for ep in pool.endpoints()}
                    for gone in [k for k in self._endpoints if k not in live]:
                        self._forget(gone)
                    self._endpoints = live
                if await sock.poll(int(self.settings.poll_s * 1000)):
                    for frames in _waiting(raw):
                        parsed = parse_kv_topic(_text(frames[0])) if frames else None
                        ep = None
                        if parsed is not None:
                            ep = self._endpoints.get(endpoint_id(parsed[0], parsed[1]))
                        if ep is None:
                            self.metrics.skipped.labels("", "unknown-topic").inc()
                            continue
                        self._apply(ep, frames)
                    await asyncio.sleep(0)
        finally:
            sock.close()

    def _apply(self, ep: Endpoint, frames: list[bytes]) -> None:
        try:
            dialect = get_adapter(self.settings.engine_type or ep.spec.engine).kv_events
            batch = decode_message(frames, dialect)
        except (EventDecodeError, EngineError) as exc:
            self.metrics.skipped.labels(ep.id, "undecodable").inc()
            log.debug("KV events of %s: %s", ep.id, exc)
            return
        self._check_seq(ep.id, batch)
        for _ in batch.errors:
            self.metrics.skipped.labels(ep.id, "undecodable").inc()
        model = self._model(ep, batch.topic)
        for event in batch.events:
            self._event(ep.id, event, model, dialect.medium)
        self.metrics.blocks.labels(ep.id).set(self.index.blocks(ep.id))
        if self._on_applied is not None:
            self._on_applied(ep.id)

    def _event(self, ep_id: EndpointId, event: object, model: str, medium: str) -> None:
        if isinstance(event, BlockStored):
            root = chain_root(model, lora_name=event.lora_name, cache_salt=event.cache_salt)
            skipped = self.index.stored(ep_id, event.engine_hashes, event.parent,
                                        event.token_ids, event.block_size, root,
                                        event.medium or medium)
            if skipped is not None:
                self.metrics.skipped.labels(ep_id, skipped).inc()
                return
            self.metrics.events.labels(ep_id, "BlockStored").inc()
        elif isinstance(event, BlockRemoved):
            self.index.removed(ep_id, event.engine_hashes, event.medium or medium)
            self.metrics.events.labels(ep_id, "BlockRemoved").inc()
        elif isinstance(event, AllBlocksCleared):
            self.index.cleared(ep_id)
            self.metrics.events.labels(ep_id, "AllBlocksCleared").inc()

    def _check_seq(self, ep_id: EndpointId, batch: EventBatch) -> None:
        if batch.seq < 0:
            return
        last = self._last_seq.get(ep_id)
        self._last_seq[ep_id] = batch.seq
        if last is None:
            return
        if batch.seq <= last:
            # A new publisher (the engine restarted): its cache is empty.
            log.info("KV events of %s: sequence went back (%d -> %d); clearing its blocks",
                     ep_id, last, batch.seq)
            self.index.cleared(ep_id)
        elif batch.seq > last + 1:
            self.metrics.skipped.labels(ep_id, "sequence-gap").inc(batch.seq - last - 1)

    def _model(self, ep: Endpoint, topic: str) -> str:
        parsed = parse_kv_topic(topic) if topic else None
        if parsed is not None and parsed[2]:
            return parsed[2]
        return ep.labels.get(MODEL_LABEL, "")

    def _forget(self, ep_id: EndpointId) -> None:
        self.index.drop_endpoint(ep_id)
        self._last_seq.pop(ep_id, None)
        self.metrics.forget(ep_id)


_DRAIN = 256
"""Messages received per wake-up at most, before the follower lets the event loop run."""


def _waiting(raw: zmq.Socket[bytes], most: int = _DRAIN) -> list[list[bytes]]:
    """The messages `raw` holds now (at most `most`), received without blocking: one wake-up
    of the event loop per burst instead of a poll and an awaited receive per message."""
    out: list[list[bytes]] = []
    while len(out) < most:
        try:
            out.append(raw.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return out


def _text(frame: bytes) -> str:
    return frame.decode("utf-8", "replace")


async def _wait(stop: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await stop.wait()
