#!/usr/bin/env python3
"""What llm-d's flow control (`featureGates: [flowControl]`) costs per request in `llmd epp`.

Two `LocalStack`s of zero-latency simulators (one vLLM- and one SGLang-dialect by default,
`--time-scale 0`), identical but for the EPP config: `off` is llm-d's default scorers, `on` the
same plus the gate (llm-d's flow-control defaults: utilization-detector, global-strict fairness,
FCFS ordering, 60 s TTL). The same `wrk` stages (`epp_overhead.py`'s script: non-streaming
`/v1/completions`, ~600-character unique prompts, 16 output tokens) run through Envoy against
each, interleaved `--repeats` times; the table has the medians and the on/off ratios of
throughput, latency and EPP CPU (user + system from /proc, per request, including the EPP's
50 ms scrapes), and the largest share of requests that waited in the queue (0.1 ms or more,
from the EPP's `llm_d_epp_flow_control_request_queue_duration_seconds`).

The pool is meant never to be saturated here, so requests take flow control's fast path (one
saturation check, no queue): the cost every request pays with the gate on; the `queued`
column shows when the utilization detector saw otherwise. The queued path is
measured in-process: `FlowQueues` push + pop per request with one flow and with 64 flows under
round robin (µs per request, `--queue-items` items), as is the fast path alone
(`FlowController.admit` on an idle pool).

    .venv/bin/python bench/flow_control.py                          # brief: 1 repeat, 5 s
    .venv/bin/python bench/flow_control.py --repeats 3 --duration-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from llmd.bench.procstat import cpu_seconds
from llmd.engines import ENGINES, EndpointMetrics, EngineName
from llmd.epp import Datastore, InferenceRequest, load_config, parse_endpoint_flag
from llmd.epp.config import DEFAULT_CONFIG
from llmd.epp.flow_control import FlowController
from llmd.epp.flow_queue import FlowQueues
from llmd.epp.metrics import FlowControlMetrics
from llmd.epp.plugins import QueueItem
from llmd.gateway import LocalStack, StackSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epp_overhead import WRK_SCRIPT, Sample, wrk  # noqa: E402

GATE_ON = DEFAULT_CONFIG.replace("kind: EndpointPickerConfig\n",
                                 "kind: EndpointPickerConfig\nfeatureGates: [flowControl]\n")
CONFIGS = {"off": DEFAULT_CONFIG, "on": GATE_ON}
QUEUE_HIST = "llm_d_epp_flow_control_request_queue_duration_seconds"


async def queued_counts(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(requests through flow control, those that waited 0.1 ms or more) so far."""
    async with http.get(url) as resp:
        text = await resp.text()
    total = fast = 0.0
    for line in text.splitlines():
        if line.startswith(QUEUE_HIST + "_count"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(QUEUE_HIST + "_bucket") and 'le="0.0001"' in line:
            fast += float(line.rsplit(" ", 1)[1])
    return total, total - fast


async def measure(stack: LocalStack, script: Path, concurrency: int, duration_s: float,
                  http: aiohttp.ClientSession) -> tuple[Sample, float, float]:
    """One wrk stage through the gateway: the sample, the EPP's CPU ms per request and the
    share of requests that waited in flow control's queue (0 with the gate off)."""
    assert stack.epp is not None
    total0, waited0 = await queued_counts(http, stack.epp.metrics_url)
    before = cpu_seconds([stack.epp.pid])
    sample = await wrk(stack.url, script, concurrency, duration_s)
    used = cpu_seconds([stack.epp.pid]) - before
    total, waited = await queued_counts(http, stack.epp.metrics_url)
    share = (waited - waited0) / (total - total0) if total > total0 else 0.0
    return sample, used / max(1.0, sample.rps * duration_s) * 1000, share


Runs = dict[tuple[int, str], list[tuple[Sample, float, float]]]


async def run(args: argparse.Namespace) -> Runs:
    engines: tuple[EngineName, ...] = tuple(e for e in ENGINES for _ in range(args.per_engine))
    script = Path(tempfile.mkdtemp(prefix="llmd-wrk-")) / "load.lua"
    script.write_text(WRK_SCRIPT.replace("MODEL", "llmd-sim"))
    out: Runs = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for rep in range(args.repeats):
            for gate, config in CONFIGS.items():
                spec = StackSpec(engines=engines, time_scale=0, epp_config_text=config)
                async with LocalStack(spec) as stack:
                    await wrk(stack.url, script, 16, args.warmup_s)
                    for conc in args.concurrency:
                        sample, cpu_ms, waited = await measure(stack, script, conc,
                                                               args.duration_s, http)
                        out.setdefault((conc, gate), []).append((sample, cpu_ms, waited))
                        print(f"rep {rep + 1} c={conc:<3} gate {gate:>3}: {sample.rps:6.0f} "
                              f"req/s p50 {sample.p50_ms:6.2f} ms p99 {sample.p99_ms:6.2f} ms "
                              f"EPP {cpu_ms:.3f} CPU-ms/req queued {waited:.1%} "
                              f"errors {sample.errors}", file=sys.stderr, flush=True)
    return out


def queue_cost_us(items: int, flows: int) -> float:
    """µs per request for push + pop through `FlowQueues` (round robin when flows > 1)."""
    text = ("apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\nfeatureGates: [flowControl]\n"
            "plugins: [{type: round-robin-fairness-policy, name: rr}]\n"
            "flowControl:\n  defaultPriorityBand: {fairnessPolicyRef: rr, maxRequests: 1G}\n")
    config = load_config(text=text).flow_control
    assert config is not None
    queues = FlowQueues(config)
    batch = [QueueItem(str(i), f"f{i % flows}", 0, 600, float(i), math.inf, i)
             for i in range(items)]
    started = time.perf_counter()
    for item in batch:
        queues.full(0, item.size_bytes)
        queues.push(item)
    while queues.pop(lambda p: True) is not None:
        pass
    return (time.perf_counter() - started) / items * 1e6


def admit_cost_us(n: int) -> float:
    """µs per request of `FlowController.admit` on an idle two-endpoint pool (the fast path:
    one saturation check, one histogram observation), CPU time in-process."""
    store = Datastore()
    specs = [parse_endpoint_flag(f"10.0.0.{i}:8000") for i in (1, 2)]
    store.set_endpoints(specs)
    for spec in specs:
        store.update_metrics(spec.id, EndpointMetrics())
    config = load_config(text=GATE_ON)
    assert config.flow_control is not None
    flow = FlowController(config.flow_control, store, config.detector,
                          FlowControlMetrics(CollectorRegistry()))
    request = InferenceRequest("bench")

    async def loop() -> float:
        started = time.process_time()
        for _ in range(n):
            await flow.admit(request, 600)
        return (time.process_time() - started) / n * 1e6

    return asyncio.run(loop())


def table(results: Runs) -> str:
    rows = ["| stage | gate | req/s | p50 ms | p99 ms | EPP CPU ms / req | queued | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for conc in sorted({c for c, _ in results}):
        med: dict[str, tuple[float, float, float, float]] = {}
        for gate in CONFIGS:
            runs = results[(conc, gate)]
            med[gate] = (statistics.median(s.rps for s, _, _ in runs),
                         statistics.median(s.p50_ms for s, _, _ in runs),
                         statistics.median(s.p99_ms for s, _, _ in runs),
                         statistics.median(c for _, c, _ in runs))
            errors = sum(s.errors for s, _, _ in runs)
            waited = max(w for _, _, w in runs)
            rps, p50, p99, cpu = med[gate]
            rows.append(f"| closed c={conc} | {gate} | {rps:.0f} | {p50:.2f} | {p99:.2f} | "
                        f"{cpu:.3f} | {waited:.1%} | {errors} |")
        on, off = med["on"], med["off"]
        ratios.append(f"| closed c={conc} | {on[0] / off[0]:.2f} | {on[1] / off[1]:.2f} | "
                      f"{on[2] / off[2]:.2f} | {on[3] / off[3]:.2f} |")
    return "\n".join([*rows, "", "| stage | req/s on/off | p50 on/off | p99 on/off | "
                      "EPP CPU on/off |", "|---|---:|---:|---:|---:|", *ratios])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--per-engine", type=int, default=1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--queue-items", type=int, default=100_000)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(table(results))
    print()
    print(f"fast path (idle pool): {admit_cost_us(args.queue_items):.2f} µs per request "
          "(FlowController.admit, CPU time)")
    for flows in (1, 64):
        print(f"queued path, {flows} flow(s): "
              f"{queue_cost_us(args.queue_items, flows):.2f} µs per request (push + pop)")


if __name__ == "__main__":
    main()
