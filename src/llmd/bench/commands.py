"""What the `llmd bench compare|overhead|crosscheck|report` commands run: each drives its
benchmark, prints its table and saves its JSON under the output directory."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from llmd.bench.compare import CompareConfig, run_compare
from llmd.bench.crosscheck import CrossCheckConfig, crosscheck_table, run_crosscheck
from llmd.bench.overhead import OverheadConfig, overhead_table, run_overhead
from llmd.bench.report import markdown_table

__all__ = ["compare_main", "crosscheck_main", "overhead_main", "report_main"]


async def compare_main(cfg: CompareConfig) -> None:
    console = Console()
    result = await run_compare(cfg)
    console.print(markdown_table(result.summaries), markup=False)
    for stage, o in result.oracle.items():
        console.print(f"oracle {stage}: {o.share:.1%} (infinite cache {o.first_seen_share:.1%})")
    if result.skipped:
        console.print(f"skipped: {result.skipped}")
    plot = cfg.output_dir / "ttft_throughput.png"
    console.print(f"wrote {cfg.output_dir}/results.json, results.md"
                  + (", ttft_throughput.png" if plot.exists() else
                     " (no plot: pip install -e '.[bench]' for matplotlib)"))


async def overhead_main(cfg: OverheadConfig) -> None:
    console = Console()
    result = await run_overhead(cfg, lambda c: console.print(
        f"{c.system} c={c.concurrency}: {c.requests_per_s:.0f} req/s, mean {c.mean_ms:.2f} ms"))
    console.print(overhead_table(result), markup=False)
    await asyncio.to_thread(_write, cfg.output_dir / "overhead.json", {
        "config": json.loads(cfg.model_dump_json()), "cells": [asdict(c) for c in result.cells],
        "skipped": result.skipped})
    console.print(f"wrote {cfg.output_dir}/overhead.json")


async def crosscheck_main(cfg: CrossCheckConfig) -> None:
    console = Console()
    rows = await run_crosscheck(cfg)
    console.print(crosscheck_table(rows), markup=False)
    await asyncio.to_thread(_write, cfg.output_dir / "crosscheck.json", {
        "config": json.loads(cfg.model_dump_json()), "rows": [asdict(r) for r in rows]})
    console.print(f"wrote {cfg.output_dir}/crosscheck.json")


def report_main(results: Path, docs: Path, img_dir: Path) -> list[str]:
    from llmd.bench._readings import COMMANDS, READINGS
    from llmd.bench.docs import write_report

    return write_report(results, docs, img_dir, COMMANDS, READINGS)


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
