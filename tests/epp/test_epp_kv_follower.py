"""The EPP's KV-event follower over real ZMQ sockets (ipc on a temporary path): each endpoint's
events, in its engine's dialect, kept in a `PrefixIndex`; faults counted, never raised.

The publishers here are plain PUB sockets sending frames built with the engine adapters' own
event builders (the simulators' publisher is tested against the real engines' captures in
tests/sim/test_sim_kv_events.py); the follower is what is under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry

from llmd.engines import get_adapter, kv_topic
from llmd.epp.datastore import Datastore, EndpointSpec
from llmd.epp.kv_events import KV_EVENTS_LABEL, KvEventsFollower, SubscribeSettings
from llmd.kvcache import PrefixIndex, chain_root

MODEL = "tiny"
BLOCK = 16
TOKENS = list(range(1000, 1000 + 4 * BLOCK))  # 4 engine blocks of 16 tokens


class Publisher:
    """One engine's PUB socket: sends batches in `engine`'s dialect with its own seq."""

    def __init__(self, ctx: zmq.asyncio.Context, engine: str, url: str, *, bind: bool = True,
                 topic: str = f"kv@pod@{MODEL}") -> None:
        self.dialect = get_adapter(engine).kv_events
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        (self.sock.bind if bind else self.sock.connect)(url)
        self.topic, self.seq = topic, 0

    def send(self, *events: dict[str, Any], seq: int | None = None) -> None:
        self.seq = self.seq + 1 if seq is None else seq
        payload = msgpack.packb(self.dialect.batch(time.time(), list(events)))
        self.sock.send_multipart([self.topic.encode(), self.seq.to_bytes(8, "big"), payload])

    def stored(self, hashes: Sequence[int], tokens: Sequence[int],
               parent: int | None = None) -> dict[str, Any]:
        return self.dialect.stored_event(hashes, parent, tokens, BLOCK)


def spec(port: int, engine: str, url: str | None = None) -> EndpointSpec:
    labels = {"llm-d.ai/engine-type": engine, "llm-d.ai/model": MODEL}
    if url is not None:
        labels[KV_EVENTS_LABEL] = url
    return EndpointSpec("127.0.0.1", port, labels)


@contextlib.asynccontextmanager
async def following(store: Datastore, settings: SubscribeSettings | None = None
                    ) -> AsyncIterator[tuple[KvEventsFollower, CollectorRegistry]]:
    registry = CollectorRegistry()
    follower = KvEventsFollower(PrefixIndex(BLOCK), settings or SubscribeSettings(poll_s=0.02),
                                registry)
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(store, stop))
    try:
        yield follower, registry
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def until(pred: Callable[[], bool], publish: Callable[[], None] | None = None,
                timeout_s: float = 5.0) -> None:
    """Wait for `pred`; `publish` is repeated meanwhile (a SUB misses what was sent before it
    connected: ZMQ's slow joiner)."""
    async with asyncio.timeout(timeout_s):
        while not pred():
            if publish is not None:
                publish()
            await asyncio.sleep(0.05)


def matched(follower: KvEventsFollower, endpoint: str, tokens: Sequence[int] = TOKENS
            ) -> float:
    keys = follower.index.request_keys(tokens, chain_root(MODEL))
    return follower.index.match(keys, [endpoint]).get(endpoint, 0.0)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


class Publishers:
    """Makes publishers and closes every one at the end of the test."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context.instance()
        self.made: list[Publisher] = []

    def __call__(self, engine: str, url: str, **kwargs: Any) -> Publisher:
        self.made.append(Publisher(self.ctx, engine, url, **kwargs))
        return self.made[-1]


@pytest.fixture
def publisher() -> Iterator[Publishers]:
    made = Publishers()
    yield made
    for pub in made.made:
        pub.sock.close()


async def test_each_endpoint_is_followed_in_its_own_dialect(tmp_path: Path,
                                                            publisher: Publishers) -> None:
    """A vLLM and an SGLang endpoint side by side: each one's blocks land under its own id,
    decoded by its engine-type label; removal and clearing are honoured."""
    urls = {e: f"ipc://{tmp_path}/{e}.kv" for e in ("vllm", "sglang")}
    pubs = {e: publisher(e, url) for e, url in urls.items()}
    store = Datastore()
    store.set_endpoints([spec(8001, "vllm", urls["vllm"]), spec(8002, "sglang", urls["sglang"])])
    async with following(store) as (follower, registry):
        ids = {"vllm": "127.0.0.1:8001", "sglang": "127.0.0.1:8002"}
        for engine, pub in pubs.items():
            first = pub.stored([11, 12], TOKENS[:2 * BLOCK])
            rest = pub.stored([13, 14], TOKENS[2 * BLOCK:], parent=12)
            await until(lambda ep=ids[engine]: matched(follower, ep) == 4,
                        lambda pub=pub, a=first, b=rest: pub.send(a, b))
        assert follower.index.blocks(ids["vllm"]) == 4
        assert sample(registry, "llmd_epp_kv_events_total", endpoint=ids["sglang"],
                      type="BlockStored") >= 2

        pubs["vllm"].send(pubs["vllm"].dialect.removed_event([13]))
        await until(lambda: matched(follower, ids["vllm"]) == 2)
        assert matched(follower, ids["sglang"]) == 4  # the other endpoint is untouched

        # Outside the topic filter (`kv@`, llm-d's default): not even read.
        pubs["vllm"].topic = "other"
        pubs["vllm"].send(pubs["vllm"].dialect.removed_event([11]))
        pubs["sglang"].send(pubs["sglang"].dialect.cleared_event())
        await until(lambda: matched(follower, ids["sglang"]) == 0)
        assert sample(registry, "llmd_epp_kv_index_blocks", endpoint=ids["sglang"]) == 0
        assert matched(follower, ids["vllm"]) == 2


async def test_garbage_unknown_parents_and_gaps_are_counted_and_skipped(
        engine: str, tmp_path: Path, publisher: Publishers) -> None:
    url = f"ipc://{tmp_path}/kv"
    pub = publisher(engine, url)
    store = Datastore()
    store.set_endpoints([spec(8001, engine, url)])
    ep = "127.0.0.1:8001"
    async with following(store) as (follower, registry):
        await until(lambda: follower.index.blocks(ep) == 1,
                    lambda: pub.send(pub.stored([1], TOKENS[:BLOCK]), seq=1))
        topic = pub.topic.encode()
        pub.sock.send_multipart([topic, (2).to_bytes(8, "big"), b"\xc1 not msgpack"])
        pub.sock.send_multipart([topic + b" and only one frame"])
        pub.send(pub.stored([9], TOKENS[BLOCK:2 * BLOCK], parent=777), seq=3)
        pub.send({"type": "BlockStored", "block_hashes": "nonsense"}, seq=4)
        pub.send(pub.stored([2], TOKENS[BLOCK:2 * BLOCK], parent=1), seq=10)  # 5-9 lost
        await until(lambda: follower.index.blocks(ep) == 2)
        assert matched(follower, ep) == 2
        assert sample(registry, "llmd_epp_kv_events_skipped_total", endpoint=ep,
                      reason="undecodable") >= 3
        assert sample(registry, "llmd_epp_kv_events_skipped_total", endpoint=ep,
                      reason="unknown-parent") == 1
        assert sample(registry, "llmd_epp_kv_events_skipped_total", endpoint=ep,
                      reason="sequence-gap") == 1 + 5  # seq 2 (unreadable) and 5-9


async def test_a_restarted_publisher_clears_the_endpoint_and_is_followed_again(
        engine: str, tmp_path: Path, publisher: Publishers) -> None:
    """The engine dies and a new one binds the same socket: its sequence starts over, so what
    the old one held is forgotten; ZMQ reconnects without the follower's help."""
    url = f"ipc://{tmp_path}/kv"
    pub = publisher(engine, url)
    store = Datastore()
    store.set_endpoints([spec(8001, engine, url)])
    ep = "127.0.0.1:8001"
    async with following(store) as (follower, _):
        await until(lambda: follower.index.blocks(ep) == 4,
                    lambda: pub.send(pub.stored([1, 2, 3, 4], TOKENS), seq=50))
        pub.sock.close()
        await asyncio.sleep(0.1)
        again = publisher(engine, url)
        await until(lambda: follower.index.blocks(ep) == 1,
                    lambda: again.send(again.stored([5], TOKENS[:BLOCK]), seq=1))
        assert matched(follower, ep) == 1


async def test_an_endpoint_that_leaves_the_pool_leaves_the_index(
        tmp_path: Path, publisher: Publishers) -> None:
    urls = [f"ipc://{tmp_path}/{i}.kv" for i in range(2)]
    pubs = [publisher("vllm", u) for u in urls]
    store = Datastore()
    store.set_endpoints([spec(8000 + i, "vllm", u) for i, u in enumerate(urls)])
    async with following(store) as (follower, registry):
        for i, pub in enumerate(pubs):
            await until(lambda i=i: follower.index.blocks(f"127.0.0.1:{8000 + i}") == 1,
                        lambda pub=pub: pub.send(pub.stored([1], TOKENS[:BLOCK])))
        store.set_endpoints([spec(8000, "vllm", urls[0])])
        await until(lambda: follower.index.blocks("127.0.0.1:8001") == 0)
        assert registry.get_sample_value("llmd_epp_kv_index_blocks",
                                         {"endpoint": "127.0.0.1:8001"}) is None
        pubs[1].send(pubs[1].stored([2], TOKENS[:BLOCK]))  # no longer followed
        await asyncio.sleep(0.2)
        assert follower.index.blocks("127.0.0.1:8001") == 0
        assert follower.index.blocks("127.0.0.1:8000") == 1


async def test_centralized_mode_attributes_messages_by_topic(
        engine: str, tmp_path: Path, publisher: Publishers) -> None:
    """`zmqEndpoint`: the EPP binds, engines connect, and the topic `kv@ip:port@model` names
    the endpoint (and the model); a topic naming no endpoint is counted and dropped."""
    url = f"ipc://{tmp_path}/central.kv"
    store = Datastore()
    store.set_endpoints([spec(8001, engine), spec(8002, engine)])
    settings = SubscribeSettings(zmq_endpoint=url, poll_s=0.02)
    async with following(store, settings) as (follower, registry):
        first = publisher(engine, url, bind=False, topic=kv_topic("127.0.0.1", 8001, MODEL))
        second = publisher(engine, url, bind=False,
                           topic=kv_topic("127.0.0.1", 8002, "other-model"))
        stranger = publisher(engine, url, bind=False,
                             topic=kv_topic("10.0.0.9", 8000, MODEL))
        await until(lambda: follower.index.blocks("127.0.0.1:8001") == 2,
                    lambda: first.send(first.stored([1, 2], TOKENS[:2 * BLOCK])))
        await until(lambda: follower.index.blocks("127.0.0.1:8002") == 2,
                    lambda: second.send(second.stored([1, 2], TOKENS[:2 * BLOCK])))
        assert matched(follower, "127.0.0.1:8001") == 2
        # The second engine's blocks are rooted in the model its topic names, not ours.
        assert matched(follower, "127.0.0.1:8002") == 0
        await until(lambda: sample(registry, "llmd_epp_kv_events_skipped_total", endpoint="",
                                   reason="unknown-topic") > 0,
                    lambda: stranger.send(stranger.stored([1], TOKENS[:BLOCK])))


async def test_pod_discovery_dials_each_endpoint_on_the_socket_port(
        engine: str, publisher: Publishers) -> None:
    """No `kv-events` label: the follower dials `tcp://<endpoint ip>:<socketPort>`, as llm-d's
    pod discovery does (here 127.0.0.1 and an ephemeral port the engine bound)."""
    pub = publisher(engine, "tcp://127.0.0.1:0")
    port = int(pub.sock.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2])
    store = Datastore()
    store.set_endpoints([spec(8001, engine)])
    settings = SubscribeSettings(socket_port=port, poll_s=0.02)
    async with following(store, settings) as (follower, _):
        await until(lambda: follower.index.blocks("127.0.0.1:8001") == 1,
                    lambda: pub.send(pub.stored([1], TOKENS[:BLOCK])))
