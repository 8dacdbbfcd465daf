"""External cross-check: inference-perf (its own venv, Python 3.12) and `llmd bench` drive the
same llmd stack with the same shared-prefix parameters, rate and duration; their TTFT and
throughput should agree within noise.

Each tool gets a fresh stack (cold caches). inference-perf generates its own random-token
prompts with the same tokenizer (a local path), so lengths match but texts differ; both send
streaming `/v1/completions` with `ignore_eos` and Poisson arrivals.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from llmd.bench.output import build_workload
from llmd.bench.peers import PEERS, PeerError, ensure_venv
from llmd.bench.runner import plan_stages, run_stages
from llmd.bench.systems import SYSTEMS, FleetOptions, running_system
from llmd.config import LlmdModel

__all__ = ["CrossCheckConfig", "CrossCheckRow", "inference_perf_config", "run_crosscheck"]


class CrossCheckConfig(LlmdModel):
    system: str = "llmd-default"
    rate: float = Field(8.0, gt=0)
    duration_s: int = Field(30, gt=0)
    num_groups: int = 24
    num_prompts_per_group: int = 48
    system_prompt_len: int = 384
    """inference-perf caps generated texts at the tokenizer's model_max_length (512 here)."""
    question_len: int = 64
    output_len: int = 32
    seed: int = 0
    tokenizer: str
    fleet: FleetOptions = FleetOptions()
    model: str = "llmd-sim"
    root: Path = Path(".")
    output_dir: Path = Path("bench/results/crosscheck")


@dataclass(frozen=True, slots=True)
class CrossCheckRow:
    tool: str
    requests: int
    errors: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_mean_ms: float | None
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    itl_mean_ms: float | None
    cache_hit_share: float | None


def inference_perf_config(cfg: CrossCheckConfig, base_url: str, out: Path) -> dict[str, Any]:
    return {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "shared_prefix", "shared_prefix": {
            "num_groups": cfg.num_groups, "num_prompts_per_group": cfg.num_prompts_per_group,
            "system_prompt_len": cfg.system_prompt_len, "question_len": cfg.question_len,
            "output_len": cfg.output_len, "seed": cfg.seed}},
        "load": {"type": "poisson", "stages": [{"rate": cfg.rate, "duration": cfg.duration_s}],
                 "num_workers": 2},
        "server": {"type": "vllm", "model_name": cfg.model, "base_url": base_url,
                   "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(Path(cfg.tokenizer).resolve())},
        "report": {"request_lifecycle": {"summary": True, "per_stage": True}},
        "storage": {"local_storage": {"path": str(out.resolve())}},
    }


def _ms(section: dict[str, Any] | None, key: str) -> float | None:
    if not section or section.get(key) is None:
        return None
    return float(section[key]) * 1000


def parse_inference_perf(out: Path) -> CrossCheckRow:
    """Read inference-perf's summary_lifecycle_metrics.json (seconds → ms)."""
    data = json.loads((out / "summary_lifecycle_metrics.json").read_text())
    success = data.get("successes", {})
    lat = success.get("latency", {})
    tp = success.get("throughput", {})
    ttft = lat.get("time_to_first_token")
    itl = lat.get("inter_token_latency")
    failures = data.get("failures", {}).get("count", 0)
    return CrossCheckRow(
        tool="inference-perf 0.7.0", requests=int(success.get("count", 0)) + int(failures),
        errors=int(failures), requests_per_s=float(tp.get("requests_per_sec", 0.0)),
        output_tokens_per_s=float(tp.get("output_tokens_per_sec", 0.0)),
        ttft_mean_ms=_ms(ttft, "mean"), ttft_p50_ms=_ms(ttft, "median"),
        ttft_p90_ms=_ms(ttft, "p90"), itl_mean_ms=_ms(itl, "mean"),
        cache_hit_share=None)


async def _inference_perf(cfg: CrossCheckConfig, bin_dir: Path, base_url: str,
                          out: Path) -> CrossCheckRow:
    config_path = await asyncio.to_thread(_write_config, cfg, base_url, out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = await asyncio.create_subprocess_exec(
        str(bin_dir / "inference-perf"), "--config_file", str(config_path), cwd=out, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(cfg.duration_s * 4 + 180):
            stdout, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PeerError("inference-perf did not finish in time") from None
    await asyncio.to_thread((out / "inference-perf.log").write_bytes, stdout)
    if proc.returncode != 0:
        tail = "\n".join(stdout.decode(errors="replace").splitlines()[-20:])
        raise PeerError(f"inference-perf exited with {proc.returncode}:\n{tail}")
    return await asyncio.to_thread(parse_inference_perf, out)


def _write_config(cfg: CrossCheckConfig, base_url: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yml"
    path.write_text(yaml.safe_dump(inference_perf_config(cfg, base_url, out)))
    return path


async def run_crosscheck(cfg: CrossCheckConfig) -> list[CrossCheckRow]:
    bin_dir = await ensure_venv(PEERS["inference-perf"], cfg.root)
    system = SYSTEMS[cfg.system]
    workload = await asyncio.to_thread(build_workload, "shared-prefix", cfg.tokenizer,
                                       cfg.model_dump())
    plans = plan_stages(rates=[cfg.rate], stage_duration_s=cfg.duration_s, seed=cfg.seed)
    async with running_system(system, cfg.fleet) as running:
        outcome = await run_stages("llmd bench", running.targets, cfg.model, workload, plans)
    s = outcome.summaries[0]
    ours = CrossCheckRow(
        "llmd bench", s.requests, s.errors, s.requests_per_s, s.output_tokens_per_s,
        _mean_ms([r.ttft_s for r in outcome.results[plans[0].name]]),
        _x1000(s.ttft_p50_s), _x1000(s.ttft_p90_s),
        _mean_ms([r.itl_s for r in outcome.results[plans[0].name]]), s.cache_hit_share)
    async with running_system(system, cfg.fleet) as running:
        assert isinstance(running.targets, str)
        theirs = await _inference_perf(cfg, bin_dir, running.targets,
                                       (cfg.output_dir / "inference-perf").resolve())
    return [ours, theirs]


def _x1000(v: float | None) -> float | None:
    return None if v is None else v * 1000


def _mean_ms(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) * 1000 if xs else None


def crosscheck_table(rows: list[CrossCheckRow]) -> str:
    def f(v: float | None, spec: str = ".1f") -> str:
        return "–" if v is None else format(v, spec)

    head = ("| tool | requests | errors | req/s | output tok/s | TTFT mean ms | TTFT p50 ms | "
            "TTFT p90 ms | ITL mean ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    return head + "\n".join(
        f"| {r.tool} | {r.requests} | {r.errors} | {r.requests_per_s:.2f} | "
        f"{r.output_tokens_per_s:.0f} | {f(r.ttft_mean_ms)} | {f(r.ttft_p50_ms)} | "
        f"{f(r.ttft_p90_ms)} | {f(r.itl_mean_ms, '.2f')} |" for r in rows) + "\n"
