"""Stages of load against one target: a Poisson rate ladder or fixed-concurrency closed loops.

`run_stages` drives the workload (taken cyclically, each stage continuing where the previous
stopped, so a ladder warms the caches as a real one does) through `targets` with a rich
progress bar per stage, and returns one `StageSummary` per stage plus every request's result.
Arrival times are seeded per stage, so every system sees the identical schedule.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp

from llmd.bench.loadgen import RequestResult, closed_loop, open_loop
from llmd.bench.stats import StageSummary, summarize
from llmd.bench.workload import BenchRequest, Workload

__all__ = ["StageOutcome", "StagePlan", "plan_stages", "run_stages", "session", "stage_requests"]


@dataclass(frozen=True, slots=True)
class StagePlan:
    """One stage: `rate` req/s (open loop) or `concurrency` workers (closed loop)."""

    name: str
    requests: int
    rate: float | None = None
    concurrency: int | None = None
    seed: int = 0

    @property
    def offered(self) -> float:
        return float(self.rate if self.rate is not None else self.concurrency or 0)


@dataclass(slots=True)
class StageOutcome:
    summaries: list[StageSummary] = field(default_factory=list)
    results: dict[str, list[RequestResult]] = field(default_factory=dict)


def plan_stages(*, rates: Sequence[float] = (), concurrency: Sequence[int] = (),
                stage_duration_s: float = 15.0, min_requests: int = 20,
                requests_per_stage: int | None = None, seed: int = 0) -> list[StagePlan]:
    """A rate ladder (each stage ≈ `stage_duration_s` long) and/or closed-loop stages."""
    plans = []
    for i, rate in enumerate(rates):
        n = requests_per_stage or max(min_requests, round(rate * stage_duration_s))
        plans.append(StagePlan(f"rate={rate:g}", n, rate=rate, seed=seed + i))
    for c in concurrency:
        n = requests_per_stage or max(min_requests, c * 10)
        plans.append(StagePlan(f"concurrency={c}", n, concurrency=c))
    return plans


def stage_requests(workload: Workload, plans: Sequence[StagePlan]) -> Iterator[
        tuple[StagePlan, list[BenchRequest]]]:
    """Each stage's requests, taken cyclically from the workload in order."""
    cycle = itertools.cycle(workload.requests)
    for plan in plans:
        yield plan, list(itertools.islice(cycle, plan.requests))


def session(limit: int = 0) -> aiohttp.ClientSession:
    """One client session, no connection cap (an open loop must never queue in the client)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=None))


async def run_stages(system: str, targets: str | Sequence[str], model: str, workload: Workload,
                     plans: Sequence[StagePlan], *, show_progress: bool = True,
                     timeout_s: float = 300.0) -> StageOutcome:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    outcome = StageOutcome()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), disable=not show_progress, transient=False)
    with progress if show_progress else contextlib.nullcontext():
        async with session() as http:
            for plan, reqs in stage_requests(workload, plans):
                task = progress.add_task(f"{system} {plan.name}", total=len(reqs))

                def tick(task: TaskID = task) -> None:
                    progress.advance(task)

                if plan.rate is not None:
                    results = await open_loop(http, targets, model, reqs, plan.rate,
                                              seed=plan.seed, progress=tick, timeout_s=timeout_s)
                else:
                    results = await closed_loop(http, targets, model, reqs,
                                                plan.concurrency or 1, progress=tick,
                                                timeout_s=timeout_s)
                outcome.results[plan.name] = results
                outcome.summaries.append(summarize(system, plan.name, plan.offered, results))
    return outcome
