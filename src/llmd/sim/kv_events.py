"""KV events from the simulator, in its engine's dialect (`--kv-events-config`).

`KvEventRecorder` turns the block pool's changes into the engine's events: `BlockStored` when
full blocks enter the cache (a prompt's new blocks at admission, each generated block the moment
it is full; partial blocks never), `BlockRemoved` when the pool evicts, `AllBlocksCleared`. The
hashes are the engine's own (`adapter.kv_events.hasher`) over the same token ids, kept beside
the pool's xxh64 keys: resident key -> engine digest, so a prompt hashes only its new blocks
and a sequence extends its chain block by block. Events mirror the pool exactly: a block the
pool already holds is not announced again (vLLM would announce a second physical copy).

`KvEventPublisher` sends them as the engine does: a zmq.asyncio PUB socket that binds or
connects by the engine's rule, 3 frames per batch (topic, 8-byte sequence number, msgpack
payload), an optional replay ROUTER. Batching: the events emitted within `batch_window_s`
(5 ms) of a batch's first one form the batch (the simulator has no global engine step; a vLLM
step takes tens of ms), and the sequence number is taken when a batch closes, so a batch lost to
the bounded queue (`max_queue_size`, oldest dropped) leaves a visible gap. Nothing here raises
into the simulator or blocks its loop: send errors are counted and logged once per kind.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped]  # no stubs ship with msgpack
import zmq
import zmq.asyncio

from llmd.engines import KvEventsDialect, KvEventsSettings
from llmd.sim.blocks import Allocation

__all__ = ["BATCH_WINDOW_S", "EventSink", "KvEventPublisher", "KvEventRecorder"]

log = logging.getLogger(__name__)

BATCH_WINDOW_S = 0.005
_END_SEQ = b"\xff" * 8
_YIELD_EVERY = 64  # sends between event-loop yields (a replay can be 10,000 batches)


class EventSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...


class BatchCounter(Protocol):
    """Counts batches by outcome: published, dropped (queue full), failed (send error)."""

    def on_batch(self, outcome: str) -> None: ...


class KvEventRecorder:
    """The engine's events for one block pool. All methods run on the simulator's loop."""

    def __init__(self, dialect: KvEventsDialect, settings: KvEventsSettings, block_size: int,
                 sink: EventSink, hash_seed: str | None = None) -> None:
        self._dialect = dialect
        self._hasher = dialect.hasher(settings, hash_seed)
        self._block = block_size
        self._emit = sink.emit
        # resident pool key -> the engine's digest and the hash it publishes for it
        self._digests: dict[int, tuple[bytes, int]] = {}
        self._failed = False

    def allocated(self, tokens: Sequence[int], keys: Sequence[int], alloc: Allocation,
                  salt: str | None = None) -> bytes | None:
        """Report an allocation (evictions first, as the engines order them, then the new
        blocks in contiguous runs); returns the engine digest of the last of `keys`. `salt`:
        the request's `cache_salt` (the pool keys of a salted prompt are its own)."""
        if self._failed:
            return None
        try:
            return self._allocated(tokens, keys, alloc, salt)
        except Exception:
            self._fail()
            return None

    def output_block(self, parent: bytes | None, key: int, tokens: Sequence[int], index: int,
                     stored: bool, salt: str | None = None) -> bytes | None:
        """Block `index` of a sequence filled with computed KV (`tokens`, chained on `parent`,
        the previous block's engine digest); `stored`: the pool took it in. Returns its
        digest."""
        if self._failed:
            return None
        try:
            return self._output_block(parent, key, tokens, index, stored, salt)
        except Exception:
            self._fail()
            return None

    def _fail(self) -> None:
        # A recorder bug must not fail requests: stop reporting (the index would drift anyway).
        self._failed = True
        log.exception("kv events: the recorder failed; no more KV events from this simulator")

    def _allocated(self, tokens: Sequence[int], keys: Sequence[int], alloc: Allocation,
                   salt: str | None) -> bytes | None:
        if alloc.evicted:
            self._removed(alloc.evicted)
        digests = self._digests
        if not alloc.stored:
            known = digests.get(keys[-1]) if keys else None
            return known[0] if known else None
        new = set(alloc.stored)
        block, hasher = self._block, self._hasher
        digest: bytes | None = None
        run: list[tuple[bytes, int]] = []
        run_start, run_parent = 0, None
        for i, key in enumerate(keys):
            known = digests.get(key)
            if known is not None and key not in new:
                if run:
                    self._stored(run, run_start, run_parent, tokens, salt)
                    run = []
                digest = known[0]
                continue
            parent = digest
            [digest] = hasher.digests(tokens[i * block:(i + 1) * block], block, parent, salt)
            entry = (digest, hasher.event_hash(digest, salt))
            if key in new:
                digests[key] = entry
                if not run:
                    run_start, run_parent = i, parent
                run.append(entry)
        if run:
            self._stored(run, run_start, run_parent, tokens, salt)
        return digest

    def _output_block(self, parent: bytes | None, key: int, tokens: Sequence[int], index: int,
                      stored: bool, salt: str | None) -> bytes:
        entry = self._digests.get(key)
        if entry is None:
            [digest] = self._hasher.digests(tokens, self._block, parent, salt)
            entry = (digest, self._hasher.event_hash(digest, salt))
        if stored:
            self._digests[key] = entry
            self._stored([entry], index, parent, tokens, salt, offset=False)
        return entry[0]

    def cleared(self) -> None:
        """The cache was emptied (its blocks are gone without BlockRemoved)."""
        self._digests.clear()
        self._emit(self._dialect.cleared_event())

    def _stored(self, run: list[tuple[bytes, int]], start: int, parent: bytes | None,
                tokens: Sequence[int], salt: str | None, offset: bool = True) -> None:
        """One BlockStored for blocks `start`.. of a chain (`tokens` of the whole chain, or of
        the run alone when not `offset`)."""
        block = self._block
        if offset:
            tokens = tokens[start * block:(start + len(run)) * block]
        self._emit(self._dialect.stored_event(
            [h for _, h in run],
            None if parent is None else self._hasher.event_hash(parent, salt), tokens, block,
            salt=salt, first_block=start == 0))

    def _removed(self, keys: Sequence[int]) -> None:
        hashes = []
        for key in keys:
            entry = self._digests.pop(key, None)
            if entry is not None:
                hashes.append(entry[1])
        if not hashes:
            return
        if self._dialect.removed_per_block:
            for h in hashes:
                self._emit(self._dialect.removed_event([h]))
        else:
            self._emit(self._dialect.removed_event(hashes))


class KvEventPublisher:
    """The engine's ZMQ publisher for one simulator (see the module docstring).

    `emit` may be called from the simulator's loop at any time; events count only while
    `running()` is entered. `endpoint` / `replay_endpoint` are the addresses in use once running
    (a bound `:0` port resolved).
    """

    def __init__(self, dialect: KvEventsDialect, settings: KvEventsSettings,
                 counter: BatchCounter, *, dp_rank: int = 0,
                 batch_window_s: float = BATCH_WINDOW_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.dialect = dialect
        self.settings = settings
        self.endpoint = settings.endpoint
        self.replay_endpoint = settings.replay_endpoint
        self.binds = dialect.binds(settings)
        self._counter = counter
        self._dp_rank = dp_rank
        self._window = batch_window_s
        self._clock = clock
        self._topic = settings.topic.encode()
        self._pending: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[int, bytes]] = deque()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=settings.buffer_steps)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned: set[str] = set()

    def emit(self, event: dict[str, Any]) -> None:
        """Add `event` to the open batch (opening one, and its window, if none is open)."""
        loop = self._loop
        if loop is None:
            return
        self._pending.append(event)
        if self._timer is None:
            self._timer = loop.call_later(self._window, self.flush)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[KvEventPublisher]:
        """Open the sockets (bind or connect by the engine's rule; the replay ROUTER always
        binds) and publish until the block exits; the batches still queued are sent first.
        OSError naming the endpoint when a socket cannot be set up."""
        ctx = zmq.asyncio.Context()
        try:
            pub = ctx.socket(zmq.PUB)
            pub.sndhwm = self.settings.hwm
            self.endpoint = _open(pub, self.endpoint, self.binds, "endpoint")
            router = None
            if self.replay_endpoint is not None:
                router = ctx.socket(zmq.ROUTER)
                self.replay_endpoint = _open(router, self.replay_endpoint, True,
                                             "replay_endpoint")
            self._loop = asyncio.get_running_loop()
            log.info("kv events: PUB %s %s, topic %r%s", "bound" if self.binds else "connected to",
                     self.endpoint, self.settings.topic,
                     f", replay on {self.replay_endpoint}" if router is not None else "")
            if self.dialect.clears_on_start:  # SGLang's first (idle) step: a batch of its own
                self.emit(self.dialect.cleared_event())
                self.flush()
            tasks = [asyncio.create_task(self._send_loop(pub), name="sim-kv-events")]
            if router is not None:
                tasks.append(asyncio.create_task(self._replay_loop(router), name="sim-kv-replay"))
            try:
                yield self
            finally:
                self._loop = None
                self.flush()
                await _cancel(tasks)
                await self._drain(pub)  # what the send task had not sent, in order
        finally:
            ctx.destroy(linger=0)

    def flush(self) -> None:
        """Close the open batch now (its window cut short) and queue it for sending."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        events, self._pending = self._pending, []
        if not events:
            return
        try:
            payload = msgpack.packb(self.dialect.batch(self._clock(), events, self._dp_rank))
        except Exception:  # an unencodable event is a simulator bug: never the request's
            self._warn("encode", "kv events: a batch could not be encoded")
            self._counter.on_batch("failed")
            return
        self._queue.append((next(self._seq), payload))
        if len(self._queue) > self.settings.max_queue_size:
            self._queue.popleft()
            self._counter.on_batch("dropped")
            self._warn("dropped", "kv events: the send queue is full; dropping the oldest "
                                  "batches (llmd_sim_kv_event_batches_total{outcome=\"dropped\"})")
        self._wake.set()

    async def _send_loop(self, pub: zmq.asyncio.Socket) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain(pub)

    async def _drain(self, pub: zmq.asyncio.Socket) -> None:
        queue, sent = self._queue, 0
        while queue:
            seq, payload = queue.popleft()
            try:
                # A PUB socket never blocks: at its high-water mark ZMQ drops the message.
                await pub.send_multipart([self._topic, seq.to_bytes(8, "big"), payload])
            except Exception as exc:  # the publisher must never take the simulator down
                self._counter.on_batch("failed")
                self._warn("send", f"kv events: send failed: {type(exc).__name__}: {exc}")
                continue
            self._buffer.append((seq, payload))
            self._counter.on_batch("published")
            sent += 1
            if sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _replay_loop(self, router: zmq.asyncio.Socket) -> None:
        """vLLM's `_service_replay`: `[client, b"", start_seq]` gets every buffered batch from
        start_seq on, `[client, b"", topic, seq, payload]` each, then the end marker."""
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 3:
                self._warn("replay", f"kv events: a replay request has 3 frames, got "
                                     f"{len(frames)}; ignored")
                continue
            client, _, start = frames
            first = int.from_bytes(start, "big")
            try:
                for n, (seq, payload) in enumerate(
                        [b for b in self._buffer if b[0] >= first], start=1):
                    await router.send_multipart(
                        [client, b"", self._topic, seq.to_bytes(8, "big"), payload])
                    if n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                await router.send_multipart([client, b"", b"", _END_SEQ, b""])
            except zmq.ZMQError as exc:
                self._warn("replay-send", f"kv events: replay send failed: {exc}")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s", message)


def _open(sock: zmq.asyncio.Socket, endpoint: str, bind: bool, field: str) -> str:
    """Bind or connect `sock`; the endpoint in use (a bound ephemeral port resolved)."""
    if "[" in endpoint or "::" in endpoint:
        sock.ipv6 = True
    try:
        if bind:
            sock.bind(endpoint)
            return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        sock.connect(endpoint)
        return endpoint
    except zmq.ZMQError as exc:
        verb = "bind" if bind else "connect to"
        raise OSError(f"--kv-events-config {field}: cannot {verb} {endpoint!r}: {exc}") from None


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
