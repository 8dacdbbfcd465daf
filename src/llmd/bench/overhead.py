"""Router overhead: zero-latency simulators, direct vs each system, closed loop at fixed
concurrency. Per cell: mean (and p50/p99) client latency, the mean added over direct,
requests/s, the router's CPU seconds per 1,000 requests (user + system of its processes, from
/proc/<pid>/stat) and its peak resident memory (VmHWM), following vllm-router's method
(`docs/benchmarks/router_overhead.md`: direct baseline, concurrency 1 and 64, repeats).

`measure_cell` is the reusable part (bench/epp_overhead.py can call it with its own targets
and pids); `run_overhead` starts each system on a fresh zero-latency fleet.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field

from llmd.bench.loadgen import Targets, closed_loop
from llmd.bench.output import build_workload
from llmd.bench.peers import PEERS, ensure_venv
from llmd.bench.procstat import cpu_seconds, peak_rss_kib
from llmd.bench.runner import session
from llmd.bench.stats import percentile
from llmd.bench.systems import SYSTEMS, FleetOptions, running_system
from llmd.bench.workload import BenchRequest, Workload
from llmd.config import LlmdModel

__all__ = ["OverheadCell", "OverheadConfig", "OverheadResult", "measure_cell", "run_overhead"]

DEFAULT_SYSTEMS = ("direct", "llmd-default", "envoy-rr", "sglang-cache_aware",
                   "vllm-router-cache_aware")


class OverheadConfig(LlmdModel):
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    concurrency: tuple[int, ...] = (1, 64)
    requests: dict[int, int] = Field(default_factory=lambda: {1: 200, 64: 2000})
    """Requests per repeat at each concurrency (others: 30 x concurrency)."""
    repeats: int = Field(3, ge=1)
    warmup: int = Field(200, ge=0)
    # The requests: shared-prefix prompts of about 2 KiB, 8 output tokens.
    num_groups: int = 16
    num_prompts_per_group: int = 16
    system_prompt_len: int = 384
    question_len: int = 64
    output_len: int = 8
    vllm: int = 2
    sglang: int = 2
    tokenizer: str | None = None
    model: str = "llmd-sim"
    root: Path = Path(".")
    output_dir: Path = Path("bench/results/overhead")

    def per_repeat(self, concurrency: int) -> int:
        return self.requests.get(concurrency, 30 * concurrency)


@dataclass(frozen=True, slots=True)
class OverheadCell:
    system: str
    concurrency: int
    requests: int
    errors: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    cpu_s_per_1k: float | None
    """The router's CPU seconds per 1,000 requests; None for direct."""
    peak_rss_mib: float | None
    added_mean_ms: float | None = None


@dataclass(slots=True)
class OverheadResult:
    config: OverheadConfig
    cells: list[OverheadCell] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def direct(self, concurrency: int) -> OverheadCell | None:
        return next((c for c in self.cells
                     if c.system == "direct" and c.concurrency == concurrency), None)


async def measure_cell(system: str, targets: Targets, model: str,
                       requests: Sequence[BenchRequest], concurrency: int, repeats: int,
                       router_pids: Sequence[int]) -> OverheadCell:
    """`repeats` closed loops of `requests` at `concurrency`; means over repeats."""
    import time

    lat: list[float] = []
    rates: list[float] = []
    errors = 0
    cpu = 0.0
    async with session() as http:
        for _ in range(repeats):
            cpu0 = cpu_seconds(router_pids)
            t0 = time.perf_counter()
            results = await closed_loop(http, targets, model, requests, concurrency)
            wall = time.perf_counter() - t0
            cpu += cpu_seconds(router_pids) - cpu0
            ok = [r.e2e_s for r in results if r.error is None]
            errors += len(results) - len(ok)
            lat.extend(ok)
            rates.append(len(ok) / wall)
    total = len(requests) * repeats
    return OverheadCell(
        system=system, concurrency=concurrency, requests=total, errors=errors,
        mean_ms=statistics.fmean(lat) * 1000 if lat else float("nan"),
        p50_ms=(percentile(lat, 50) or 0) * 1000, p99_ms=(percentile(lat, 99) or 0) * 1000,
        requests_per_s=statistics.fmean(rates),
        cpu_s_per_1k=cpu / total * 1000 if router_pids else None,
        peak_rss_mib=peak_rss_kib(router_pids) / 1024 if router_pids else None)


def _workload(cfg: OverheadConfig) -> Workload:
    return build_workload("shared-prefix", cfg.tokenizer, cfg.model_dump())


async def run_overhead(cfg: OverheadConfig,
                       on_cell: Callable[[OverheadCell], None] | None = None) -> OverheadResult:
    import asyncio

    result = OverheadResult(cfg)
    bins: dict[str, Path] = {}
    systems = [SYSTEMS[s] for s in cfg.systems]
    for venv in sorted({s.venv for s in systems if s.venv}):
        try:
            bins[venv] = await ensure_venv(PEERS[venv], cfg.root)
        except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal
            result.skipped[venv] = f"install failed: {exc}"
    workload = await asyncio.to_thread(_workload, cfg)
    reqs = list(workload.requests)
    sim_args: tuple[str, ...] = ("--tokenizer", cfg.tokenizer) if cfg.tokenizer else ()
    fleet = FleetOptions(engines=("vllm",) * cfg.vllm + ("sglang",) * cfg.sglang,  # type: ignore[arg-type]
                         model=cfg.model, time_scale=0.0, sim_args=sim_args)
    for system in systems:
        if system.venv and system.venv not in bins:
            result.skipped[system.name] = result.skipped.get(system.venv, "not installed")
            continue
        async with running_system(system, fleet, bins) as running:
            if cfg.warmup:
                async with session() as http:
                    await closed_loop(http, running.targets, cfg.model, reqs[:cfg.warmup], 8)
            for c in cfg.concurrency:
                n = cfg.per_repeat(c)
                batch = [reqs[i % len(reqs)] for i in range(n)]
                cell = await measure_cell(system.name, running.targets, cfg.model, batch, c,
                                          cfg.repeats, running.router_pids)
                direct = result.direct(c)
                if direct is not None and system.name != "direct":
                    cell = OverheadCell(**{**asdict(cell),
                                           "added_mean_ms": cell.mean_ms - direct.mean_ms})
                result.cells.append(cell)
                if on_cell:
                    on_cell(cell)
    return result


def overhead_table(result: OverheadResult) -> str:
    head = ("| system | concurrency | req/s | mean ms | added mean ms | p50 ms | p99 ms | "
            "router CPU s / 1k req | router peak RSS MiB | errors |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")

    def f(v: float | None, spec: str = ".2f") -> str:
        return "–" if v is None else format(v, spec)

    rows = [f"| {c.system} | {c.concurrency} | {c.requests_per_s:.0f} | {c.mean_ms:.2f} | "
            f"{f(c.added_mean_ms)} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | {f(c.cpu_s_per_1k)} | "
            f"{f(c.peak_rss_mib, '.0f')} | {c.errors} |" for c in result.cells]
    return head + "\n".join(rows) + "\n"
