#!/usr/bin/env python3
"""1, 2 and 4 EPP replicas sharing one view (issue 14): what replicas keep and what they cost.

The Router comparison's fleet and shared-prefix workload (`llmd bench compare`'s defaults: 2
vLLM- and 2 SGLang-dialect simulators with 512 KV blocks each, 24 groups of 1,024-token
prefixes), the same Poisson stages for every system, each system on a fresh stack
(`LocalStack(epp_replicas=N)`, what `llmd up --epp-replicas N` runs: Envoy round-robins the
ext_proc streams over the replicas, which share their approximate-index picks and in-flight
load over `zmq-mesh-syncer`; with the precise config every replica also follows every
simulator's KV events). Per stage: the cache-hit share, as a share of the same config's one
replica and of the oracle's (`llmd bench compare`'s definition), TTFT p90 and completed req/s;
per system: the EPP replicas' CPU seconds (user + system, from /proc, all replicas together)
per 1,000 requests over the whole run, and the same less what they use idle (scraping every
endpoint every 50 ms, and the sync's heartbeats: measured for 5 s before the first stage).

    .venv/bin/python bench/epp_replicas.py                          # about 8 minutes
    .venv/bin/python bench/epp_replicas.py --rates 16,64,128 --configs default

This machine has 2 cores: with 4 simulators, Envoy and the load generator on them, more
replicas cannot add routing throughput here; the CPU per request is what does not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from llmd.bench import cpu_seconds
from llmd.bench.compare import CompareConfig, _oracle
from llmd.bench.runner import plan_stages, run_stages
from llmd.bench.stats import StageSummary
from llmd.bench.systems import SYSTEMS, running_system

ROOT = Path(__file__).resolve().parents[1]
IDLE_S = 5.0
TOKENIZER = str((ROOT.parent / "shared" / "fixtures" / "tiny-llama").resolve())


@dataclass
class Run:
    system: str
    replicas: int
    stages: list[StageSummary]
    epp_cpu_per_1k: float
    busy_cpu_per_1k: float


async def run(configs: list[str], replicas: list[int], rates: list[float],
              duration_s: float) -> tuple[list[Run], dict[str, float]]:
    cfg = CompareConfig(tokenizer=TOKENIZER, rates=tuple(rates), stage_duration_s=duration_s,
                        output_dir=Path("/tmp/llmd-epp-replicas"))
    workload = await asyncio.to_thread(cfg.workload)
    plans = plan_stages(rates=cfg.rates, stage_duration_s=cfg.stage_duration_s, seed=cfg.seed)
    oracle = {k: v.share for k, v in
              (await asyncio.to_thread(_oracle, cfg, workload, plans)).items()}
    fleet = cfg.fleet()
    runs = []
    for config in configs:
        for n in replicas:
            name = f"llmd-{config}" + (f"-x{n}" if n > 1 else "")
            system = SYSTEMS[name]
            async with running_system(system, fleet) as running:
                idle0, t0 = cpu_seconds(running.epp_pids), time.monotonic()
                await asyncio.sleep(IDLE_S)
                idle = (cpu_seconds(running.epp_pids) - idle0) / (time.monotonic() - t0)
                before, started = cpu_seconds(running.epp_pids), time.monotonic()
                outcome = await run_stages(name, running.targets, cfg.model, workload, plans)
                used = cpu_seconds(running.epp_pids) - before
                busy = used - idle * (time.monotonic() - started)
            done = max(sum(s.requests for s in outcome.summaries), 1)
            runs.append(Run(name, n, outcome.summaries, used / done * 1000, busy / done * 1000))
            print(f"{name}: EPP CPU {runs[-1].epp_cpu_per_1k:.2f} s per 1,000 requests "
                  f"({runs[-1].busy_cpu_per_1k:.2f} above idle {idle:.3f} CPU s/s)", flush=True)
    return runs, oracle


def table(runs: list[Run], oracle: dict[str, float]) -> str:
    one = {(r.system.rsplit("-x", 1)[0], s.stage): s.cache_hit_share
           for r in runs if r.replicas == 1 for s in r.stages}
    lines = ["| system | replicas | stage | hit share | of 1 replica's | of the oracle's | "
             "TTFT p90 ms | req/s | EPP CPU s / 1k requests | above idle |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        base = r.system.rsplit("-x", 1)[0]
        for s in r.stages:
            ref = one.get((base, s.stage))
            lines.append(
                f"| {base} | {r.replicas} | {s.stage} | {s.cache_hit_share:.1%} | "
                + (f"{s.cache_hit_share / ref:.1%}" if ref else "–") + " | "
                + f"{s.cache_hit_share / oracle[s.stage]:.1%} | "
                + f"{(s.ttft_p90_s or float('nan')) * 1000:.1f} | {s.requests_per_s:.1f} | "
                + f"{r.epp_cpu_per_1k:.2f} | {r.busy_cpu_per_1k:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="default,precise-speculative",
                    help="llmd configs (comma list): default, precise-speculative")
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--rates", default="16,64,128", help="Poisson stages, req/s")
    ap.add_argument("--stage-duration-s", type=float, default=10.0)
    args = ap.parse_args()
    runs, oracle = asyncio.run(run(args.configs.split(","),
                                   [int(n) for n in args.replicas.split(",")],
                                   [float(r) for r in args.rates.split(",")],
                                   args.stage_duration_s))
    print()
    print(table(runs, oracle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
