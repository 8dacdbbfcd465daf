#!/usr/bin/env python3
"""What one routing decision costs the EPP's process, and what cuts it: variants of the ext_proc
transport measured against a baseline in the same run, interleaved.

Each variant is a `LocalStack` (Envoy with one worker, the EPP on llm-d's default config, four
zero-latency simulators: 2 vLLM- and 2 SGLang-dialect) started afresh for each repeat, driven by
`wrk` (C, one thread; bench/epp_overhead.py's script: unique ~600-character prompts, 16 output
tokens, non-streaming completions) in closed loops at concurrency 1 and 64. Per stage: req/s,
mean latency, and the EPP's CPU per 1,000 requests (user + system from /proc of every EPP
process), split into its Python thread and grpc's own threads (/proc/<pid>/task), plus Envoy's.

Variants (`--variants`, the first is the baseline the ratios are against):

- `baseline`: the EPP from `--baseline-src` (another checkout's `src`, e.g. a worktree of the
  commit before a change), everything else the same;
- `this`: the EPP from this checkout;
- `this-x2`, `this-x4`: 2 or 4 `llmd epp` processes sharing the ext_proc port (grpc binds it
  with SO_REUSEPORT), Envoy's epp cluster capped at 8 streams per HTTP/2 connection so that
  its connections (and the kernel's choice of process per connection) spread over them; each
  replica scrapes the fleet on its own;
- `ee-cq`, `ph2`: `this` with a grpc core experiment on in the EPP
  (GRPC_EXPERIMENTS=event_engine_callback_cq, ph2_server);
- `scrape-250ms`: `this` scraping every 250 ms instead of 50 ms, to show what share of the
  per-request CPU is the scraper's (it runs whether requests come or not);
- `noop`, `noop-noscrape`: the floor of the transport, no EPP can go below it: the EPP's
  servicer replaced (`bench/_noop_epp/sitecustomize.py`, on the children's PYTHONPATH) by one
  that answers every request after the first with the first one's decision, without parsing,
  scheduling or metrics; `noop-noscrape` also scrapes only every 30 s.

The EPP's CPU while idle (its scraping, over 2 s before the load) is also reported per
variant, and "net" columns subtract it from the loaded stages.

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/extproc_cost.py --baseline-src /tmp/before/src --repeats 3
    .venv/bin/python bench/extproc_cost.py --variants this --repeats 1 --profile /tmp/epp
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llmd.gateway.envoy as envoy_config
from llmd.bench.procstat import cpu_seconds
from llmd.gateway import LocalStack, StackSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epp_overhead import WRK_SCRIPT, wrk  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")
_NOOP_PATH = os.pathsep.join(filter(None, [
    str(Path(__file__).resolve().parent / "_noop_epp"), os.environ.get("PYTHONPATH")]))


@dataclass(frozen=True)
class Variant:
    baseline: bool = False
    replicas: int = 1
    env: dict[str, str] = field(default_factory=dict)
    epp_args: tuple[str, ...] = ()
    streams_per_connection: int | None = None


VARIANTS = {
    "baseline": Variant(baseline=True),
    "this": Variant(),
    "this-x2": Variant(replicas=2, streams_per_connection=8),
    "this-x4": Variant(replicas=4, streams_per_connection=8),
    "ee-cq": Variant(env={"GRPC_EXPERIMENTS": "event_engine_callback_cq"}),
    "ph2": Variant(env={"GRPC_EXPERIMENTS": "ph2_server"}),
    "scrape-250ms": Variant(epp_args=("--refresh-metrics-interval-s", "0.25")),
    "noop": Variant(env={"PYTHONPATH": _NOOP_PATH}),
    "noop-noscrape": Variant(env={"PYTHONPATH": _NOOP_PATH},
                             epp_args=("--refresh-metrics-interval-s", "30")),
}


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds per thread name (`python` is the EPP's event loop; grpc's are named)."""
    out: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    stat = (task / "stat").read_text()
                    name = stat[stat.index("(") + 1 : stat.rindex(")")]
                    fields = stat.rsplit(")", 1)[1].split()
                    name = "main" if task.name == str(pid) else name
                    out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return out


@contextlib.contextmanager
def patched_gateway(variant: Variant) -> Iterator[None]:
    """Render Envoy's bootstrap for `variant` (this process renders it, Envoy reads it)."""
    cluster = envoy_config.epp_cluster

    def epp_cluster(*args: Any) -> dict[str, Any]:
        out = cluster(*args)
        n = variant.streams_per_connection
        if n:
            opts = out["typed_extension_protocol_options"][
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
            opts["explicit_http_config"]["http2_protocol_options"] = {
                "max_concurrent_streams": n}
        return out

    envoy_config.epp_cluster = epp_cluster  # type: ignore[assignment]
    try:
        yield
    finally:
        envoy_config.epp_cluster = cluster  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def running(variant: Variant, baseline_src: Path, profile: Path | None
                  ) -> AsyncIterator[tuple[LocalStack, list[int]]]:
    env = dict(variant.env)
    if variant.baseline:  # the EPP child imports llmd from there
        env["PYTHONPATH"] = str(baseline_src)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    extra: list[asyncio.subprocess.Process] = []
    try:
        spec = StackSpec(time_scale=0, epp_args=variant.epp_args)
        with patched_gateway(variant):
            stack = LocalStack(spec)
            if profile is not None:
                stack.epp_argv = _profiled(stack.epp_argv, profile)  # type: ignore[method-assign]
            async with stack:
                assert stack.epp is not None
                pids = [stack.epp.pid]
                for _ in range(variant.replicas - 1):
                    argv = stack.epp_argv(0, [stack.epp.grpc_port, 0, 0])
                    proc = await asyncio.create_subprocess_exec(
                        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                    extra.append(proc)
                    assert proc.stdout is not None
                    for _ in range(3):  # its three `listening on` lines
                        while b"listening on" not in await proc.stdout.readline():
                            pass
                    pids.append(proc.pid)
                yield stack, pids
    finally:
        for proc in extra:
            proc.terminate()
            await proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _profiled(epp_argv: Any, out: Path) -> Any:
    def argv(index: int, ports: list[int] | None = None) -> list[str]:
        args = epp_argv(index, ports)
        i = args.index("-c")
        target = out.with_suffix(f".{os.getpid()}.{len(list(out.parent.glob('*.prof')))}.prof")
        args[i + 1] = (f"import cProfile; from llmd.cli import main\n"
                       f"cProfile.run('main()', {str(target)!r})")
        return args
    return argv


@dataclass
class Sample:
    rps: float
    mean_ms: float
    epp_cpu_ms: float
    epp_threads_ms: dict[str, float]
    envoy_cpu_ms: float
    idle_cpu_ms: float
    """The EPP's idle CPU rate (scraping) times the stage's duration, per request."""


async def idle_rate(pids: list[int], seconds: float = 2.0) -> float:
    """CPU-seconds per second the EPP processes use with no requests (their scraping)."""
    before = cpu_seconds(pids)
    await asyncio.sleep(seconds)  # measuring a time window, not synchronising
    return (cpu_seconds(pids) - before) / seconds


async def stage(stack: LocalStack, pids: list[int], script: Path, concurrency: int,
                duration_s: float, idle: float) -> Sample:
    assert stack.gateway is not None and stack.gateway.child is not None
    envoy = stack.gateway.child.proc.pid
    cpu0, threads0, envoy0 = cpu_seconds(pids), thread_cpu(pids), cpu_seconds([envoy])
    s = await wrk(stack.url, script, concurrency, duration_s)
    n = s.rps * duration_s
    threads = thread_cpu(pids)
    if s.errors:
        print(f"  {s.errors} errors", file=sys.stderr)
    return Sample(rps=s.rps, mean_ms=s.mean_ms,
                  epp_cpu_ms=(cpu_seconds(pids) - cpu0) / n * 1000,
                  epp_threads_ms={k: (v - threads0.get(k, 0.0)) / n * 1000
                                  for k, v in threads.items()},
                  envoy_cpu_ms=(cpu_seconds([envoy]) - envoy0) / n * 1000,
                  idle_cpu_ms=idle * duration_s / n * 1000)


async def run(args: argparse.Namespace) -> dict[tuple[str, int], list[Sample]]:
    script = Path(tempfile.mkdtemp(prefix="llmd-wrk-")) / "load.lua"
    script.write_text(WRK_SCRIPT.replace("MODEL", "llmd-sim"))
    names = args.variants.split(",")
    cells: dict[tuple[str, int], list[Sample]] = {}
    for rep in range(args.repeats):
        for name in names:
            async with running(VARIANTS[name], args.baseline_src, args.profile) as (stack, pids):
                idle = await idle_rate(pids)
                await wrk(stack.url, script, 64, args.warmup_s)
                for conc in (1, 64):
                    s = await stage(stack, pids, script, conc, args.duration_s, idle)
                    cells.setdefault((name, conc), []).append(s)
                    top = sorted(s.epp_threads_ms.items(), key=lambda kv: -kv[1])[:3]
                    print(f"rep {rep + 1} {name:>11} c={conc:<2} {s.rps:6.0f} req/s "
                          f"mean {s.mean_ms:6.2f} ms  EPP {s.epp_cpu_ms:.3f} ms/req "
                          f"({', '.join(f'{k} {v:.3f}' for k, v in top)})  "
                          f"Envoy {s.envoy_cpu_ms:.3f} idle {s.idle_cpu_ms:.3f}",
                          file=sys.stderr, flush=True)
    return cells


def table(cells: dict[tuple[str, int], list[Sample]], names: list[str]) -> str:
    rows = ["| variant | concurrency | req/s | mean ms | EPP CPU ms / req (min-max) | "
            "of which event-loop thread | of which grpc threads | idle share (scraping) | "
            "net of idle | vs first (net) | Envoy CPU ms / req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for conc in (1, 64):
        def med(name: str, attr: str, conc: int = conc) -> float:
            return statistics.median(getattr(s, attr) for s in cells[(name, conc)])

        base = med(names[0], "epp_cpu_ms") - med(names[0], "idle_cpu_ms")
        for name in names:
            ss = cells[(name, conc)]
            cpu = [s.epp_cpu_ms for s in ss]
            main = statistics.median(s.epp_threads_ms.get("main", 0.0) for s in ss)
            total, idle = statistics.median(cpu), med(name, "idle_cpu_ms")
            rows.append(
                f"| {name} | {conc} | {med(name, 'rps'):.0f} | {med(name, 'mean_ms'):.2f} | "
                f"{total:.3f} ({min(cpu):.3f}-{max(cpu):.3f}) | {main:.3f} | "
                f"{total - main:.3f} | {idle:.3f} | {total - idle:.3f} | "
                f"{(total - idle) / base:.2f}x | {med(name, 'envoy_cpu_ms'):.3f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="baseline,this,this-x2",
                        help=f"comma list of {', '.join(VARIANTS)}; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="the `src` directory the baseline EPP runs from")
    parser.add_argument("--profile", type=Path, default=None,
                        help="cProfile the EPP into PATH.<pid>.<n>.prof files")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk not found (apt-get install wrk)")
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"error: --variants: {name!r} is not one of {', '.join(VARIANTS)}")
    if "baseline" in args.variants.split(",") and args.baseline_src is None:
        sys.exit("error: the baseline variant needs --baseline-src")
    cells = asyncio.run(run(args))
    print(table(cells, args.variants.split(",")))


if __name__ == "__main__":
    main()
