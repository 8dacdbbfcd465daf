"""`llmd bench`: load any OpenAI endpoint; compare llmd with peer routers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from llmd.cli._app import LOG_FORMAT, app
from llmd.errors import LlmdError

T = TypeVar("T")

bench_app = typer.Typer(
    help="Benchmarks: load any OpenAI endpoint; compare llmd with peer routers.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _floats(text: str | None, flag: str) -> list[float]:
    """A comma list of positive numbers; anything else is a usage error naming the flag (exit 2)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        values = [0.0]
    if not all(v > 0 and v != float("inf") for v in values):
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers > 0, e.g. 1,2,4",
                                 param_hint=flag)
    return values


def _config(source: str, build: Callable[[], T]) -> T:
    """Build a bench config from flags; a bad value exits 2 naming the field, no traceback."""
    from pydantic import ValidationError

    from llmd.config import config_error

    try:
        return build()
    except ValidationError as exc:
        typer.echo(str(config_error(exc, source)), err=True)
        raise typer.Exit(2) from None


def _ints(text: str | None, flag: str) -> list[int]:
    values = _floats(text, flag)
    if any(v != int(v) for v in values):
        raise typer.BadParameter(
            f"{text!r}: expected comma-separated whole numbers >= 1, e.g. 1,64", param_hint=flag)
    return [int(v) for v in values]


def _run_bench_command(coro: Awaitable[object]) -> None:
    logging.basicConfig(level="WARNING", format=LOG_FORMAT)
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except (LlmdError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@bench_app.command("run")
def bench_run(
    target: Annotated[str, typer.Option(help="base URL of an OpenAI-compatible server")],
    model: Annotated[str, typer.Option(help="model name sent in every request")],
    workload: Annotated[str, typer.Option(
        help="shared-prefix, multi-turn or random")] = "shared-prefix",
    workload_file: Annotated[str | None, typer.Option(
        help="replay a saved workload.jsonl instead")] = None,
    tokenizer: Annotated[str | None, typer.Option(
        help="tokenizer.json (or dir) that counts lengths")] = None,
    num_groups: Annotated[int | None, typer.Option(help="shared-prefix: groups")] = None,
    num_prompts_per_group: Annotated[int | None, typer.Option(
        help="shared-prefix: prompts per group")] = None,
    system_prompt_len: Annotated[int | None, typer.Option(
        help="shared-prefix/multi-turn: system prompt tokens")] = None,
    question_len: Annotated[int | None, typer.Option(help="shared-prefix: question tokens")] = None,
    output_len: Annotated[int | None, typer.Option(help="output tokens (ignore_eos)")] = None,
    num_sessions: Annotated[int | None, typer.Option(help="multi-turn: sessions")] = None,
    turns: Annotated[int | None, typer.Option(help="multi-turn: turns per session")] = None,
    user_len: Annotated[int | None, typer.Option(help="multi-turn: user message tokens")] = None,
    num_prompts: Annotated[int | None, typer.Option(help="random: prompts")] = None,
    input_len: Annotated[int | None, typer.Option(help="random: prompt tokens")] = None,
    api: Annotated[str | None, typer.Option(help="shared-prefix: completion or chat")] = None,
    seed: Annotated[int, typer.Option(help="workload and arrival seed")] = 0,
    rates: Annotated[str | None, typer.Option(help="Poisson ladder, req/s, e.g. 1,2,4")] = None,
    concurrency: Annotated[str | None, typer.Option(
        help="closed-loop concurrencies, e.g. 1,64")] = None,
    stage_duration_s: Annotated[float, typer.Option(
        help="target length of each rate stage")] = 15.0,
    requests_per_stage: Annotated[int | None, typer.Option(help="fixed requests per stage")] = None,
    system: Annotated[str, typer.Option(help="label of the system in tables and plots")] = "target",
    output_dir: Annotated[str, typer.Option(
        help="where results.json/.md/.png go")] = "bench/results/run",
) -> None:
    """Drive an OpenAI-compatible endpoint with a saved, seeded workload; write JSON, MD, PNG."""
    from pathlib import Path

    from llmd.bench.output import load_or_build, run_bench

    if not rates and not concurrency:
        rates = "1,2,4"
    params = {"num_groups": num_groups, "num_prompts_per_group": num_prompts_per_group,
              "system_prompt_len": system_prompt_len, "question_len": question_len,
              "output_len": output_len, "num_sessions": num_sessions, "turns": turns,
              "user_len": user_len, "num_prompts": num_prompts, "input_len": input_len,
              "api": api, "seed": seed}
    try:
        wl = load_or_build(workload_file, workload, tokenizer, params)
    except LlmdError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    out = Path(output_dir)
    _run_bench_command(run_bench(
        target=target, model=model, workload=wl, rates=_floats(rates, "--rates"),
        concurrency=_ints(concurrency, "--concurrency"), output_dir=out, system=system,
        stage_duration_s=stage_duration_s, requests_per_stage=requests_per_stage, seed=seed))
    typer.echo(f"wrote {out}/results.json, results.md, requests.jsonl, workload.jsonl"
               + (", ttft_throughput.png" if (out / "ttft_throughput.png").exists() else ""))


@bench_app.command("compare")
def bench_compare(
    tokenizer: Annotated[str | None, typer.Option(
        help="tokenizer.json (or dir) for the sims and lengths")] = None,
    systems: Annotated[str | None, typer.Option(help="comma list (default: all thirteen)")] = None,
    rates: Annotated[str, typer.Option(help="Poisson ladder, req/s")] = "8,16,32,64,96,128,160",
    stage_duration_s: Annotated[float, typer.Option(help="length of each rate stage")] = 10.0,
    num_groups: Annotated[int, typer.Option(help="shared-prefix groups")] = 24,
    num_prompts_per_group: Annotated[int, typer.Option(help="prompts per group")] = 200,
    system_prompt_len: Annotated[int, typer.Option(help="shared prefix tokens")] = 1024,
    question_len: Annotated[int, typer.Option(help="question tokens")] = 64,
    output_len: Annotated[int, typer.Option(help="output tokens (ignore_eos)")] = 32,
    vllm: Annotated[int, typer.Option(help="vLLM-dialect simulators")] = 2,
    sglang: Annotated[int, typer.Option(help="SGLang-dialect simulators")] = 2,
    kv_cache_blocks: Annotated[int, typer.Option(help="KV blocks per simulator")] = 512,
    block_size: Annotated[int, typer.Option(help="tokens per KV block")] = 16,
    time_scale: Annotated[float, typer.Option(help="simulators' latency factor")] = 1.0,
    seed: Annotated[int, typer.Option(help="workload and arrival seed")] = 0,
    output_dir: Annotated[str, typer.Option(help="results directory")] = "bench/results/compare",
) -> None:
    """Same fleet, workload and arrivals through llmd (8 configs), Envoy RR, sglang/vllm routers."""
    from pathlib import Path

    from llmd.bench.commands import compare_main
    from llmd.bench.compare import DEFAULT_SYSTEMS, CompareConfig

    cfg = _config("llmd bench compare", lambda: CompareConfig(
        systems=tuple(systems.split(",")) if systems else DEFAULT_SYSTEMS,
        rates=tuple(_floats(rates, "--rates")), stage_duration_s=stage_duration_s,
        num_groups=num_groups,
        num_prompts_per_group=num_prompts_per_group, system_prompt_len=system_prompt_len,
        question_len=question_len, output_len=output_len, vllm=vllm, sglang=sglang,
        kv_cache_blocks=kv_cache_blocks, block_size=block_size, time_scale=time_scale, seed=seed,
        tokenizer=tokenizer, output_dir=Path(output_dir)))
    _run_bench_command(compare_main(cfg))


@bench_app.command("overhead")
def bench_overhead(
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json (or dir)")] = None,
    systems: Annotated[str | None, typer.Option(help="comma list (direct first)")] = None,
    concurrency: Annotated[str, typer.Option(help="closed-loop concurrencies")] = "1,64",
    repeats: Annotated[int, typer.Option(help="repeats per cell")] = 3,
    output_dir: Annotated[str, typer.Option(help="results directory")] = "bench/results/overhead",
) -> None:
    """Router overhead on zero-latency sims: added latency, req/s, router CPU and peak memory."""
    from pathlib import Path

    from llmd.bench.commands import overhead_main
    from llmd.bench.overhead import DEFAULT_SYSTEMS, OverheadConfig

    cfg = _config("llmd bench overhead", lambda: OverheadConfig(
        systems=tuple(systems.split(",")) if systems else DEFAULT_SYSTEMS,
        concurrency=tuple(_ints(concurrency, "--concurrency")),
        repeats=repeats, tokenizer=tokenizer, output_dir=Path(output_dir)))
    _run_bench_command(overhead_main(cfg))


@bench_app.command("crosscheck")
def bench_crosscheck(
    tokenizer: Annotated[str, typer.Option(help="local tokenizer dir (inference-perf needs one)")],
    rate: Annotated[float, typer.Option(help="Poisson rate, req/s")] = 8.0,
    duration_s: Annotated[int, typer.Option(help="stage length")] = 30,
    output_dir: Annotated[str, typer.Option(help="results directory")] = "bench/results/crosscheck",
) -> None:
    """inference-perf (shared_prefix) and llmd bench against the same llmd stack."""
    from pathlib import Path

    from llmd.bench.commands import crosscheck_main
    from llmd.bench.compare import CompareConfig
    from llmd.bench.crosscheck import CrossCheckConfig

    fleet = CompareConfig(tokenizer=tokenizer).fleet()
    cfg = _config("llmd bench crosscheck", lambda: CrossCheckConfig(
        tokenizer=tokenizer, rate=rate, duration_s=duration_s, fleet=fleet,
        output_dir=Path(output_dir)))
    _run_bench_command(crosscheck_main(cfg))


@bench_app.command("report")
def bench_report(
    results: Annotated[str, typer.Option(
        help="directory with compare/, overhead/, crosscheck/")] = "bench/results",
    docs: Annotated[str, typer.Option(
        help="Markdown file whose sections are replaced")] = "docs/benchmarks.md",
    img_dir: Annotated[str, typer.Option(help="where the plot is copied")] = "docs/img",
) -> None:
    """Write the Router comparison / overhead / inference-perf sections of docs/benchmarks.md."""
    from pathlib import Path

    from llmd.bench.commands import report_main

    for heading in report_main(Path(results), Path(docs), Path(img_dir)):
        typer.echo(f"wrote {docs}: {heading}")
