#!/usr/bin/env python3
"""One pool-wide `peakPrefillThroughput` against per-engine calibration, on a mixed fleet.

The fleet: `--vllm` vLLM-dialect and `--sglang` SGLang-dialect `llmd sim` processes whose
SGLang endpoints prefill about twice as fast (`--prefill-per-token-ms`: by default 1/15,928 and
1/30,720 ms per token, llm-d's published Qwen3-32B TP2 H100 numbers) and admit at most
`--max-num-seqs` sequences each, so that prefill is a queue: an endpoint sent more prompt
tokens than it prefills waits (the simulator's prefills otherwise run side by side).

In front of it: llmd (Envoy + `llmd epp`, fronting the running simulators as `llmd up
--endpoint URL,engine=...` does) with llm-d v1.0's default config
(`llmd.epp.config.v1_default_config`) in variants that differ only in `peakPrefillThroughput`:

- `pool`: one value for the pool, llm-d's plugin default 15,928 (vLLM's number);
- `calibrated`: per engine, as `llmd calibrate --endpoint URL ...` measures it on this fleet
  (the same probes, `llmd.epp.calibrate.calibrate`, run on every variant's fresh fleet so that
  all start from the same state; this variant uses what was measured on its own fleet);
- `pool-sglang`: one value for the pool, SGLang's 30,720.

Every variant gets a fresh fleet and stack, the same seeded workload and Poisson arrivals, and
the variants interleave `--repeats` times. Printed: the measured throughputs, then per stage
the medians over repeats of TTFT p50/p90, output tokens/s and each engine's share of the
requests (from the simulators' `x-llmd-served-by`), and the ratios against `pool` in the same
run.

Capacity, by default (4,096-token prompts of which 3,840 are never cached, 4 output tokens, 2
sequences per simulator): a vLLM-dialect simulator serves about 7 requests/s, an SGLang-dialect
one about 12, so the fleet about 38; an even split runs the vLLM ones out at about 29. The
default ladder (16, 24, 30, 36 req/s) spans both.

    .venv/bin/python bench/calibration.py                                  # defaults below
    .venv/bin/python bench/calibration.py --rates 24,36 --repeats 1 --stage-duration-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmd._proc import Supervisor
from llmd.bench import StageSummary, Workload, plan_stages, run_stages
from llmd.bench.output import build_workload
from llmd.engines import EngineName
from llmd.epp.calibrate import Calibration, calibrate, snippet
from llmd.epp.config import v1_default_config
from llmd.gateway import LocalStack, StackSpec
from llmd.sim.fleet import FleetEndpoint, FleetSpec, start_fleet

LLM_D_VLLM, LLM_D_SGLANG = 15928, 30720
"""llm-d's published peakPrefillThroughput (Qwen3-32B, TP2, H100), tok/s."""
VARIANTS = ("pool", "calibrated", "pool-sglang")
MODEL = "llmd-sim"


@dataclass(slots=True)
class Run:
    variant: str
    repeat: int
    calibration: list[Calibration]
    peak: Any
    summaries: list[StageSummary]
    shares: dict[str, dict[str, float]]
    """Stage -> engine -> share of the stage's successful requests."""


def peak_for(variant: str, measured: Sequence[Calibration]) -> Any:
    if variant == "pool":
        return LLM_D_VLLM
    if variant == "pool-sglang":
        return LLM_D_SGLANG
    import yaml

    return yaml.safe_load(snippet(measured))["peakPrefillThroughput"]


async def one_run(args: argparse.Namespace, variant: str, repeat: int,
                  workload: Workload) -> Run:
    engines: tuple[EngineName, ...] = ("vllm",) * args.vllm + ("sglang",) * args.sglang
    spec = FleetSpec(engines=engines, model=MODEL, port_base=0)
    per_token = {"vllm": args.vllm_prefill_per_token_ms,
                 "sglang": args.sglang_prefill_per_token_ms}
    common = ("--time-scale", "1", "--max-num-seqs", str(args.max_num_seqs),
              "--max-model-len", str(args.max_model_len),
              "--prefill-overhead-ms", str(args.prefill_overhead_ms))
    per_sim = {name: ("--prefill-per-token-ms", repr(per_token[engine]))
               for name, engine in zip(spec.child_names(), engines, strict=True)}
    async with Supervisor() as sup:
        fleet = await start_fleet(sup, FleetSpec(engines=engines, model=MODEL, port_base=0,
                                                 sim_args=common, per_sim_args=per_sim))
        timeout = aiohttp.ClientTimeout(total=120, sock_read=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            measured = [await calibrate(http, ep.url, probes=args.probes,
                                        probe_tokens=args.probe_tokens, seed=i)
                        for i, ep in enumerate(fleet)]
        peak = peak_for(variant, measured)
        stack_spec = StackSpec(model=MODEL, external=tuple(
            f"{ep.url},engine={ep.engine}" for ep in fleet),
            epp_config_text=v1_default_config(peak))
        async with LocalStack(stack_spec) as stack:
            plans = plan_stages(rates=args.rates, stage_duration_s=args.stage_duration_s,
                                seed=args.seed)
            outcome = await run_stages(f"{variant}#{repeat}", stack.url, MODEL, workload,
                                       plans, show_progress=False)
    shares = {stage: engine_shares(results, fleet)
              for stage, results in outcome.results.items()}
    return Run(variant, repeat, measured, peak, outcome.summaries, shares)


def engine_shares(results: Sequence[Any], fleet: Sequence[FleetEndpoint]) -> dict[str, float]:
    engine_of = {ep.address: ep.engine for ep in fleet}
    served = [engine_of.get(r.served_by or "", "?") for r in results if r.error is None]
    return {e: served.count(e) / len(served) for e in ("vllm", "sglang")} if served else {}


async def run_all(args: argparse.Namespace) -> list[Run]:
    workload = await asyncio.to_thread(build_workload, "shared-prefix", None, {
        "num_groups": args.num_groups, "num_prompts_per_group": args.num_prompts_per_group,
        "system_prompt_len": args.system_prompt_len, "question_len": args.question_len,
        "output_len": args.output_len, "seed": args.seed})
    runs = []
    for rep in range(args.repeats):
        for variant in args.variants:
            run = await one_run(args, variant, rep, workload)
            runs.append(run)
            for s in run.summaries:
                share = run.shares.get(s.stage, {})
                print(f"rep {rep + 1} {variant:>11} {s.stage}: {s.requests_per_s:6.2f} req/s "
                      f"{s.output_tokens_per_s:7.0f} tok/s TTFT p50 {ms(s.ttft_p50_s)} p90 "
                      f"{ms(s.ttft_p90_s)} ms sglang {share.get('sglang', 0):.0%} "
                      f"errors {s.errors}", file=sys.stderr, flush=True)
    return runs


def ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def median(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}"


def report(args: argparse.Namespace, runs: Sequence[Run]) -> str:
    lines = ["Measured on each fresh fleet (`llmd calibrate` probes; tok/s per engine, "
             "token-weighted, min-max over runs):", "",
             "| engine | configured prefill | measured tok/s |", "|---|---:|---:|"]
    by_engine: dict[str, list[float]] = {}
    for run in runs:
        pooled = snippet(run.calibration)
        for line in pooled.splitlines()[2:]:
            engine, value = line.strip().split(": ")
            by_engine.setdefault(engine, []).append(float(value))
    per_token = {"vllm": args.vllm_prefill_per_token_ms,
                 "sglang": args.sglang_prefill_per_token_ms}
    for engine, values in sorted(by_engine.items(), reverse=True):
        lines.append(f"| {engine} | {per_token[engine]} ms/token ({1000 / per_token[engine]:,.0f} "
                     f"tok/s) + {args.prefill_overhead_ms:g} ms | {min(values):,.0f}-"
                     f"{max(values):,.0f} |")
    stages = [s.stage for s in runs[0].summaries]
    rows = ["", "| stage | peakPrefillThroughput | req/s | out tok/s | TTFT p50 ms | "
            "TTFT p90 ms | to SGLang | errors |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    ratios = ["", "| stage | variant | TTFT p50 / pool | TTFT p90 / pool | tok/s / pool |",
              "|---|---|---:|---:|---:|"]
    for stage in stages:
        base: dict[str, float | None] = {}
        for variant in args.variants:
            mine = [r for r in runs if r.variant == variant]
            summ = [next(s for s in r.summaries if s.stage == stage) for r in mine]
            p50 = median([s.ttft_p50_s for s in summ])
            p90 = median([s.ttft_p90_s for s in summ])
            tps = median([s.output_tokens_per_s for s in summ])
            rps = median([s.requests_per_s for s in summ])
            sgl = median([r.shares.get(stage, {}).get("sglang") for r in mine])
            errors = sum(s.errors for s in summ)
            rows.append(f"| {stage} | {describe(variant, mine[0].peak)} | {rps:.1f} | "
                        f"{tps:.0f} | {ms(p50)} | {ms(p90)} | "
                        f"{'–' if sgl is None else f'{sgl:.0%}'} | {errors} |")
            if variant == "pool":
                base = {"p50": p50, "p90": p90, "tps": tps}
            else:
                ratios.append(f"| {stage} | {variant} | {ratio(p50, base.get('p50'))} | "
                              f"{ratio(p90, base.get('p90'))} | {ratio(tps, base.get('tps'))} |")
    return "\n".join(lines + rows + ratios)


def describe(variant: str, peak: Any) -> str:
    if isinstance(peak, Mapping):
        engines = peak.get("engines", peak)
        return f"{variant}: " + ", ".join(f"{e} {v:,.0f}" for e, v in engines.items())
    return f"{variant}: {peak:,}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm", type=int, default=2)
    ap.add_argument("--sglang", type=int, default=2)
    ap.add_argument("--vllm-prefill-per-token-ms", type=float, default=round(1000 / LLM_D_VLLM, 4))
    ap.add_argument("--sglang-prefill-per-token-ms", type=float,
                    default=round(1000 / LLM_D_SGLANG, 4))
    ap.add_argument("--prefill-overhead-ms", type=float, default=10.0)
    ap.add_argument("--max-num-seqs", type=int, default=2)
    ap.add_argument("--max-model-len", type=int, default=8192)
    ap.add_argument("--num-groups", type=int, default=64)
    ap.add_argument("--num-prompts-per-group", type=int, default=40)
    ap.add_argument("--system-prompt-len", type=int, default=256)
    ap.add_argument("--question-len", type=int, default=3840)
    ap.add_argument("--output-len", type=int, default=4)
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                    default=[16.0, 24.0, 30.0, 36.0])
    ap.add_argument("--stage-duration-s", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=VARIANTS)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--probe-tokens", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.variants[0] != "pool" or not set(args.variants) <= set(VARIANTS):
        ap.error(f"--variants: 'pool' first, then any of {', '.join(VARIANTS[1:])}")
    runs = asyncio.run(run_all(args))
    print(report(args, runs))


if __name__ == "__main__":
    main()
