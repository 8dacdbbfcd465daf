"""Benchmarks: seeded workloads, open/closed-loop load, summaries, reports (`llmd bench`)."""

from __future__ import annotations

from llmd.bench.loadgen import RequestResult, closed_loop, open_loop, send_one
from llmd.bench.report import markdown_table, plot, write_json
from llmd.bench.stats import StageSummary, percentile, summarize
from llmd.bench.workload import (
    BenchRequest,
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

__all__ = [
    "BenchRequest",
    "MultiTurnParams",
    "RandomParams",
    "RequestResult",
    "SharedPrefixParams",
    "StageSummary",
    "Workload",
    "closed_loop",
    "load_workload",
    "markdown_table",
    "multi_turn",
    "open_loop",
    "percentile",
    "plot",
    "random_prompts",
    "save_workload",
    "send_one",
    "shared_prefix",
    "summarize",
    "write_json",
]
