"""`llmd bench run`: build (or load) a workload, drive one target, write JSON, Markdown, PNG."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmd.bench.report import markdown_table, plot, write_json
from llmd.bench.runner import StageOutcome, plan_stages, run_stages
from llmd.bench.workload import (
    MultiTurnParams,
    RandomParams,
    SharedPrefixParams,
    Workload,
    load_workload,
    multi_turn,
    random_prompts,
    save_workload,
    shared_prefix,
)
from llmd.errors import ConfigError

__all__ = ["WORKLOADS", "build_workload", "load_or_build", "run_bench", "write_outputs"]

WORKLOADS = ("shared-prefix", "multi-turn", "random")


def build_workload(kind: str, tokenizer: str | None, params: dict[str, Any]) -> Workload:
    """A seeded workload of `kind` with `params` (unknown keys for that kind are ignored)."""
    from llmd.kvcache import load_tokenizer

    tok = load_tokenizer(tokenizer)

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    model: type[SharedPrefixParams] | type[MultiTurnParams] | type[RandomParams]
    if kind == "shared-prefix":
        model = SharedPrefixParams
    elif kind == "multi-turn":
        model = MultiTurnParams
    elif kind == "random":
        model = RandomParams
    else:
        raise ConfigError(f"--workload {kind!r}: expected one of {', '.join(WORKLOADS)}")
    known = {k: v for k, v in params.items() if k in model.model_fields and v is not None}
    p = model(**known)
    if isinstance(p, SharedPrefixParams):
        return shared_prefix(p, count)
    if isinstance(p, MultiTurnParams):
        return multi_turn(p, count)
    return random_prompts(p, count)


def write_outputs(outcome: StageOutcome, out: Path, title: str, meta: dict[str, Any]) -> None:
    """results.json, results.md, requests.jsonl and (with matplotlib) ttft_throughput.png."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(outcome.summaries, out / "results.json", meta)
    (out / "results.md").write_text(f"# {title}\n\n" + markdown_table(outcome.summaries))
    with (out / "requests.jsonl").open("w") as f:
        for stage, results in outcome.results.items():
            for r in results:
                f.write(json.dumps({"stage": stage, **asdict(r)}) + "\n")
    (out / "ttft_throughput.png").unlink(missing_ok=True)  # never leave an older run's plot
    if any(s.offered is not None for s in outcome.summaries):
        try:
            plot(outcome.summaries, out / "ttft_throughput.png", title)
        except ImportError:
            pass  # matplotlib is the `bench` extra; the JSON and Markdown are still written


async def run_bench(*, target: str, model: str, workload: Workload, rates: Sequence[float],
                    concurrency: Sequence[int], output_dir: Path, system: str,
                    stage_duration_s: float, requests_per_stage: int | None,
                    seed: int) -> StageOutcome:
    await asyncio.to_thread(_save, workload, output_dir)
    plans = plan_stages(rates=rates, concurrency=concurrency, stage_duration_s=stage_duration_s,
                        requests_per_stage=requests_per_stage, seed=seed)
    outcome = await run_stages(system, target, model, workload, plans)
    meta = {"target": target, "model": model, "workload": workload.name,
            "workload_params": workload.params, "stages": [asdict(p) for p in plans]}
    await asyncio.to_thread(write_outputs, outcome, output_dir,
                            f"llmd bench run: {system} ({workload.name})", meta)
    return outcome


def _save(workload: Workload, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    save_workload(workload, output_dir / "workload.jsonl")


def load_or_build(workload_file: str | None, kind: str, tokenizer: str | None,
                  params: dict[str, Any]) -> Workload:
    if workload_file:
        return load_workload(Path(workload_file))
    return build_workload(kind, tokenizer, params)
