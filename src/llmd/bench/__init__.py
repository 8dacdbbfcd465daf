"""Benchmarks: seeded workloads, open/closed-loop load, summaries, reports (`llmd bench`)."""

from __future__ import annotations

from llmd.bench.loadgen import RequestResult, closed_loop, open_loop, send_one
from llmd.bench.oracle import OracleResult, oracle_hit_share
from llmd.bench.procstat import cpu_seconds, peak_rss_kib, process_tree
from llmd.bench.report import markdown_table, plot, write_json
from llmd.bench.runner import StageOutcome, StagePlan, plan_stages, run_stages
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
    "OracleResult",
    "RandomParams",
    "RequestResult",
    "SharedPrefixParams",
    "StageOutcome",
    "StagePlan",
    "StageSummary",
    "Workload",
    "closed_loop",
    "cpu_seconds",
    "load_workload",
    "markdown_table",
    "multi_turn",
    "open_loop",
    "oracle_hit_share",
    "peak_rss_kib",
    "percentile",
    "plan_stages",
    "plot",
    "process_tree",
    "random_prompts",
    "run_stages",
    "save_workload",
    "send_one",
    "shared_prefix",
    "summarize",
    "write_json",
]
