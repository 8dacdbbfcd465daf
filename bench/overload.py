#!/usr/bin/env python3
"""Bursts of concurrent streams through the gateway: does routing hold, shed or fail closed?

Starts a fresh `LocalStack` (four simulators, 2 vLLM + 2 SGLang dialect, default latency
model, the llmd EPP in BUFFERED ext_proc mode behind Envoy) per stage and opens N streaming
`/v1/completions` at once (one connection each, aiohttp), then waits for every stream to end.
The simulators' own queues are raised (`--sim-max-waiting`, `--sim-max-num-seqs`) so that
every error seen is the routing layer's. Each answer is classified by status, headers and body:

- `ok`: 200 and the stream ended with `data: [DONE]`;
- `shed 429 (epp)`: the EPP's 429 (no `x-llmd-served-by`: the request never reached a
  simulator), with or without `Retry-After`;
- `429 (sim)`: a simulator's queue was full (it carries `x-llmd-served-by`);
- `503 failclose`: Envoy's FailClose route: no decision from the EPP (what issue 12 is about);
- anything else: status and the error `type` of the body, or the client exception.

For each stage it also prints the deltas of Envoy's ext_proc and `epp` cluster stats (admin
`/stats`: `streams_failed`, `message_timeouts`, `failure_mode_allowed`, ...), the EPP's
`llmd_epp_decisions_total` outcomes (`routed`, `overloaded`, ...), the peak of its undecided
streams (`llmd_epp_extproc_pending_streams`, polled), and the CPU seconds of the client, Envoy,
the EPP and the simulators over the stage. The table at the end is docs/benchmarks.md's
"Overload" section.

    .venv/bin/python bench/overload.py                           # 1000, 1500, 2000 streams
    .venv/bin/python bench/overload.py --streams 1000,1500,2000 --repeats 3
    .venv/bin/python bench/overload.py --streams 8000 --epp-args=--max-wait-s=4
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from llmd.bench.procstat import cpu_seconds
from llmd.gateway import LocalStack, StackSpec

SERVED_BY = "x-llmd-served-by"
STAT_FILTER = r"(http\.gateway\.ext_proc\.|cluster\.epp\.(upstream_(rq|cx)_|http2\.))"
EPP_OUTCOME = re.compile(r'^llmd_epp_decisions_total\{endpoint="[^"]*",outcome="(\w+)"\} (\S+)',
                         re.M)
EPP_PENDING = re.compile(r"^llmd_epp_extproc_pending_streams (\S+)", re.M)


@dataclass
class Stage:
    streams: int
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    retry_after: collections.Counter[str] = field(default_factory=collections.Counter)
    envoy: dict[str, float] = field(default_factory=dict)
    epp: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_max_ms: float = 0.0
    failed_at_s: list[float] = field(default_factory=list)
    peak_pending: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k != "ok")


async def one_stream(session: aiohttp.ClientSession, url: str, i: int, max_tokens: int,
                     stage: Stage, ttfts: list[float]) -> None:
    body = {"model": "llmd-sim", "prompt": f"request {i}: tell me a story about overload",
            "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    started = time.monotonic()
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status == 200:
                tail = b""
                first = True
                async for chunk in resp.content.iter_any():
                    if first:
                        ttfts.append(time.monotonic() - started)
                        first = False
                    tail = (tail + chunk)[-64:]
                stage.outcomes["ok" if b"data: [DONE]" in tail else "200 truncated"] += 1
                return
            text = await resp.text()
            stage.outcomes[classify(resp.status, resp.headers, text)] += 1
            stage.failed_at_s.append(time.monotonic() - started)
            if resp.status == 429:
                stage.retry_after[resp.headers.get("retry-after", "none")] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        stage.outcomes[f"client {type(exc).__name__}"] += 1


def classify(status: int, headers: Mapping[str, str], text: str) -> str:
    if status == 429:
        return "429 (sim)" if SERVED_BY in headers else "shed 429 (epp)"
    if status == 503 and "fails closed" in text:
        return "503 failclose"
    try:
        kind = json.loads(text)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        kind = text[:60]
    return f"{status} {kind}"


async def read_stats(session: aiohttp.ClientSession, admin: str) -> dict[str, float]:
    """Envoy's counters and gauges matching STAT_FILTER (histograms are left out)."""
    async with session.get(f"{admin}/stats", params={"filter": STAT_FILTER}) as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            out[name] = float(value)
    return out


async def read_epp(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url) as resp:
        text = await resp.text()
    out: dict[str, float] = collections.defaultdict(float)
    for outcome, value in EPP_OUTCOME.findall(text):
        out[outcome] += float(value)
    return dict(out)


async def watch_pending(session: aiohttp.ClientSession, url: str, stage: Stage,
                        stop: asyncio.Event) -> None:
    """The peak of the EPP's undecided ext_proc streams, polled every 100 ms (0 if the EPP
    does not export the gauge)."""
    while not stop.is_set():
        try:
            async with session.get(url) as resp:
                found = EPP_PENDING.search(await resp.text())
            if found:
                stage.peak_pending = max(stage.peak_pending, int(float(found.group(1))))
        except (aiohttp.ClientError, TimeoutError):
            pass  # the EPP is busy: the next poll will do
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


async def run_stage(args: argparse.Namespace, streams: int) -> Stage:
    spec = StackSpec(gateway_port=0, base_port=0, time_scale=args.time_scale,
                     sim_args=("--max-waiting", str(args.sim_max_waiting),
                               "--max-num-seqs", str(args.sim_max_num_seqs)),
                     epp_args=tuple(args.epp_args), envoy_concurrency=args.envoy_concurrency)
    stage = Stage(streams)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s, sock_connect=30)
    async with LocalStack(spec) as stack, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as admin:
        assert stack.gateway is not None and stack.epp is not None
        envoy0 = await read_stats(admin, stack.gateway.admin_url)
        epp0 = await read_epp(admin, stack.epp.metrics_url)
        ttfts: list[float] = []
        groups: dict[str, list[int]] = {"envoy": [], "epp": [], "sims": []}
        for child in stack.children:
            name = child.spec.name
            groups["sims" if name.startswith("sim") else name].append(child.proc.pid)
        cpu0 = {k: cpu_seconds(pids) for k, pids in groups.items()}
        client0 = time.process_time()  # this process only (its children are the stack)
        started = time.monotonic()
        done = asyncio.Event()
        async with asyncio.TaskGroup() as watch:
            watch.create_task(watch_pending(admin, stack.epp.metrics_url, stage, done),
                              name="watch-pending")
            async with asyncio.TaskGroup() as tg:
                for i in range(streams):
                    tg.create_task(one_stream(session, stack.url, i, args.max_tokens, stage,
                                              ttfts), name=f"stream-{i}")
            done.set()
        stage.seconds = time.monotonic() - started
        stage.cpu_s = {"client": time.process_time() - client0,
                       **{k: cpu_seconds(pids) - cpu0[k] for k, pids in groups.items()}}
        stage.envoy = delta(await read_stats(admin, stack.gateway.admin_url), envoy0)
        stage.epp = delta(await read_epp(admin, stack.epp.metrics_url), epp0)
        if ttfts:
            ttfts.sort()
            stage.ttft_p50_ms = ttfts[len(ttfts) // 2] * 1000
            stage.ttft_max_ms = ttfts[-1] * 1000
        if args.show_logs:
            for child in stack.children:
                if child.spec.name in ("envoy", "epp") and child.tail:
                    print(f"--- {child.spec.name} (last lines)", file=sys.stderr)
                    for line in list(child.tail)[-args.show_logs:]:
                        print("   ", line[:300], file=sys.stderr)
    return stage


def report(stage: Stage) -> None:
    print(f"\n== {stage.streams} streams: {stage.errors} errors in {stage.seconds:.1f} s; "
          f"TTFT p50 {stage.ttft_p50_ms:.0f} ms, max {stage.ttft_max_ms:.0f} ms")
    for outcome, n in stage.outcomes.most_common():
        print(f"   {n:6d}  {outcome}")
    print("   CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in stage.cpu_s.items()))
    if stage.failed_at_s:
        failed = sorted(stage.failed_at_s)
        print(f"   errors answered after {failed[0]:.2f}-{failed[-1]:.2f} s "
              f"(median {failed[len(failed) // 2]:.2f} s)")
    if stage.retry_after:
        print(f"   Retry-After on 429s: {dict(stage.retry_after)}")
    print(f"   EPP: {json.dumps(stage.epp)}; peak undecided streams {stage.peak_pending}")
    print("   Envoy (delta):")
    for k, v in sorted(stage.envoy.items()):
        if not k.endswith(("_active", "_bytes", "_total_bytes")) or "rq_active" in k:
            print(f"      {k}: {v:.0f}")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1000,1500,2000",
                        help="comma-separated burst sizes, one stage each")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--sim-max-waiting", type=int, default=4096)
    parser.add_argument("--sim-max-num-seqs", type=int, default=256)
    parser.add_argument("--envoy-concurrency", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--epp-args", action="append", default=[],
                        help="extra `llmd epp` flag (repeatable, e.g. "
                             "--epp-args=--max-pending-streams=64)")
    parser.add_argument("--show-logs", type=int, default=0, metavar="N",
                        help="print the last N lines of Envoy's and the EPP's output per stage")
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for n in (int(s) for s in args.streams.split(",")):
            stage = await run_stage(args, n)
            report(stage)
            rows.append(stage)
    print("\n| streams | ok | errors | what failed | TTFT p50 ms | TTFT max ms | wall s |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    for s in rows:
        failed = ", ".join(f"{n} {k}" for k, n in s.outcomes.most_common() if k != "ok") or "-"
        print(f"| {s.streams} | {s.outcomes['ok']} | {s.errors} | {failed} | "
              f"{s.ttft_p50_ms:.0f} | {s.ttft_max_ms:.0f} | {s.seconds:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
