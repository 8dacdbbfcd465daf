#!/usr/bin/env python3
"""P/D disaggregation on the simulators: `llmd up` (aggregated) against `llmd up --pd`.

Part 1, mixed workload (per engine): the same seeded mix of long and short completions
prompts (`--long-share` of them `--long-tokens` long, the rest `--short-tokens`; all unique,
`--output-tokens` each with `ignore_eos`, streamed) at the same Poisson rate through Envoy to

- `aggregated`: `LocalStack` with 2 simulators of the engine and the EPP's default config;
- `pd`: `LocalStack(pd=True)`: 1 prefill sim, 1 decode sim behind `llmd sidecar`, the EPP with
  the built-in P/D config, its decider threshold raised to `--non-cached-tokens` so that the
  short prompts stay on decode (where the engine's decode role can serve alone: vLLM; SGLang
  decode mode needs a prefill peer for every request).

Same process count (2 simulators), same latency settings (`--time-scale`, the simulators'
default latency model). TTFT and ITL percentiles come from the client (`llmd.bench` loadgen).

Part 2, the sidecar's own cost: zero-latency P/D stack, closed loop at `--concurrency` (64) of
short streaming completions, interleaved repeats:

- `direct`: straight to the decode sim (vLLM dialect: it serves a request without a prefill);
- `sidecar`: through the sidecar without `x-prefiller-host-port` (the pass-through path);
- `sidecar+pd`: through the sidecar with the header naming the prefill sim (both legs).

    .venv/bin/python bench/pd.py                 # print the tables
    .venv/bin/python bench/pd.py --write-docs    # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from llmd.bench import (
    BenchRequest,
    RandomParams,
    RequestResult,
    StageSummary,
    open_loop,
    percentile,
    random_prompts,
    send_one,
    summarize,
)
from llmd.bench.docs import machine, replace_section
from llmd.bench.runner import session
from llmd.engines import ENGINES, EngineName, get_adapter
from llmd.gateway import PD_EPP_CONFIG, LocalStack, StackSpec
from llmd.kvcache import load_tokenizer
from llmd.sidecar import PREFILLER_HEADER

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## P/D disaggregation"
MODEL = "llmd-sim"


def mixed_workload(args: argparse.Namespace, count: int) -> list[BenchRequest]:
    """`count` unique prompts, `long_share` of them long, shuffled with a fixed seed."""
    tok = load_tokenizer(None)

    def tokens(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    n_long = round(count * args.long_share)
    long = random_prompts(RandomParams(num_prompts=n_long, input_len=args.long_tokens,
                                       output_len=args.output_tokens, seed=1), tokens)
    short = random_prompts(RandomParams(num_prompts=count - n_long, input_len=args.short_tokens,
                                        output_len=args.output_tokens, seed=2), tokens)
    mix = list(long.requests) + list(short.requests)
    random.Random(3).shuffle(mix)
    return [replace(r, id=i) for i, r in enumerate(mix)]


def pd_config(non_cached_tokens: int) -> str:
    return PD_EPP_CONFIG.replace("nonCachedTokens: 16", f"nonCachedTokens: {non_cached_tokens}")


async def mixed(engine: EngineName, args: argparse.Namespace) -> list[tuple[str, StageSummary,
                                                                            StageSummary]]:
    """(mode, long-prompt summary, short-prompt summary) for aggregated and pd."""
    requests = mixed_workload(args, round(args.rate * args.duration_s))
    is_long = {r.id: r.prompt_tokens >= args.long_tokens // 2 for r in requests}
    specs = {
        "aggregated": StackSpec(engines=(engine, engine), model=MODEL,
                                time_scale=args.time_scale),
        "pd": StackSpec(engines=(engine,), model=MODEL, time_scale=args.time_scale, pd=True,
                        epp_config_text=pd_config(args.non_cached_tokens)),
    }
    rows = []
    for mode, spec in specs.items():
        async with LocalStack(spec) as stack, session() as http:
            warm = mixed_workload(args, 8)
            await open_loop(http, stack.url, MODEL, [replace(r, id=10_000 + r.id) for r in warm],
                            rate=args.rate, seed=99)
            results = await open_loop(http, stack.url, MODEL, requests, rate=args.rate, seed=7)
        failed = [r for r in results if r.error]
        if failed:
            print(f"{engine} {mode}: {len(failed)} errors, first: {failed[0].error}",
                  file=sys.stderr)
        rows.append((mode, summarize(mode, "long", args.rate,
                                     [r for r in results if is_long[r.id]]),
                     summarize(mode, "short", args.rate,
                               [r for r in results if not is_long[r.id]])))
    return rows


@dataclass(frozen=True, slots=True)
class Cell:
    engine: str
    path: str
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float


async def closed(http: aiohttp.ClientSession, url: str, reqs: Sequence[BenchRequest],
                 concurrency: int, headers: dict[str, str] | None) -> tuple[list[RequestResult],
                                                                              float]:
    queue = list(reversed(reqs))
    out: list[RequestResult] = []

    async def worker() -> None:
        while queue:
            out.append(await send_one(http, url, MODEL, queue.pop(), 60.0, headers))

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return out, time.perf_counter() - t0


async def sidecar_cost(engine: EngineName, args: argparse.Namespace) -> list[Cell]:
    spec = StackSpec(engines=(engine,), model=MODEL, time_scale=0, pd=True)
    reqs = [replace(r, id=i) for i, r in enumerate(random_prompts(
        RandomParams(num_prompts=args.concurrency * args.per_worker, input_len=64,
                     output_len=16, seed=5),
        lambda t: len(t.split())).requests)]
    async with LocalStack(spec) as stack, session() as http:
        decode, sidecar = stack.decode[0].url, stack.endpoints[0].url
        prefill = {PREFILLER_HEADER: stack.prefill[0].address}
        paths: dict[str, tuple[str, dict[str, str] | None]] = {
            "sidecar": (sidecar, None), "sidecar+pd": (sidecar, prefill)}
        if get_adapter(engine).pd.decode_alone:
            paths = {"direct": (decode, None), **paths}
        else:  # SGLang decode mode: every request needs its prefill peer
            paths = {"sidecar+pd": paths["sidecar+pd"]}
        lat: dict[str, list[float]] = {p: [] for p in paths}
        rates: dict[str, list[float]] = {p: [] for p in paths}
        errors = dict.fromkeys(paths, 0)
        for url, headers in paths.values():  # warm-up: connections, code paths
            await closed(http, url, reqs[: args.concurrency * 2], args.concurrency, headers)
        for _ in range(args.repeats):
            for p, (url, headers) in paths.items():
                results, wall = await closed(http, url, reqs, args.concurrency, headers)
                ok = [r.e2e_s for r in results if r.error is None]
                errors[p] += len(results) - len(ok)
                lat[p].extend(ok)
                rates[p].append(len(ok) / wall)
    return [Cell(engine, p, len(reqs) * args.repeats, errors[p],
                 (percentile(lat[p], 50) or 0) * 1000, (percentile(lat[p], 99) or 0) * 1000,
                 statistics.median(rates[p])) for p in paths]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def mixed_table(rows: dict[str, list[tuple[str, StageSummary, StageSummary]]]) -> str:
    head = ("| engine | mode | prompts | requests | errors | TTFT p50 ms | TTFT p90 ms | "
            "TTFT p99 ms | ITL p50 ms | ITL p90 ms | ITL p99 ms |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for engine, modes in rows.items():
        for mode, long, short in modes:
            for kind, s in (("long", long), ("short", short)):
                lines.append(f"| {engine} | {mode} | {kind} | {s.requests} | {s.errors} | "
                             f"{_ms(s.ttft_p50_s)} | {_ms(s.ttft_p90_s)} | {_ms(s.ttft_p99_s)} | "
                             f"{_ms(s.itl_p50_s)} | {_ms(s.itl_p90_s)} | {_ms(s.itl_p99_s)} |")
    return head + "\n".join(lines) + "\n"


def cost_table(cells: list[Cell]) -> str:
    head = ("| engine | path | requests | errors | p50 ms | p99 ms | req/s | added p50 ms |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for c in cells:
        base = next((d for d in cells if d.engine == c.engine and d.path == "direct"), None)
        added = "-" if base is None or c is base else f"{c.p50_ms - base.p50_ms:+.1f}"
        lines.append(f"| {c.engine} | {c.path} | {c.requests} | {c.errors} | {c.p50_ms:.1f} | "
                     f"{c.p99_ms:.1f} | {c.requests_per_s:.0f} | {added} |")
    return head + "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> tuple[str, str]:
    engines: list[EngineName] = [e for e in ENGINES if e in args.engines.split(",")]
    rows = {e: await mixed(e, args) for e in engines}
    cells = [c for e in engines for c in await sidecar_cost(e, args)]
    return mixed_table(rows), cost_table(cells)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="vllm,sglang")
    ap.add_argument("--rate", type=float, default=8.0, help="Poisson req/s, both modes")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--long-share", type=float, default=0.25)
    ap.add_argument("--long-tokens", type=int, default=2048)
    ap.add_argument("--short-tokens", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=64)
    ap.add_argument("--non-cached-tokens", type=int, default=256,
                    help="P/D decider threshold (EPP estimate: characters / 4)")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--per-worker", type=int, default=20, help="part 2: requests per worker")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    return ap.parse_args()


if __name__ == "__main__":
    args = parse()
    import uvloop

    mixed_md, cost_md = uvloop.run(main(args))
    print(mixed_md)
    print(cost_md)
    if args.write_docs:
        command = "bench/pd.py " + " ".join(sys.argv[1:]).replace("--write-docs", "").strip()
        notes = (ROOT / "bench" / "pd_notes.md").read_text()
        replace_section(DOCS, SECTION, notes.format(
            command=command.strip(), machine=machine(), mixed=mixed_md, cost=cost_md,
            args=args))
        print(f"wrote {DOCS}: {SECTION}")
