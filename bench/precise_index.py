#!/usr/bin/env python3
"""What precise prefix-cache routing costs the EPP: decision latency, event ingestion, memory.

(a) **Decision latency.** A `LocalStack` of zero-latency simulators (two vLLM- and two
    SGLang-dialect, the tiny-llama tokenizer, KV events on when the config needs them) with
    `llmd epp` on the precise config (`llmd.bench.systems.precise_config`: llm-d's default
    weights, `precise-prefix-cache-producer` feeding the prefix scorer) and, as the baseline
    measured in the same run, on llm-d's default config (approximate prefix index). Each
    group's prefix is first sent through the gateway (so the simulators hold it and the precise
    index learns it from their events); then the EPP's ext_proc port is driven directly, as
    Envoy drives it (request headers, then the whole body, BUFFERED), with new prompts of the
    same groups at concurrency 1 and 64. Latency is the client's, from opening the stream to the
    routing answer (gRPC and the Python client included); "EPP mean" is the EPP's own
    `llmd_epp_decision_duration_seconds` sum / count over the same requests (parse, tokenize,
    match, score, pick; no gRPC). Prompts: shared-prefix prompts of about 1k and 8k tokens.
(b) **Event ingestion on one core.** Real msgpack frames, built with the engine adapters'
    `kv_events` dialect helpers (the simulators' own event builders) in a steady state of the
    shared-prefix workload: every batch stores one request's new blocks (chained on a resident
    prefix) and removes as many old ones. `decode+index`: `kvcache.decode_message` and
    `PrefixIndex.stored/removed` in a loop (what one event costs the index). `follower`: the
    EPP's `KvEventsFollower` subscribed over ipc to a publisher in another process, until it
    has applied every batch (ZMQ receive, decode, index, metrics). Events are the engine's
    (`BlockStored`, `BlockRemoved`); blocks are the blocks they carry.
(c) **Memory per million blocks** in `PrefixIndex`: tracemalloc's traced-memory delta after
    indexing 1M engine blocks of 16 tokens (chains of 64 blocks, one endpoint, one tier), and the
    same with every block held by 4 endpoints.

    .venv/bin/python bench/precise_index.py                 # everything (about 3 minutes)
    .venv/bin/python bench/precise_index.py --only ingest   # or: latency, memory
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The stacks' children are forked while this process holds gRPC channels: no fork handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import aiohttp
import grpc
import msgpack
import zmq
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from llmd.bench.output import build_workload
from llmd.bench.systems import precise_config
from llmd.engines import EndpointMetrics, get_adapter
from llmd.epp import Datastore, Director, EndpointSpec, load_config, parse_endpoint_flag
from llmd.epp.kv_events import KV_EVENTS_LABEL, KvEventsFollower, SubscribeSettings
from llmd.epp.plugins import PrecisePrefixCacheProducer
from llmd.gateway import LocalStack, StackSpec
from llmd.kvcache import PrefixIndex, chain_root, decode_message

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = str((ROOT.parent / "shared" / "fixtures" / "tiny-llama").resolve())
MODEL = "llmd-sim"
BLOCK = 16


# ---- (a) decision latency --------------------------------------------------------------------

@dataclass
class LatencyRow:
    config: str
    prompt_tokens: int
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    epp_mean_ms: float
    errors: int


def _prompts(prefix_tokens: int, groups: int, per_group: int) -> tuple[list[str], list[str]]:
    """(one prompt per group, to warm the caches with; the others, interleaved)."""
    wl = build_workload("shared-prefix", TOKENIZER, {
        "num_groups": groups, "num_prompts_per_group": per_group,
        "system_prompt_len": prefix_tokens, "question_len": 64, "output_len": 1, "seed": 7})
    firsts: dict[int | None, str] = {}
    rest = []
    for r in wl.requests:
        if r.group in firsts:
            rest.append(r.prompt or "")
        else:
            firsts[r.group] = r.prompt or ""
    return list(firsts.values()), rest


def _headers() -> pb.ProcessingRequest:
    headers = base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=b"/v1/completions"),
        base_pb2.HeaderValue(key=":method", raw_value=b"POST"),
        base_pb2.HeaderValue(key="content-type", raw_value=b"application/json")])
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=headers),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=mode_pb2.ProcessingMode.BUFFERED))


async def _decide(stub: Any, body: bytes) -> tuple[float, bool]:
    """One ext_proc exchange as Envoy's BUFFERED mode does it: (seconds, routed)."""
    started = time.perf_counter()
    call = stub.Process()
    await call.write(_headers())
    await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=body,
                                                                   end_of_stream=True)))
    routed = False
    async for resp in call:
        if resp.WhichOneof("response") == "request_body":
            mutation = resp.request_body.response.header_mutation.set_headers
            routed = any(h.header.key == "x-gateway-destination-endpoint" for h in mutation)
            break
        if resp.WhichOneof("response") == "immediate_response":
            break
    elapsed = time.perf_counter() - started
    await call.done_writing()
    call.cancel()
    return elapsed, routed


async def _epp_decisions(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the EPP's decision-duration histogram."""
    async with http.get(url) as resp:
        text = await resp.text()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("llmd_epp_decision_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("llmd_epp_decision_duration_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


async def _drive(stub: Any, http: aiohttp.ClientSession, metrics_url: str,
                 bodies: Sequence[bytes], concurrency: int) -> tuple[list[float], int, float]:
    before = await _epp_decisions(http, metrics_url)
    queue = list(reversed(bodies))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while queue:
            elapsed, routed = await _decide(stub, queue.pop())
            latencies.append(elapsed)
            errors += not routed

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    after = await _epp_decisions(http, metrics_url)
    n = after[1] - before[1]
    return latencies, errors, (after[0] - before[0]) / n if n else float("nan")


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _warm(http: aiohttp.ClientSession, url: str, prompts: Sequence[str]) -> None:
    for prompt in prompts:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
        async with http.post(url + "/v1/completions", json=body) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"warm-up request answered {resp.status}")


async def latency(requests_c1: int, requests_c64: int) -> list[LatencyRow]:
    configs = {"default (approximate)": None, "precise": precise_config(TOKENIZER, BLOCK)}
    sizes = {1024: _prompts(1024, 8, 1 + requests_c64 // 8),
             8192: _prompts(8192, 4, 1 + requests_c64 // 4)}
    rows: list[LatencyRow] = []
    sim_args = ("--tokenizer", TOKENIZER, "--max-model-len", "16384", "--kv-cache-blocks",
                "16384", "--block-size", str(BLOCK))
    for name, text in configs.items():
        spec = StackSpec(time_scale=0.0, sim_args=sim_args, epp_config_text=text)
        async with LocalStack(spec) as stack, aiohttp.ClientSession() as http:
            assert stack.epp is not None
            async with grpc.aio.insecure_channel(stack.epp.address) as channel:
                stub = pb_grpc.ExternalProcessorStub(channel)
                for tokens, (firsts, others) in sizes.items():
                    await _warm(http, stack.url, firsts)
                    await asyncio.sleep(1.0)  # the simulators' events reach the index
                    rest = [json.dumps({"model": MODEL, "prompt": p, "max_tokens": 16}).encode()
                            for p in others]
                    await _drive(stub, http, stack.epp.metrics_url, rest[:50], 1)  # warm-up
                    for conc, count in ((1, requests_c1), (64, requests_c64)):
                        bodies = (rest * (1 + count // len(rest)))[:count]
                        lat, errors, epp_mean = await _drive(stub, http, stack.epp.metrics_url,
                                                             bodies, conc)
                        rows.append(LatencyRow(name, tokens, conc, len(lat),
                                               _pct(lat, 0.5) * 1e3, _pct(lat, 0.99) * 1e3,
                                               epp_mean * 1e3, errors))
                        print(f"  {name} {tokens} tokens c={conc}: p50 "
                              f"{rows[-1].p50_ms:.2f} ms, p99 {rows[-1].p99_ms:.2f} ms, "
                              f"EPP mean {rows[-1].epp_mean_ms:.2f} ms", flush=True)
    return rows


def in_process(requests: int) -> list[LatencyRow]:
    """`Director.decide` + `after_decision` called in this process, one request at a time
    (concurrency 1: the EPP decides one request at a time on its event loop anyway), over 4
    healthy endpoints. The precise index holds each group's prefix on one endpoint, stored
    as its simulator would announce it; the approximate one learned it from routing."""
    rows = []
    specs = [parse_endpoint_flag(f"10.0.0.1:{8000 + i},engine={'vllm' if i < 2 else 'sglang'}")
             for i in range(4)]
    for name, text in (("default (approximate)", None),
                       ("precise", precise_config(TOKENIZER, BLOCK))):
        for tokens, groups in ((1024, 8), (8192, 4)):
            store = Datastore()
            store.set_endpoints(specs)
            for spec in specs:
                store.update_metrics(spec.id, EndpointMetrics())
            config = load_config(text=text)
            director = Director(store, config)
            firsts, others = _prompts(tokens, groups, 1 + requests // groups)
            hashes = iter(range(1, 1 << 62))
            for g, prompt in enumerate(firsts):
                for producer in config.background:  # the precise producer: its index
                    assert isinstance(producer, PrecisePrefixCacheProducer)
                    ids = producer.prompts.completion_ids(prompt)
                    n = len(ids) // BLOCK
                    producer.index.stored(specs[g % 4].id, [next(hashes) for _ in range(n)],
                                          None, ids[:n * BLOCK], BLOCK, chain_root(MODEL))
                body = json.dumps({"model": MODEL, "prompt": prompt}).encode()
                director.after_decision(director.decide("w", "/v1/completions", {}, body))
            bodies = [json.dumps({"model": MODEL, "prompt": p, "max_tokens": 16}).encode()
                      for p in others][:requests]
            lat = []
            for i, body in enumerate(bodies):
                started = time.perf_counter()
                decision = director.decide(str(i), "/v1/completions", {}, body)
                director.after_decision(decision)
                lat.append(time.perf_counter() - started)
            rows.append(LatencyRow(name, tokens, 1, len(lat), _pct(lat, 0.5) * 1e3,
                                   _pct(lat, 0.99) * 1e3, statistics.fmean(lat) * 1e3, 0))
            print(f"  in process: {name} {tokens} tokens: p50 {rows[-1].p50_ms:.3f} ms, "
                  f"p99 {rows[-1].p99_ms:.3f} ms", flush=True)
    return rows


# ---- (b) event ingestion ---------------------------------------------------------------------

@dataclass
class IngestRow:
    engine: str
    path: str
    batches: int
    events: int
    blocks: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.seconds


def build_frames(engine: str, batches: int, *, prefix_blocks: int = 64, new_blocks: int = 4,
                 topic: str = f"kv@bench@{MODEL}") -> tuple[list[list[bytes]], int, int]:
    """A steady state of the shared-prefix workload in `engine`'s dialect: a first batch stores
    a 64-block prefix, then every batch removes the oldest request's `new_blocks` blocks (once
    there are 8 requests' worth) and stores one request's `new_blocks` new blocks chained on the
    prefix. Returns (frames per batch, events, blocks)."""
    dialect = get_adapter(engine).kv_events
    hasher = dialect.hasher(dialect.parse_config(dialect.serve_config("ipc:///x", topic)))
    tok = 3
    prefix_tokens = [tok + i % 500 for i in range(prefix_blocks * BLOCK)]
    digests = hasher.digests(prefix_tokens, BLOCK)
    prefix_hashes = [hasher.event_hash(d) for d in digests]
    frames: list[list[bytes]] = []
    events = blocks = 0

    def add(evs: list[dict[str, Any]]) -> None:
        payload = msgpack.packb(dialect.batch(time.time(), evs))
        frames.append([topic.encode(), len(frames).to_bytes(8, "big"), payload])

    add([dialect.stored_event(prefix_hashes, None, prefix_tokens, BLOCK)])
    events, blocks = 1, prefix_blocks
    live: list[list[int]] = []
    for n in range(batches - 1):
        tokens = [600 + (n * 7 + i) % 1400 for i in range(new_blocks * BLOCK)]
        new = [hasher.event_hash(d) for d in hasher.digests(tokens, BLOCK, digests[-1])]
        evs = []
        if len(live) >= 8:
            old = live.pop(0)
            evs.append(dialect.removed_event(old))
            blocks += len(old)
        evs.append(dialect.stored_event(new, prefix_hashes[-1], tokens, BLOCK))
        live.append(new)
        events += len(evs)
        blocks += len(new)
        add(evs)
    return frames, events, blocks


def ingest_decode_index(engine: str, frames: Sequence[Sequence[bytes]], events: int,
                        blocks: int) -> IngestRow:
    """decode_message + PrefixIndex.stored/removed for every frame (one core, no sockets)."""
    from llmd.kvcache import BlockRemoved, BlockStored

    dialect = get_adapter(engine).kv_events
    index = PrefixIndex(BLOCK)
    root = chain_root(MODEL)
    gc.collect()
    started = time.perf_counter()
    for msg in frames:
        batch = decode_message(msg, dialect)
        for event in batch.events:
            if isinstance(event, BlockStored):
                index.stored("ep", event.engine_hashes, event.parent, event.token_ids,
                             event.block_size, root, event.medium or dialect.medium)
            elif isinstance(event, BlockRemoved):
                index.removed("ep", event.engine_hashes, event.medium or dialect.medium)
    elapsed = time.perf_counter() - started
    assert not index.stats.skipped, index.stats.skipped
    return IngestRow(engine, "decode+index", len(frames), events, blocks, elapsed)


def _publish(url: str, engine: str, batches: int, ready: Any, go: Any) -> None:
    """Publisher process: binds `url`, sends every frame as fast as ZMQ takes them."""
    frames, _, _ = build_frames(engine, batches)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # never drop: the subscriber's pace sets the rate
    sock.setsockopt(zmq.LINGER, 10_000)
    sock.bind(url)
    ready.set()
    go.wait()
    for msg in frames:
        sock.send_multipart(msg)
    sock.close()
    ctx.term()


async def ingest_follower(engine: str, batches: int) -> IngestRow:
    """The EPP's KvEventsFollower over ipc, fed by a publisher process."""
    _, events, blocks = build_frames(engine, batches)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"ipc://{tmp}/kv"
        mp = multiprocessing.get_context("spawn")
        ready, go = mp.Event(), mp.Event()
        proc = mp.Process(target=_publish, args=(url, engine, batches, ready, go))
        proc.start()
        await asyncio.to_thread(ready.wait, 60)
        store = Datastore()
        store.set_endpoints([EndpointSpec("127.0.0.1", 8000, {
            "llm-d.ai/engine-type": engine, "llm-d.ai/model": MODEL, KV_EVENTS_LABEL: url})])
        applied = 0
        done = asyncio.Event()
        first = last = 0.0

        def on_applied(_: str) -> None:
            nonlocal applied, first, last
            applied += 1
            last = time.perf_counter()
            if applied == 1:
                first = last
            if applied == batches:
                done.set()

        follower = KvEventsFollower(PrefixIndex(BLOCK),
                                    SubscribeSettings(poll_s=0.05), on_applied=on_applied)
        stop = asyncio.Event()
        task = asyncio.create_task(follower.run(store, stop))
        await asyncio.sleep(0.5)  # subscribed (ZMQ's slow joiner)
        go.set()
        try:
            await asyncio.wait_for(done.wait(), timeout=300)
        finally:
            stop.set()
            await task
            await asyncio.to_thread(proc.join, 30)
        skipped = follower.index.stats.skipped
        assert not skipped, skipped
    # the first batch only starts the clock: count what came after it
    return IngestRow(engine, "follower (ZMQ ipc)", batches - 1, events - 1,
                     blocks - 64, last - first)


# ---- (c) memory ------------------------------------------------------------------------------

@dataclass
class MemoryRow:
    layout: str
    blocks: int
    mib: float

    @property
    def mib_per_million(self) -> float:
        return self.mib / (self.blocks / 1e6)


def memory(total_blocks: int = 1_000_000, endpoints: int = 1) -> MemoryRow:
    """tracemalloc delta of a PrefixIndex holding `total_blocks` engine blocks in chains of 64
    (each chain rooted in its own prompt), copied on `endpoints` endpoints."""
    chain = 64
    tokens_per_chain = chain * BLOCK
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(BLOCK, max_blocks_per_endpoint=total_blocks + 1)
    root = chain_root(MODEL)
    hashes = iter(range(1, 1 << 62))
    per_ep = total_blocks // endpoints
    for ep in range(endpoints):
        for c in range(per_ep // chain):
            tokens = [(c * 31 + i) % 32000 for i in range(tokens_per_chain)]
            index.stored(f"ep{ep}", [next(hashes) for _ in range(chain)], None, tokens, BLOCK,
                         root)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    held = sum(index.blocks(f"ep{e}") for e in range(endpoints))
    del index
    return MemoryRow(f"{endpoints} endpoint(s)", held, used / 2**20)


# ---- main ------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("latency", "ingest", "memory"))
    ap.add_argument("--requests-c1", type=int, default=400)
    ap.add_argument("--requests-c64", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=20_000)
    args = ap.parse_args()
    if args.only in (None, "latency"):
        print("(a) decision latency in process (Director.decide + after_decision)", flush=True)
        own = in_process(args.requests_c1)
        print("\n| config | prompt | requests | p50 ms | p99 ms | mean ms | p50 vs default |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
        for r in own:
            b = next(x for x in own if x.prompt_tokens == r.prompt_tokens
                     and x.config.startswith("default"))
            print(f"| {r.config} | {r.prompt_tokens // 1024}k tokens | {r.requests} | "
                  f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.epp_mean_ms:.3f} | "
                  f"{r.p50_ms / b.p50_ms:.2f}x |")
        print("\n(a) decision latency through the EPP's ext_proc", flush=True)
        rows = asyncio.run(latency(args.requests_c1, args.requests_c64))
        base = {(r.prompt_tokens, r.concurrency): r for r in rows
                if r.config.startswith("default")}
        print("\n| config | prompt | concurrency | requests | p50 ms | p99 ms | EPP mean ms "
              "| p50 vs default | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            b = base[(r.prompt_tokens, r.concurrency)]
            print(f"| {r.config} | {r.prompt_tokens // 1024}k tokens | {r.concurrency} | "
                  f"{r.requests} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.epp_mean_ms:.2f} | "
                  f"{r.p50_ms / b.p50_ms:.2f}x | {r.errors} |")
    if args.only in (None, "ingest"):
        print("\n(b) KV-event ingestion on one core", flush=True)
        rows_b: list[IngestRow] = []
        for engine in ("vllm", "sglang"):
            frames, events, blocks = build_frames(engine, args.batches)
            rows_b.append(ingest_decode_index(engine, frames, events, blocks))
            rows_b.append(asyncio.run(ingest_follower(engine, args.batches)))
        print("\n| dialect | path | batches | events | blocks | events/s | blocks/s |\n"
              "|---|---|---:|---:|---:|---:|---:|")
        for ing in rows_b:
            print(f"| {ing.engine} | {ing.path} | {ing.batches} | {ing.events} | {ing.blocks} | "
                  f"{ing.events_per_s:,.0f} | {ing.blocks_per_s:,.0f} |")
    if args.only in (None, "memory"):
        print("\n(c) PrefixIndex memory", flush=True)
        rows_c = [memory(1_000_000, 1), memory(1_000_000, 4)]
        print("\n| layout | engine blocks | traced MiB | MiB per million blocks |\n"
              "|---|---:|---:|---:|")
        for mem in rows_c:
            print(f"| {mem.layout} | {mem.blocks:,} | {mem.mib:.0f} | "
                  f"{mem.mib_per_million:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
