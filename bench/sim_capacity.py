#!/usr/bin/env python3
"""How many concurrent streaming requests one `llmd sim` process holds, per dialect.

Starts one simulator process per dialect at zero latency (`--time-scale 0`), drives it with a
closed loop of streaming completions at each concurrency (100 and 500 by default), and reports
requests/s, client-side latency, the simulator's CPU per 1,000 requests and its event-loop lag
(`llmd_sim_event_loop_lag_seconds`, a 100 ms timer's lateness inside the simulator). A `hold`
stage then keeps 500 slow streams open at once (time scale 1) and checks, through the engine
adapter, that the simulator reports all of them running.

    .venv/bin/python bench/sim_capacity.py                 # print the table
    .venv/bin/python bench/sim_capacity.py --write-docs    # also update docs/benchmarks.md

The load generator runs in this process on the same machine, so the numbers are a lower bound
on what the simulator alone could do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from llmd._proc import stop_process
from llmd.bench.stats import percentile
from llmd.bench.workload import BenchRequest
from llmd.engines import MetricsPage, get_adapter
from llmd.kvcache import BuiltinTokenizer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Simulator capacity"
LAG = "llmd_sim_event_loop_lag_seconds"
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


@dataclass
class Row:
    engine: str
    stage: str
    concurrency: int
    ok: int
    errors: int
    rps: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    e2e_p99_ms: float | None
    lag_mean_ms: float | None
    lag_p99_ms: str
    cpu_s_per_1k: float | None
    max_running: int


def _requests(n: int, prompt_tokens: int, max_tokens: int, seed: int) -> list[BenchRequest]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(f"{rng.choice(WORDS)}{rng.randrange(10_000)}"
                         for _ in range(prompt_tokens))
        out.append(BenchRequest(id=i, max_tokens=max_tokens, prompt_tokens=prompt_tokens,
                                prompt=words))
    return out


@dataclass(frozen=True, slots=True)
class _Result:
    ttft_s: float | None
    e2e_s: float
    error: str | None = None


async def _send(http: aiohttp.ClientSession, url: str, body: bytes) -> _Result:
    """One streaming request, read as cheaply as possible: the time of the first bytes, and
    whether the stream ended with `data: [DONE]` (no per-chunk JSON parsing, so the client
    costs less CPU than the simulator and the simulator is what is measured)."""
    start = time.perf_counter()
    first = None
    tail = b""
    try:
        async with http.post(url, data=body, headers=_JSON) as resp:
            if resp.status != 200:
                return _Result(None, time.perf_counter() - start, f"HTTP {resp.status}")
            async for piece in resp.content.iter_any():
                if first is None:
                    first = time.perf_counter() - start
                tail = (tail + piece)[-32:]
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _Result(None, time.perf_counter() - start, type(exc).__name__)
    if not tail.endswith(b"data: [DONE]\n\n"):
        return _Result(first, time.perf_counter() - start, "stream did not end with [DONE]")
    return _Result(first, time.perf_counter() - start)


_JSON = {"Content-Type": "application/json"}


async def closed_loop(http: aiohttp.ClientSession, base: str, model: str,
                      requests: list[BenchRequest], concurrency: int) -> list[_Result]:
    """`concurrency` workers, each sending its next request as soon as the last one ends."""
    url = base + "/v1/completions"
    bodies = [json.dumps(r.body(model)).encode() for r in requests]
    bodies.reverse()
    results: list[_Result] = []

    async def worker() -> None:
        while bodies:
            results.append(await _send(http, url, bodies.pop()))

    async with asyncio.TaskGroup() as tg:
        for i in range(concurrency):
            tg.create_task(worker(), name=f"worker-{i}")
    return results


async def _start_sim(engine: str, extra: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    argv = [sys.executable, "-c", "from llmd.cli import main; main()", "sim", "--engine", engine,
            "--port", "0", "--max-num-seqs", "1024", "--max-waiting", "4096", *extra]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"llmd sim --engine {engine} exited before listening")
            m = re.search(r"listening on (\S+):(\d+)", line)
            if m:
                return proc, f"http://{m.group(1)}:{m.group(2)}"


async def _stop(proc: asyncio.subprocess.Process) -> None:
    await stop_process(proc, timeout_s=10)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _lag(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as resp:
        page = MetricsPage.parse(await resp.text(), [LAG])
    out = {}
    for labels, value in page.samples.get(LAG + "_bucket", []):
        out[labels["le"]] = value
    out["sum"] = page.total(LAG + "_sum") or 0.0
    out["count"] = page.total(LAG + "_count") or 0.0
    return out


def _lag_stats(before: dict[str, float], after: dict[str, float]) -> tuple[float | None, str]:
    count = after["count"] - before["count"]
    if count <= 0:
        return None, "n/a"
    mean_ms = (after["sum"] - before["sum"]) / count * 1000
    bounds = sorted((float(k), k) for k in after if k not in ("sum", "count"))
    for bound, key in bounds:
        if after[key] - before.get(key, 0.0) >= 0.99 * count:
            return mean_ms, ("> 1000" if bound == float("inf") else f"<= {bound * 1000:g}")
    return mean_ms, "n/a"


async def _sample_running(http: aiohttp.ClientSession, url: str, engine: str,
                          stop: asyncio.Event) -> int:
    adapter, peak = get_adapter(engine), 0
    if stop.is_set():
        return -1
    while not stop.is_set():
        try:
            async with http.get(url + "/metrics") as resp:
                text = await resp.text()
            peak = max(peak, adapter.endpoint_metrics(
                MetricsPage.parse(text, adapter.scraped_families)).running)
        except (aiohttp.ClientError, TimeoutError):
            pass
        try:
            async with asyncio.timeout(0.1):
                await stop.wait()
        except TimeoutError:
            pass
    return peak


async def _stage(http: aiohttp.ClientSession, url: str, pid: int, engine: str, stage: str,
                 concurrency: int, requests: list[BenchRequest], sample: bool) -> Row:
    """One closed-loop stage; `sample` also scrapes the running gauge every 100 ms (only for
    the hold stage: at zero latency nothing is ever caught running, and parsing pages in the
    client would add to the client-side latencies)."""
    lag0, cpu0 = await _lag(http, url), _cpu_s(pid)
    stop = asyncio.Event()
    if not sample:
        stop.set()
    async with asyncio.TaskGroup() as tg:
        sampler = tg.create_task(_sample_running(http, url, engine, stop), name="sampler")
        t0 = time.perf_counter()
        results = await closed_loop(http, url, "llmd-sim", requests, concurrency)
        wall = time.perf_counter() - t0
        stop.set()
    cpu1, lag1 = _cpu_s(pid), await _lag(http, url)
    ok = [r for r in results if r.error is None]
    errors = [r for r in results if r.error is not None]
    if errors:
        print(f"  {len(errors)} errors, e.g. {errors[0].error}", file=sys.stderr)
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    lag_mean, lag_p99 = _lag_stats(lag0, lag1)
    return Row(engine, stage, concurrency, len(ok), len(errors), len(ok) / wall,
               percentile(ttfts, 50), percentile(ttfts, 99),
               percentile([r.e2e_s * 1000 for r in ok], 99), lag_mean, lag_p99,
               (cpu1 - cpu0) / len(results) * 1000 if results else None, sampler.result())


async def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        for engine in args.engines:
            proc, url = await _start_sim(engine, ["--time-scale", "0"])
            try:
                await closed_loop(http, url, "llmd-sim",
                                  _requests(2000, args.prompt_tokens, args.max_tokens, 0), 100)
                for c in args.concurrency:
                    # Open the stage's connections first: measure streams, not a burst of
                    # hundreds of TCP handshakes into a saturated machine (see READING).
                    await closed_loop(http, url, "llmd-sim",
                                      _requests(c, args.prompt_tokens, args.max_tokens, -c), c)
                    reqs = _requests(c * args.rounds, args.prompt_tokens, args.max_tokens, c)
                    row = await _stage(http, url, proc.pid, engine, "zero latency", c, reqs,
                                       sample=False)
                    print(row, flush=True)
                    rows.append(row)
            finally:
                await _stop(proc)
            if args.hold:
                # Slow streams (time scale 1, 100 ms per token, 30 tokens: ~3 s each): all
                # `hold` of them must be open and running at the same moment.
                proc, url = await _start_sim(engine, ["--time-scale", "1", "--itl-ms", "100",
                                                      "--itl-per-seq-ms", "0"])
                try:
                    reqs = _requests(args.hold, args.prompt_tokens, 30, 99)
                    row = await _stage(http, url, proc.pid, engine, "hold (100 ms/token)",
                                       args.hold, reqs, sample=True)
                    print(row, flush=True)
                    rows.append(row)
                finally:
                    await _stop(proc)
    return rows


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    lines = ["| engine | stage | concurrency | ok | errors | req/s | TTFT p50 ms | TTFT p99 ms "
             "| e2e p99 ms | loop lag mean ms | loop lag p99 ms | sim CPU s / 1k req "
             "| peak running |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.engine} | {r.stage} | {r.concurrency} | {r.ok} | {r.errors} "
                     f"| {r.rps:.0f} | {_fmt(r.ttft_p50_ms)} | {_fmt(r.ttft_p99_ms)} "
                     f"| {_fmt(r.e2e_p99_ms)} | {_fmt(r.lag_mean_ms, '.2f')} | {r.lag_p99_ms} "
                     f"| {_fmt(r.cpu_s_per_1k, '.2f')} "
                     f"| {'-' if r.max_running < 0 else r.max_running} |")
    return "\n".join(lines)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return (f"- CPU: {os.cpu_count()} cores, {model}\n"
            f"- Memory: {mem_kb / 1024 / 1024:.1f} GiB\n"
            f"- OS: {platform.system()} {platform.release()}; Python {platform.python_version()}"
            "\n- Shared: other processes (helpers, test runs) use the same 2 cores, so numbers "
            "vary by a few tens of percent between runs.\n")


READING = """\
Reading: both dialects hold 500 concurrent streams without an error. In the hold stage the
simulator reports all 500 running at the same moment, with an event-loop lag of 1-2 ms. At zero
latency a closed loop saturates the machine on purpose: the simulator spends 0.30-0.35
CPU-seconds per 1,000 streamed requests (16 tokens each), about 3,000 requests/s on its one
core, while the client takes the other core. The loop lag in those stages (20-130 ms mean) is what
a loop at 100 % CPU shows: each turn serves hundreds of ready requests. That is about six times the
EPP's target of 500 requests/s, so a simulator per endpoint is not the bottleneck of a routing
benchmark. Runs on this shared machine vary by about 20 %; the CPU-per-request column is the
stable one.

Each stage first opens its connections with one untimed request per stream: without that, the
first wave's new connections (400 opened at once into a saturated machine) showed a 1.5-3 s
TTFT tail (loopback TCP retransmits), which is connection setup, not the simulator. Each
simulator also gets a 2,000-request warm-up first (without it the first engine measured ran
about 30 % slower).

Fixed on the way: writing every token of a zero-latency stream as its own socket write cost a
quarter of the simulator's CPU; chunks are now still separate SSE events but share one write
when the next token would take no time (`--time-scale 0`). The first client parsed every SSE
chunk as JSON and was the bottleneck (about 1,800 requests/s); the benchmark's client now only
timestamps the first bytes and checks that the stream ends with `data: [DONE]`.
"""


def write_docs(rows: list[Row], command: str) -> None:
    body = (f"{SECTION}\n\n"
            "One `llmd sim` process (uvloop) per dialect, zero latency (`--time-scale 0`), "
            "driven by a closed loop of streaming `/v1/completions` (64-token prompts, 16 "
            "output tokens with `ignore_eos`, `stream_options.include_usage`) from one Python "
            "client process (uvloop, aiohttp) on the same machine; TTFT is the client's time "
            "to the first bytes. Loop lag is the simulator's own "
            f"`{LAG}` (lateness of a 100 ms timer); its p99 is a histogram bucket bound. "
            "The `hold` stage keeps slow streams (100 ms per token, 30 tokens) open to show "
            "that all of them run at the same moment (peak running, read through the engine "
            "adapter from the simulator's /metrics).\n\n"
            f"Command:\n\n```sh\n{command}\n```\n\n{table(rows)}\n\n{READING}")
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n## Machine\n\n" + machine()
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    DOCS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", nargs="+", default=["vllm", "sglang"])
    p.add_argument("--concurrency", nargs="+", type=int, default=[100, 500])
    p.add_argument("--rounds", type=int, default=10, help="requests per stream slot")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--hold", type=int, default=500, help="slow streams held at once (0: skip)")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args()
    assert len(BuiltinTokenizer().encode("a1 b2")) == 3  # the sim's tokenizer, as documented
    import uvloop  # the client too: a plain-asyncio client would be the bottleneck

    rows = uvloop.run(run(args))
    print(table(rows))
    if args.write_docs:
        write_docs(rows, " ".join([".venv/bin/python bench/sim_capacity.py", *sys.argv[1:]]))
        print(f"updated {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
