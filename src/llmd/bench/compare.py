"""`llmd bench compare`: one simulated fleet, one saved workload and arrival schedule, every
system in turn (each on a fresh fleet), a Poisson rate ladder, and the oracle's hit share.

The fleet is small on purpose: `kv_cache_blocks` per simulator is chosen so that the fleet can
hold every group's shared prefix once (an oracle partition fits) but no simulator can hold them
all (a cache-blind router thrashes), and `time_scale=1` so that prefill of uncached tokens costs
time. See docs/benchmarks.md (`## Router comparison`) for the numbers and the reading.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field

from llmd.bench.oracle import OracleReplay, OracleResult
from llmd.bench.output import build_workload, write_outputs
from llmd.bench.peers import PEERS, ensure_venv
from llmd.bench.runner import StageOutcome, StagePlan, plan_stages, run_stages, stage_requests
from llmd.bench.stats import StageSummary
from llmd.bench.systems import SYSTEMS, FleetOptions, SystemDef, running_system
from llmd.bench.workload import Workload, save_workload
from llmd.config import LlmdModel
from llmd.errors import ConfigError, LlmdError

__all__ = ["CompareConfig", "CompareResult", "run_compare", "sustained_rate"]

log = logging.getLogger(__name__)

DEFAULT_SYSTEMS = ("llmd-default", "llmd-v1-default", "llmd-autotune", "llmd-precise",
                   "llmd-precise-speculative", "llmd-prefix-only", "llmd-load-only", "llmd-random",
                   "envoy-rr", "sglang-cache_aware", "sglang-round_robin",
                   "vllm-router-cache_aware", "vllm-router-kv_aware")


class CompareConfig(LlmdModel):
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    rates: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0, 96.0, 128.0, 160.0)
    stage_duration_s: float = Field(10.0, gt=0)
    # Workload: inference-perf's shared_prefix parameters.
    num_groups: int = Field(24, gt=0)
    num_prompts_per_group: int = Field(200, gt=0)
    system_prompt_len: int = Field(1024, gt=0)
    question_len: int = Field(64, gt=0)
    output_len: int = Field(32, gt=0)
    seed: int = 0
    # Fleet.
    vllm: int = Field(2, ge=0)
    sglang: int = Field(2, ge=0)
    kv_cache_blocks: int = Field(512, gt=0)
    block_size: int = Field(16, gt=0)
    max_model_len: int = Field(2048, gt=1)
    time_scale: float = Field(1.0, ge=0)
    tokenizer: str | None = None
    model: str = "llmd-sim"
    root: Path = Path(".")
    """The checkout: `.venv-peers/` goes here."""
    output_dir: Path = Path("bench/results/compare")
    sustain_fraction: float = Field(0.85, gt=0, le=1)

    def fleet(self) -> FleetOptions:
        args = ["--kv-cache-blocks", str(self.kv_cache_blocks), "--block-size",
                str(self.block_size), "--max-model-len", str(self.max_model_len)]
        if self.tokenizer:
            args += ["--tokenizer", self.tokenizer]
        engines = ("vllm",) * self.vllm + ("sglang",) * self.sglang
        return FleetOptions(engines=engines, model=self.model,  # type: ignore[arg-type]
                            time_scale=self.time_scale, sim_args=tuple(args),
                            tokenizer=self.tokenizer, block_size=self.block_size)

    def workload(self) -> Workload:
        return build_workload("shared-prefix", self.tokenizer, self.model_dump())


@dataclass(slots=True)
class CompareResult:
    config: CompareConfig
    summaries: list[StageSummary] = field(default_factory=list)
    oracle: dict[str, OracleResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def of(self, system: str) -> list[StageSummary]:
        return [s for s in self.summaries if s.system == system]

    def at(self, system: str, rate: float) -> StageSummary | None:
        return next((s for s in self.of(system) if s.offered == rate), None)


def sustained_rate(stages: Sequence[StageSummary], fraction: float) -> float | None:
    """The highest offered rate of the ladder (checked bottom up) with zero errors and completions
    keeping up with arrivals: requests/s at least `fraction` of the stage's real arrival rate
    (a system that falls behind builds a queue and its last requests end long after the last
    arrival). None when even the lowest stage fails."""
    best = None
    for s in sorted(stages, key=lambda s: s.offered or 0):
        arrivals = s.arrival_rate or s.offered
        if s.errors or s.offered is None or not arrivals or (
                s.requests_per_s < fraction * arrivals):
            break
        best = s.offered
    return best


def _oracle(cfg: CompareConfig, workload: Workload,
            plans: Sequence[StagePlan]) -> dict[str, OracleResult]:
    from llmd.kvcache import load_tokenizer

    replay = OracleReplay(load_tokenizer(cfg.tokenizer), pools=cfg.vllm + cfg.sglang,
                          blocks_per_pool=cfg.kv_cache_blocks, block_size=cfg.block_size,
                          model=cfg.model)
    return {plan.name: replay.replay(reqs) for plan, reqs in stage_requests(workload, plans)}


async def run_compare(cfg: CompareConfig,
                      on_system: Callable[[str, StageOutcome], None] | None = None
                      ) -> CompareResult:
    unknown = [s for s in cfg.systems if s not in SYSTEMS]
    if unknown:
        raise ConfigError(f"--systems: unknown {', '.join(unknown)}; choose from "
                          f"{', '.join(SYSTEMS)}")
    systems = [SYSTEMS[s] for s in cfg.systems]
    bins: dict[str, Path] = {}
    result = CompareResult(cfg)
    for venv in sorted({s.venv for s in systems if s.venv}):
        try:
            bins[venv] = await ensure_venv(PEERS[venv], cfg.root)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot install is reported, not fatal
            result.skipped[venv] = f"install failed: {exc}"
            log.warning("%s: %s", venv, exc)
    workload = await asyncio.to_thread(cfg.workload)
    out = cfg.output_dir
    await asyncio.to_thread(_save_workload, workload, out)
    plans = plan_stages(rates=cfg.rates, stage_duration_s=cfg.stage_duration_s, seed=cfg.seed)
    result.oracle = await asyncio.to_thread(_oracle, cfg, workload, plans)
    fleet = cfg.fleet()
    for system in systems:
        if system.venv and system.venv not in bins:
            result.skipped[system.name] = result.skipped.get(system.venv, "not installed")
            continue
        try:
            outcome = await _run_one(system, fleet, bins, cfg, workload, plans)
        except LlmdError as exc:  # one system that cannot start must not sink the others
            log.error("%s: %s", system.name, exc)
            result.skipped[system.name] = f"failed: {str(exc)[:300]}"
            continue
        result.summaries.extend(outcome.summaries)
        await asyncio.to_thread(write_outputs, outcome, out / system.name,
                                f"{system.name} (shared prefix)", {"system": system.name})
        if on_system:
            on_system(system.name, outcome)
    await asyncio.to_thread(_write_all, result, out, plans)
    return result


async def _run_one(system: SystemDef, fleet: FleetOptions, bins: dict[str, Path],
                   cfg: CompareConfig, workload: Workload,
                   plans: Sequence[StagePlan]) -> StageOutcome:
    async with running_system(system, fleet, bins) as running:
        return await run_stages(system.name, running.targets, cfg.model, workload, plans)


def _save_workload(workload: Workload, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_workload(workload, out / "workload.jsonl")


def _write_all(result: CompareResult, out: Path, plans: Sequence[StagePlan]) -> None:
    outcome = StageOutcome(summaries=result.summaries)
    meta = {"config": json.loads(result.config.model_dump_json()),
            "stages": [asdict(p) for p in plans],
            "oracle": {k: asdict(v) for k, v in result.oracle.items()},
            "skipped": result.skipped}
    write_outputs(outcome, out, "Router comparison: shared prefix, Poisson ladder", meta)
