#!/usr/bin/env python3
"""What the gateway path costs: direct to one simulator vs Envoy round-robin vs Envoy + llmd EPP.

Starts `LocalStack`s (llmd.gateway.stack) of zero-latency simulators (`--time-scale 0`; two
vLLM- and two SGLang-dialect by default), once without an EPP (Envoy round-robin over the
fleet) and once with the llmd EPP on its default config, and drives each path with `wrk`
(C, one thread, keep-alive connections; `apt-get install wrk`) so that the load generator
takes little of the 2 shared cores:

- `direct`: straight to the first simulator of the round-robin stack;
- `envoy-rr`: through Envoy, round-robin over the fleet, no ext_proc;
- `envoy-epp`: through Envoy with ext_proc to `llmd epp` (BUFFERED body, default scorers).

Each request is a non-streaming `/v1/completions` with a unique ~600-character prompt and 16
output tokens. Stages: closed loops at concurrency 1 and 64 (64 saturates the machine, so
its latency is mostly queueing for CPU) and a paced stage: 64 connections offered about
`--paced-rate` requests/s in total, below saturation, which is where "latency added at
concurrency 64" means per-request cost rather than CPU queueing. Every stage is repeated
`--repeats` times (interleaved) and the table shows the median over repeats. For the EPP it
also reads its own `llmd_epp_decision_duration_seconds` histogram and its CPU time
(/proc/<pid>/stat, user + system, including its 50 ms metrics scrapes) per 1,000 requests.

    .venv/bin/python bench/epp_overhead.py                     # print the table
    .venv/bin/python bench/epp_overhead.py --write-docs        # also update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from llmd.bench.procstat import cpu_seconds
from llmd.engines import ENGINES, EngineName
from llmd.gateway import LocalStack, StackSpec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## EPP overhead"
PATHS = ("direct", "envoy-rr", "envoy-epp")

WRK_SCRIPT = r"""
local counter = 0
local filler = string.rep("the quick brown fox jumps over the lazy dog ", 13)
local pause = tonumber(os.getenv("LLMD_WRK_DELAY_MS") or "0")
math.randomseed(os.time())
request = function()
  counter = counter + 1
  local body = '{"model":"MODEL","max_tokens":16,"ignore_eos":true,"prompt":"' ..
    math.random(1, 1000000000) .. " " .. counter .. " " .. filler .. '"}'
  return wrk.format("POST", "/v1/completions", {["Content-Type"] = "application/json"}, body)
end
if pause > 0 then
  -- uniform in [0, 2 x pause]: connections that start together do not stay in lockstep
  delay = function() return math.random(0, 2 * pause) end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"errors":%d,"mean_us":%f,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Sample:
    rps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    errors: int
    epp_cpu_per_1k: float | None = None
    envoy_cpu_per_1k: float | None = None
    decision_mean_us: float | None = None
    decision_p99_le_us: float | None = None


@dataclass
class Cell:
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        values = [v for s in self.samples if (v := getattr(s, attr)) is not None]
        return statistics.median(values) if values else None


async def wrk(url: str, script: Path, concurrency: int, duration_s: float,
              delay_ms: int = 0) -> Sample:
    """One wrk run (one thread, `concurrency` keep-alive connections) against `url`."""
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s:g}s", "--timeout", "10s",
        "-s", str(script), url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"LLMD_WRK_DELAY_MS": str(delay_ms), "PATH": "/usr/bin:/bin"})
    out, err = await proc.communicate()
    line = next((x for x in out.decode().splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out.decode()}{err.decode()}")
    r = json.loads(line.removeprefix("RESULT "))
    return Sample(rps=r["requests"] / (r["duration_us"] / 1e6), mean_ms=r["mean_us"] / 1e3,
                  p50_ms=r["p50_us"] / 1e3, p99_ms=r["p99_us"] / 1e3, errors=r["errors"])


async def decision_histogram(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """`llmd_epp_decision_duration_seconds` bucket counts, sum and count from the EPP."""
    async with http.get(url) as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("llmd_epp_decision_duration_seconds"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def decision_stats(before: dict[str, float], after: dict[str, float]
                   ) -> tuple[float | None, float | None]:
    """Mean decision time (µs) and the bucket bound holding the p99 (µs) between two reads."""
    key = "llmd_epp_decision_duration_seconds_"
    count = after.get(key + "count", 0) - before.get(key + "count", 0)
    if count <= 0:
        return None, None
    mean = (after[key + "sum"] - before.get(key + "sum", 0)) / count * 1e6
    buckets = sorted(
        (float(name.split('le="')[1].rstrip('"}')), after[name] - before.get(name, 0))
        for name in after if name.startswith(key + "bucket"))
    p99 = next((le * 1e6 for le, n in buckets if n >= 0.99 * count), None)
    return mean, p99


async def measure(stack: LocalStack, path: str, url: str, script: Path, concurrency: int,
                  duration_s: float, delay_ms: int, http: aiohttp.ClientSession) -> Sample:
    epp_pid = stack.epp.pid if stack.epp else None
    assert stack.gateway is not None and stack.gateway.child is not None
    envoy_pid = stack.gateway.child.proc.pid
    hist = await decision_histogram(http, stack.epp.metrics_url) if stack.epp else {}
    epp0 = cpu_seconds([epp_pid]) if epp_pid else 0.0
    envoy0 = cpu_seconds([envoy_pid])
    sample = await wrk(url, script, concurrency, duration_s, delay_ms)
    n = sample.rps * duration_s
    if path != "direct":
        sample.envoy_cpu_per_1k = (cpu_seconds([envoy_pid]) - envoy0) / n * 1000
    if stack.epp is not None and epp_pid is not None:
        sample.epp_cpu_per_1k = (cpu_seconds([epp_pid]) - epp0) / n * 1000
        after = await decision_histogram(http, stack.epp.metrics_url)
        sample.decision_mean_us, sample.decision_p99_le_us = decision_stats(hist, after)
    return sample


def stages(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(label, concurrency, per-connection delay ms) for each stage."""
    paced_delay = max(1, round(64 / args.paced_rate * 1000))
    return [("closed", 1, 0), ("closed", 64, 0), (f"paced ~{args.paced_rate:g}/s", 64,
                                                  paced_delay)]


async def idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """CPU-seconds per second `pid` uses with no requests (the EPP: its metrics scrapes)."""
    before = cpu_seconds([pid])
    await asyncio.sleep(seconds)  # measuring a time window, not synchronising
    return (cpu_seconds([pid]) - before) / seconds


async def run(args: argparse.Namespace) -> tuple[dict[tuple[str, str], Cell], list[float]]:
    engines: tuple[EngineName, ...] = tuple(e for e in ENGINES for _ in range(args.per_engine))
    script = Path(tempfile.mkdtemp(prefix="llmd-wrk-")) / "load.lua"
    script.write_text(WRK_SCRIPT.replace("MODEL", "llmd-sim"))
    cells: dict[tuple[str, str], Cell] = {}
    idle: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for rep in range(args.repeats):
            for with_epp in (False, True):
                spec = StackSpec(engines=engines, time_scale=0, epp=with_epp,
                                 envoy_concurrency=args.envoy_workers)
                async with LocalStack(spec) as stack:
                    targets = ([("envoy-epp", stack.url)] if with_epp else
                               [("direct", stack.endpoints[0].url), ("envoy-rr", stack.url)])
                    if stack.epp is not None:
                        idle.append(await idle_cpu(stack.epp.pid))
                    for path, url in targets:
                        await wrk(url, script, 64, args.warmup_s)  # warm connections and caches
                        for label, conc, delay in stages(args):
                            sample = await measure(stack, path, url, script, conc,
                                                   args.duration_s, delay, http)
                            stage = f"{label} c={conc}"
                            cells.setdefault((stage, path), Cell()).samples.append(sample)
                            print(f"rep {rep + 1} {stage:>18} {path:>9}: {sample.rps:7.0f} req/s"
                                  f"  p50 {sample.p50_ms:7.2f} ms  p99 {sample.p99_ms:7.2f} ms"
                                  f"  errors {sample.errors}", file=sys.stderr, flush=True)
    return cells, idle


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(cells: dict[tuple[str, str], Cell]) -> str:
    head = ("| stage | path | req/s | mean ms | p50 ms | p99 ms | added mean ms | added p50 ms "
            "| added p99 ms | EPP CPU s / 1k req | Envoy CPU s / 1k req | EPP decision mean µs "
            "| EPP decision p99 µs (bucket) | errors |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [head]
    for stage in dict.fromkeys(s for s, _ in cells):
        base = cells.get((stage, "direct"))
        for path in PATHS:
            cell = cells.get((stage, path))
            if cell is None:
                continue

            def added(attr: str, cell: Cell = cell, base: Cell | None = base,
                      path: str = path) -> str:
                if base is None or path == "direct":
                    return "-"
                a, b = cell.median(attr), base.median(attr)
                return _f(None if a is None or b is None else a - b)

            p99_le = cell.median("decision_p99_le_us")
            rows.append(
                f"| {stage} | {path} | {_f(cell.median('rps'), '.0f')} | "
                f"{_f(cell.median('mean_ms'))} | {_f(cell.median('p50_ms'))} | "
                f"{_f(cell.median('p99_ms'))} | {added('mean_ms')} | {added('p50_ms')} | "
                f"{added('p99_ms')} | {_f(cell.median('epp_cpu_per_1k'), '.3f')} | "
                f"{_f(cell.median('envoy_cpu_per_1k'), '.3f')} | "
                f"{_f(cell.median('decision_mean_us'), '.0f')} | "
                f"{'-' if p99_le is None else f'<= {p99_le:.0f}'} | "
                f"{sum(s.errors for s in cell.samples)} |")
    return "\n".join(rows)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    else:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + ("\n" + doc[end:] if end >= 0 else "\n")
    DOCS.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--per-engine", type=int, default=2, help="simulators per dialect")
    parser.add_argument("--paced-rate", type=float, default=300.0,
                        help="total req/s offered by 64 paced connections")
    parser.add_argument("--envoy-workers", type=int, default=1)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk not found (apt-get install wrk)")
    started = time.monotonic()
    cells, idle = asyncio.run(run(args))
    result = (table(cells) + f"\n\nEPP CPU while idle (scraping {2 * args.per_engine} "
              f"endpoints every 50 ms): {statistics.median(idle):.3f} CPU-s per s (median).")
    print(result)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.write_docs:
        command = " ".join(["bench/epp_overhead.py", *sys.argv[1:]])
        write_docs(f"{SECTION}\n\nCommand:\n\n```sh\n.venv/bin/python {command}\n```\n\n"
                   f"{result}\n")


if __name__ == "__main__":
    main()
