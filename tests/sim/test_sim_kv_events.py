"""The simulators publish KV events as their engine does (`kv_events_config`, the engine's own
`--kv-events-config`): real pyzmq SUB and DEALER sockets on loopback read them, llmd's decoder
decodes them, and the hashes are the engine's own for the same tokens (checked against the
hashes real vLLM and SGLang published for the fixtures' token ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq
import zmq.asyncio
from _simtools import StartSim
from pydantic import ValidationError
from zmq.utils.monitor import parse_monitor_message

from llmd.engines import get_adapter
from llmd.kvcache import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    BuiltinTokenizer,
    EventBatch,
    decode_message,
    decode_replay,
    replay_request,
)
from llmd.sim import BlockPool, RunningSim, SimConfig, running_sim
from llmd.sim.kv_events import KvEventPublisher, KvEventRecorder

# What real vLLM 0.32 (block 32) and SGLang 0.5.23 (page 64) published for these tokens
# (fixtures/kv-events: vLLM frames.jsonl seq 0, SGLang frames.jsonl seq 1).
REAL = {
    "vllm": ("vllm/requests.jsonl", 32, [11080686542240178668, 9192437553612686385,
                                         14879320008833059282]),
    "sglang": ("sglang/steps_default.jsonl", 64, [1621724944996033509, -4348969804400360826,
                                                  -3750833518653300982]),
}


def config(engine: str, endpoint: str, **extra: Any) -> str:
    raw: dict[str, Any] = {"publisher": "zmq", "endpoint": endpoint,
                           "topic": "kv@127.0.0.1:8000@llmd-sim", **extra}
    if engine == "vllm":
        raw["enable_kv_cache_events"] = True
    return json.dumps(raw)


class Subscriber:
    """A SUB socket read by a background task (so it takes in a new connection, and sends its
    subscription, as soon as the publisher connects), collecting decoded batches."""

    def __init__(self, sock: zmq.asyncio.Socket, engine: str) -> None:
        self.sock = sock
        self.dialect = get_adapter(engine).kv_events
        self.batches: list[EventBatch] = []
        self._arrived = asyncio.Event()

    async def read(self) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            self.batches.append(decode_message(frames, self.dialect))
            self._arrived.set()

    async def until(self, pred: Callable[[list[EventBatch]], bool], timeout_s: float = 10.0
                    ) -> list[EventBatch]:
        async with asyncio.timeout(timeout_s):
            while not pred(self.batches):
                self._arrived.clear()
                await self._arrived.wait()
        return self.batches

    def events(self) -> list[Any]:
        return [e for b in self.batches for e in b.events]


@asynccontextmanager
async def subscriber(engine: str, endpoint: str | None = None
                     ) -> AsyncIterator[tuple[Subscriber, str]]:
    """A SUB socket: bound on an ephemeral loopback port (the simulator connects), or connected
    to `endpoint` (the simulator binds; yielded once the connection's handshake is done)."""
    ctx = zmq.asyncio.Context()
    reader = None
    try:
        sock = ctx.socket(zmq.SUB)
        sock.subscribe(b"")
        sub = Subscriber(sock, engine)
        reader = asyncio.create_task(sub.read())
        if endpoint is None:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            async with handshake(sub):
                sock.connect(endpoint)
        yield sub, endpoint
    finally:
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        ctx.destroy(linger=0)


@asynccontextmanager
async def handshake(sub: Subscriber) -> AsyncIterator[None]:
    """Wait (bounded) until a connection of `sub` completed its ZMTP handshake (PUB/SUB's slow
    joiner: what a PUB sends before it has the subscription is lost)."""
    monitor = sub.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        yield
        async with asyncio.timeout(10):
            parse_monitor_message(await monitor.recv_multipart())
    finally:
        sub.sock.disable_monitor()
        monitor.close(linger=0)


async def replay(engine: str, endpoint: str, start: int) -> list[EventBatch | None]:
    """Every answer of the replay ROUTER to a DEALER asking from `start`, end marker (None)
    included."""
    ctx = zmq.asyncio.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(endpoint)
        await dealer.send_multipart(replay_request(start))
        out: list[EventBatch | None] = []
        async with asyncio.timeout(10):
            while not out or out[-1] is not None:
                frames = await dealer.recv_multipart()
                out.append(decode_replay(frames, get_adapter(engine).kv_events))
        return out
    finally:
        ctx.destroy(linger=0)


async def complete(sim: RunningSim, prompt: list[int], max_tokens: int) -> list[int]:
    """One completion from token ids; returns the generated ids."""
    async with aiohttp.ClientSession() as http:
        body = {"model": "llmd-sim", "prompt": prompt, "max_tokens": max_tokens,
                "ignore_eos": True}
        async with http.post(sim.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            text = (await resp.json())["choices"][0]["text"]
    return BuiltinTokenizer().encode(text, add_special_tokens=False)


def stored(batches: list[EventBatch]) -> list[BlockStored]:
    return [e for b in batches for e in b.events if isinstance(e, BlockStored)]


def stored_hashes(batches: list[EventBatch]) -> list[int]:
    return [h for e in stored(batches) for h in e.engine_hashes]


def real_tokens(shared_dir: Path, engine: str) -> list[int]:
    name, _, _ = REAL[engine]
    with open(shared_dir / "fixtures" / "kv-events" / name) as f:
        first = json.loads(f.readline() if engine == "vllm" else f.readlines()[1])
    return list(first["prompt_token_ids"] if engine == "vllm" else first["tokens"])


async def test_the_simulator_publishes_what_the_real_engine_did(
        start_sim: StartSim, engine: str, shared_dir: Path) -> None:
    _, block, real = REAL[engine]
    prompt = real_tokens(shared_dir, engine)
    async with subscriber(engine) as (sub, endpoint):
        async with handshake(sub):
            sim = await start_sim(block_size=block, max_model_len=1024,
                                  kv_events_config=config(engine, endpoint))
        assert sim.kv_events is not None and sim.kv_events.endpoint == endpoint
        out = await complete(sim, prompt, max_tokens=80)
        tokens = prompt + out
        computed = len(tokens) - 1  # the last sampled token is never fed back
        n = computed // block
        batches = await sub.until(lambda bs: len(stored_hashes(bs)) >= n)

    hashes = stored_hashes(batches)
    assert hashes[:3] == real  # the prompt's blocks, exactly as the engine published them
    dialect = get_adapter(engine).kv_events
    hasher = dialect.hasher(dialect.parse_config(config(engine, endpoint)))
    digests = hasher.digests(tokens[:computed], block)
    assert hashes == [hasher.event_hash(d) for d in digests]  # and the generated blocks too
    blocks = stored(batches)
    prompt_event = blocks[0]
    assert prompt_event.parent is None and prompt_event.token_ids == tuple(prompt[:3 * block])
    chain = [None, *hashes]
    for ev in blocks[1:]:  # each generated block as it filled, chained on the one before
        i = hashes.index(ev.engine_hashes[0])
        assert len(ev.engine_hashes) == 1 and ev.parent == chain[i]
        assert ev.token_ids == tuple(tokens[i * block:(i + 1) * block])
    assert all((e.medium, e.block_size, e.lora_id) == ("GPU", block, None) for e in blocks)
    if engine == "vllm":
        assert prompt_event.extra_keys == (None, None, None)
        assert (prompt_event.group_idx, prompt_event.kv_cache_spec_kind) == (0, "full_attention")
    else:
        assert (prompt_event.extra_keys, prompt_event.cache_salt) == (None, None)
    assert all(b.topic == "kv@127.0.0.1:8000@llmd-sim" and b.dp_rank == 0 for b in batches)
    seqs = [b.seq for b in batches]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, none missing


async def test_replay_and_the_leading_clear(start_sim: StartSim, engine: str) -> None:
    prompt = list(range(1000, 1100))
    async with subscriber(engine) as (sub, endpoint):
        async with handshake(sub):
            sim = await start_sim(kv_events_config=config(
                engine, endpoint, replay_endpoint="tcp://127.0.0.1:0", buffer_steps=100))
        assert sim.kv_events is not None and sim.kv_events.replay_endpoint is not None
        router = sim.kv_events.replay_endpoint
        assert not router.endswith(":0")  # the port it bound
        await complete(sim, prompt, max_tokens=20)
        live = await sub.until(lambda bs: len(stored_hashes(bs)) >= (100 + 19) // 16)
        everything = await replay(engine, router, 0)
        assert everything[-1] is None
        batches = [b for b in everything if b is not None]
        assert [b.seq for b in batches] == list(range(len(batches)))
        by_seq = {b.seq: b for b in batches}
        assert all(by_seq[b.seq] == b for b in live)  # replay answers the live batches
        if engine == "sglang":  # SGLang starts every stream with AllBlocksCleared
            assert batches[0].events == (AllBlocksCleared(),)
        else:
            assert not any(isinstance(e, AllBlocksCleared) for b in batches for e in b.events)
        tail = await replay(engine, router, batches[-1].seq)
        assert tail == [batches[-1], None]
        assert await replay(engine, router, 10_000) == [None]


async def test_evictions_are_block_removed(start_sim: StartSim, engine: str) -> None:
    block = 16
    first, second = list(range(1000, 1064)), list(range(2000, 2064))  # 4 full blocks each
    async with subscriber(engine) as (sub, endpoint):
        async with handshake(sub):
            sim = await start_sim(block_size=block, kv_cache_blocks=6, max_model_len=96,
                                  kv_events_config=config(engine, endpoint))
        await complete(sim, first, max_tokens=1)
        await sub.until(lambda bs: len(stored_hashes(bs)) >= 4)
        old = stored_hashes(sub.batches)
        await complete(sim, second, max_tokens=1)  # needs 4 + 1: evicts 3 of the first's
        batches = await sub.until(lambda bs: len(stored_hashes(bs)) >= 8)
    removed = [e for b in batches for e in b.events if isinstance(e, BlockRemoved)]
    gone = [h for e in removed for h in e.engine_hashes]
    assert gone == old[:0:-1]  # the tail first, block 0 kept
    if engine == "vllm":
        assert [len(e.engine_hashes) for e in removed] == [1, 1, 1]  # one event per block
    else:
        assert [len(e.engine_hashes) for e in removed] == [3]  # one per eviction
    events = sub.events()
    first_new = next(i for i, e in enumerate(events)
                     if isinstance(e, BlockStored) and e.engine_hashes[0] not in old)
    assert all(events.index(e) < first_new for e in removed)  # removals precede their stores


async def test_the_publisher_binds_by_the_engines_rule(start_sim: StartSim, engine: str,
                                                       tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/kv.sock"  # ipc binds for both engines (as * and :: do)
    sim = await start_sim(kv_events_config=config(engine, endpoint))
    assert sim.kv_events is not None and sim.kv_events.binds
    async with subscriber(engine, endpoint) as (sub, _):
        await complete(sim, list(range(3000, 3032)), max_tokens=1)
        await sub.until(lambda bs: bool(stored_hashes(bs)))
    assert stored(sub.batches)[0].block_size == 16


@pytest.mark.parametrize(("engine", "raw"), [
    pytest.param("vllm", {"publisher": "zmq"}, id="vllm-not-enabled"),
    pytest.param("vllm", {"enable_kv_cache_events": True, "publisher": "null"}, id="vllm-null"),
    pytest.param("sglang", {}, id="sglang-default-null"),
])
async def test_publishing_off_opens_no_socket(start_sim: StartSim, engine: str,
                                              raw: dict[str, Any]) -> None:
    sim = await start_sim(kv_events_config=json.dumps(raw))
    assert sim.kv_events is None and sim.state.engine.kv_events is None


@pytest.mark.parametrize(("engine", "raw", "field"), [
    pytest.param("vllm", '{"enable_kv_cache_events": true, "endpiont": "x"}', "endpiont",
                 id="vllm-misspelt"),
    pytest.param("sglang", '{"publisher": "zmq", "enable_kv_cache_events": true}',
                 "enable_kv_cache_events", id="sglang-has-no-enable"),
    pytest.param("sglang", '{"publisher": "kafka"}', "publisher", id="sglang-publisher"),
    pytest.param("vllm", '{"hwm": "lots"}', "hwm", id="vllm-hwm-type"),
])
def test_a_bad_kv_events_config_names_the_field(engine: str, raw: str, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        SimConfig(engine=engine, kv_events_config=raw)  # type: ignore[arg-type]
    text = str(err.value)
    assert "kv_events_config" in text and f"--kv-events-config: {field}:" in text


async def test_an_endpoint_it_cannot_bind_is_an_error_naming_it(engine: str,
                                                                tmp_path: Path) -> None:
    cfg = SimConfig(engine=engine, port=0,  # type: ignore[arg-type]
                    kv_events_config=config(engine, f"ipc://{tmp_path}/no/such/dir/kv.sock"))
    with pytest.raises(OSError, match=r"--kv-events-config endpoint: cannot bind"):
        async with running_sim(cfg):
            pass


async def test_a_full_queue_drops_the_oldest_and_counts_it(engine: str) -> None:
    dialect = get_adapter(engine).kv_events
    outcomes: list[str] = []

    class Counter:
        def on_batch(self, outcome: str) -> None:
            outcomes.append(outcome)

    async with subscriber(engine) as (sub, endpoint), AsyncExitStack() as stack:
        settings = dialect.parse_config(config(engine, endpoint, max_queue_size=2))
        pub = KvEventPublisher(dialect, settings, Counter(), batch_window_s=60)
        async with handshake(sub):
            await stack.enter_async_context(pub.running())
        async with asyncio.timeout(10):  # until the publisher has the subscription
            while not sub.batches:
                pub.emit(dialect.cleared_event())
                pub.flush()
                with contextlib.suppress(TimeoutError):
                    await sub.until(lambda bs: bool(bs), timeout_s=0.05)
        for i in range(3):  # three batches before the send task can run: one too many
            pub.emit(dialect.removed_event([i]))
            pub.flush()
        got = await sub.until(lambda bs: any(
            isinstance(e, BlockRemoved) and e.engine_hashes == (2,)
            for b in bs for e in b.events))
    removed = [b for b in got if any(isinstance(e, BlockRemoved) for e in b.events)]
    assert [b.events[0].engine_hashes for b in removed] == [(1,), (2,)]  # type: ignore[union-attr]
    probes = [b.seq for b in got if b.events == (AllBlocksCleared(),)]
    # The dropped batch leaves its sequence number unused: a gap the subscriber can see.
    assert [b.seq for b in removed] == [max(probes) + 2, max(probes) + 3]
    assert outcomes.count("dropped") == 1


async def test_batches_are_counted_on_metrics(start_sim: StartSim, engine: str) -> None:
    async with subscriber(engine) as (sub, endpoint):
        async with handshake(sub):
            sim = await start_sim(kv_events_config=config(engine, endpoint))
        await complete(sim, list(range(500, 532)), max_tokens=1)
        await sub.until(lambda bs: bool(stored_hashes(bs)))
        async with aiohttp.ClientSession() as http, http.get(sim.url + "/metrics") as resp:
            text = await resp.text()
    assert 'llmd_sim_kv_event_batches_total{outcome="published"}' in text


def real_salted(shared_dir: Path, engine: str) -> list[int]:
    """The hashes the real engine published for the same tokens salted "tenant-a"."""
    name = "vllm/frames.jsonl" if engine == "vllm" else "sglang/frames.jsonl"
    with open(shared_dir / "fixtures" / "kv-events" / name) as f:
        rec = [json.loads(line) for line in f][4]
    event = rec["decoded"][1][0]
    assert event["type"] == "BlockStored"
    return list(event["block_hashes"])


async def test_a_salted_prompt_has_its_own_blocks_and_the_engines_salted_hashes(
        start_sim: StartSim, engine: str, shared_dir: Path) -> None:
    _, block, real = REAL[engine]
    prompt = real_tokens(shared_dir, engine)
    async with subscriber(engine) as (sub, endpoint):
        async with handshake(sub):
            sim = await start_sim(block_size=block, max_model_len=1024,
                                  kv_events_config=config(engine, endpoint))
        await complete(sim, prompt, max_tokens=1)
        await sub.until(lambda bs: len(stored_hashes(bs)) >= 3)
        async with aiohttp.ClientSession() as http:
            body = {"model": "llmd-sim", "prompt": prompt, "max_tokens": block + 1,
                    "ignore_eos": True, "cache_salt": "tenant-a"}
            async with http.post(sim.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                usage = (await resp.json())["usage"]
            body["cache_salt"] = ""
            async with http.post(sim.url + "/v1/completions", json=body) as resp:
                assert resp.status == 400 and "cache_salt" in await resp.text()
        batches = await sub.until(lambda bs: len(stored_hashes(bs)) >= 7)
    assert (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) == 0
    salted = stored(batches)[1:]
    hashes = [h for e in salted for h in e.engine_hashes]
    assert hashes[:3] == real_salted(shared_dir, engine) and hashes[:3] != real
    assert all(e.cache_salt == "tenant-a" for e in salted[:1])
    if engine == "vllm":  # the salt is block 0's extra key only
        assert salted[0].extra_keys == (("tenant-a",), None, None)
        assert salted[-1].extra_keys == (None,) and salted[-1].cache_salt is None
    else:  # every page of a salted radix key names it
        assert all(e.cache_salt == "tenant-a" for e in salted)
    assert salted[-1].parent == hashes[2]  # the generated block chains on the salted prompt


def test_a_failing_recorder_stops_reporting_and_never_raises(engine: str) -> None:
    real = get_adapter(engine).kv_events

    class Broken:
        def digests(self, *args: Any, **kwargs: Any) -> list[bytes]:
            raise RuntimeError("boom")

        def event_hash(self, digest: bytes, salt: str | None = None) -> int:
            return 0

    class Dialect:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def hasher(self, *args: Any) -> Broken:
            return Broken()

    emitted: list[dict[str, Any]] = []

    class Sink:
        def emit(self, event: dict[str, Any]) -> None:
            emitted.append(event)

    settings = real.parse_config(config(engine, "tcp://127.0.0.1:1"))
    recorder = KvEventRecorder(Dialect(), settings, 4, Sink())  # type: ignore[arg-type]
    pool = BlockPool(8, 4)
    alloc = pool.allocate([1, 2], private=1)
    assert recorder.allocated([0] * 8, [1, 2], alloc) is None
    assert recorder.output_block(None, 3, [0] * 4, 2, pool.commit(3)) is None
    assert emitted == []
