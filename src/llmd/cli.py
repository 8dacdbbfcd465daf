"""The `llmd` command line: thin commands that parse flags and call one package function."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from llmd import __version__
from llmd.errors import LlmdError

app = typer.Typer(
    name="llmd",
    help="llmd: the llm-d serving stack in Python, with SGLang as first-class as vLLM.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """llmd: the llm-d serving stack in Python, with SGLang as first-class as vLLM."""


@app.command()
def version() -> None:
    """Print the llmd version."""
    typer.echo(__version__)


def run_service(main: Callable[[asyncio.Event], Awaitable[None]], *, log_level: str = "info") -> None:
    """Run one long-lived service on uvloop until SIGINT/SIGTERM sets its `stop` event.

    Every `llmd` server command goes through here: uvloop is installed only in the CLI, and an
    `LlmdError` (a bad flag value, a port in use) ends the process with its message, code 2.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(runner())
    except (LlmdError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def listening(host: str, port: int) -> None:
    """The line fixtures and supervisors wait for."""
    print(f"listening on {host}:{port}", flush=True)


@app.command()
def sidecar(
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8000,
    host: Annotated[str, typer.Option(help="listen address")] = "0.0.0.0",
    model_server_port: Annotated[int, typer.Option(help="local decode engine port")] = 8200,
    model_server_host: Annotated[str, typer.Option(help="local decode engine host")] = "127.0.0.1",
    kv_connector: Annotated[str, typer.Option(help="P/D protocol: nixlv2 (vLLM) or sglang")] = "nixlv2",
    prefill_max_retries: Annotated[int, typer.Option(help="retries of a prefill answered 502/503/504")] = 0,
    prefill_retry_backoff_s: Annotated[float, typer.Option(help="first retry backoff, doubled each retry")] = 0.2,
    enable_ssrf_protection: Annotated[bool, typer.Option(help="only call allowlisted prefill hosts (403 otherwise)")] = False,
    prefill_allow: Annotated[list[str] | None, typer.Option(help="allowlisted prefill host (repeatable)")] = None,
    enable_prefiller_sampling: Annotated[bool, typer.Option(help="pick a random host from x-prefiller-host-port")] = False,
    sglang_bootstrap_port: Annotated[int, typer.Option(envvar="SGLANG_BOOTSTRAP_PORT", help="SGLang prefill bootstrap port")] = 8998,
    data_parallel_size: Annotated[int, typer.Option(help="prefill data-parallel size (SGLang room mod size = rank)")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the P/D routing sidecar in front of a decode engine (vLLM NIXL v2 or SGLang)."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.sidecar import SidecarConfig, serve

    try:
        cfg = SidecarConfig(
            host=host, port=port, model_server_host=model_server_host,
            model_server_port=model_server_port, kv_connector=kv_connector,  # type: ignore[arg-type]
            prefill_max_retries=prefill_max_retries, prefill_retry_backoff_s=prefill_retry_backoff_s,
            enable_ssrf_protection=enable_ssrf_protection, prefill_allowlist=tuple(prefill_allow or ()),
            enable_prefiller_sampling=enable_prefiller_sampling,
            sglang_bootstrap_port=sglang_bootstrap_port, data_parallel_size=data_parallel_size,
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd sidecar")), err=True)
        raise typer.Exit(2) from None
    run_service(lambda stop: serve(cfg, stop, listening), log_level=log_level)


@app.command()
def epp(
    endpoint: Annotated[list[str] | None, typer.Option(
        help="pool endpoint ip:port[,engine=vllm|sglang][,role=decode|prefill|both][,key=value] "
             "(repeatable)")] = None,
    endpoints_file: Annotated[str | None, typer.Option(
        help="YAML: endpoints: [{address, port, labels}]")] = None,
    config_file: Annotated[str | None, typer.Option(
        help="EndpointPickerConfig YAML (default: llm-d's default config)")] = None,
    config_text: Annotated[str | None, typer.Option(help="EndpointPickerConfig as text")] = None,
    objectives_file: Annotated[str | None, typer.Option(
        help="YAML: objectives: [{name, priority}] (header x-gateway-inference-objective)")] = None,
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option(help="ext_proc port (0 picks a free one)")] = 9002,
    grpc_health_port: Annotated[int, typer.Option(help="gRPC health port")] = 9003,
    metrics_port: Annotated[int, typer.Option(help="Prometheus /metrics port")] = 9090,
    pool_name: Annotated[str, typer.Option(help="InferencePool name")] = "llmd",
    pool_namespace: Annotated[str, typer.Option(help="InferencePool namespace")] = "default",
    refresh_metrics_interval_s: Annotated[float, typer.Option(help="scrape interval")] = 0.05,
    scrape_timeout_s: Annotated[float, typer.Option(help="timeout of one scrape")] = 1.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    list_plugins: Annotated[bool, typer.Option(help="print plugin types and parameters")] = False,
    kubernetes: Annotated[bool, typer.Option(
        help="watch the InferencePool --pool-name's ready pods through the Kubernetes API "
             "(in a pod, with its service account)")] = False,
) -> None:
    """Run the endpoint picker (Envoy ext_proc) over a static pool of endpoints."""
    from pathlib import Path

    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.epp import EppSettings, Listening, parse_endpoint_flag, serve
    from llmd.epp.config import plugin_catalog

    if list_plugins:
        typer.echo("\n".join(plugin_catalog()))
        return

    try:
        settings = EppSettings(
            host=host, grpc_port=grpc_port, health_port=grpc_health_port,
            metrics_port=metrics_port, config_text=config_text,
            config_file=Path(config_file) if config_file else None,
            objectives_file=Path(objectives_file) if objectives_file else None,
            endpoints=tuple(parse_endpoint_flag(e) for e in endpoint or ()),
            endpoints_file=Path(endpoints_file) if endpoints_file else None,
            pool_name=pool_name, pool_namespace=pool_namespace,
            refresh_metrics_interval_s=refresh_metrics_interval_s,
            scrape_timeout_s=scrape_timeout_s,
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd epp")), err=True)
        raise typer.Exit(2) from None
    except LlmdError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    discovery = None
    if kubernetes:
        from llmd.epp.discovery_k8s import KubeApi, KubernetesDiscovery

        try:
            discovery = KubernetesDiscovery(KubeApi.in_cluster(), pool_namespace,
                                            pool_name=pool_name)
        except LlmdError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    def announce(ports: Listening) -> None:
        for line in ports.lines():
            print(line, flush=True)

    run_service(lambda stop: serve(settings, stop, discovery=discovery, on_listening=announce),
                log_level=log_level)


@app.command()
def render(
    values: Annotated[list[str], typer.Option(
        "-f", "--values", help="values file (repeatable; later files win, as with helm -f)")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="a.b=c override, helm style (repeatable)")] = None,
    release: Annotated[str, typer.Option(help="release name (object names derive from it)")] = "llmd",
    namespace: Annotated[str | None, typer.Option(help="namespace written into the objects")] = None,
    output_dir: Annotated[str | None, typer.Option(
        help="write one file per object here instead of printing the stream")] = None,
) -> None:
    """Render the Kubernetes objects for llm-d-modelservice values (vLLM or SGLang)."""
    from pathlib import Path

    from llmd.deploy import dump_yaml, render_files, write_output_dir

    try:
        result = render_files(values, set_ or (), release=release, namespace=namespace)
    except LlmdError as exc:
        typer.echo(f"error: {exc}".replace("\n", "\nerror: "), err=True)
        raise typer.Exit(2) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if output_dir:
        for path in write_output_dir(result.objects, Path(output_dir)):
            typer.echo(str(path))
    else:
        typer.echo(dump_yaml(result.objects), nl=False)


@app.command()
def sim(
    engine: Annotated[str, typer.Option(help="dialect: vllm or sglang")] = "vllm",
    model: Annotated[str, typer.Option(help="model name (also the served name by default)")] = "llmd-sim",
    served_model_name: Annotated[str | None, typer.Option(help="name clients send as `model`")] = None,
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8000,
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json path (default: built-in)")] = None,
    block_size: Annotated[int, typer.Option(help="tokens per KV block (SGLang: page size)")] = 16,
    kv_cache_blocks: Annotated[int, typer.Option(help="KV cache size in blocks")] = 8192,
    max_model_len: Annotated[int, typer.Option(help="max prompt + output tokens")] = 8192,
    max_num_seqs: Annotated[int, typer.Option(help="sequences running at once")] = 256,
    max_waiting: Annotated[int, typer.Option(help="waiting-queue bound (429 beyond)")] = 1024,
    prefill_overhead_ms: Annotated[float, typer.Option(help="fixed prefill cost")] = 10.0,
    prefill_per_token_ms: Annotated[float, typer.Option(help="prefill cost per uncached token")] = 0.05,
    itl_ms: Annotated[float, typer.Option(help="inter-token latency of a lone sequence")] = 8.0,
    itl_per_seq_ms: Annotated[float, typer.Option(help="added ITL per running sequence")] = 0.1,
    time_scale: Annotated[float, typer.Option(help="multiplies every latency; 0 = none")] = 1.0,
    eos_min_tokens: Annotated[int, typer.Option(help="shortest seeded answer without ignore_eos")] = 16,
    eos_max_tokens: Annotated[int, typer.Option(help="longest seeded answer without ignore_eos")] = 256,
    seed: Annotated[int, typer.Option(help="seed of output text and failure injection")] = 0,
    failure_rate: Annotated[float, typer.Option(help="fraction (0-1) of generation requests failed")] = 0.0,
    failure_kinds: Annotated[list[str] | None, typer.Option(
        help="rate_limit, server_error, invalid_api_key, context_length, invalid_request, "
             "model_not_found (repeatable)")] = None,
    role: Annotated[str, typer.Option(help="P/D role: both, prefill or decode")] = "both",
    kv_transfer_overhead_ms: Annotated[float, typer.Option(help="decode leg: fixed KV transfer cost")] = 1.0,
    kv_transfer_per_token_ms: Annotated[float, typer.Option(help="decode leg: cost per transferred token")] = 0.005,
    kv_hold_s: Annotated[float, typer.Option(help="vLLM prefill: seconds blocks wait for their decode leg")] = 60.0,
    disaggregation_bootstrap_port: Annotated[int, typer.Option(help="SGLang prefill: bootstrap server port (0 picks one)")] = 8998,
    bootstrap_timeout_s: Annotated[float, typer.Option(help="SGLang: seconds a leg waits for its peer")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Run a simulated vLLM or SGLang model server (OpenAI API, engine routes, /metrics, P/D roles)."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.sim import SimConfig, serve

    try:
        cfg = SimConfig(
            engine=engine, model=model, served_model_name=served_model_name, host=host,  # type: ignore[arg-type]
            port=port, tokenizer=tokenizer, block_size=block_size, kv_cache_blocks=kv_cache_blocks,
            max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_waiting=max_waiting,
            prefill_overhead_ms=prefill_overhead_ms, prefill_per_token_ms=prefill_per_token_ms,
            itl_ms=itl_ms, itl_per_seq_ms=itl_per_seq_ms, time_scale=time_scale,
            eos_min_tokens=eos_min_tokens, eos_max_tokens=eos_max_tokens, seed=seed,
            failure_rate=failure_rate, role=role,  # type: ignore[arg-type]
            kv_transfer_overhead_ms=kv_transfer_overhead_ms,
            kv_transfer_per_token_ms=kv_transfer_per_token_ms, kv_hold_s=kv_hold_s,
            bootstrap_port=disaggregation_bootstrap_port, bootstrap_timeout_s=bootstrap_timeout_s,
            **({"failure_kinds": tuple(failure_kinds)} if failure_kinds else {}),
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd sim")), err=True)
        raise typer.Exit(2) from None

    def side_listening(name: str, host: str, port: int) -> None:
        print(f"{name} listening on {host}:{port}", flush=True)

    run_service(lambda stop: serve(cfg, stop, listening, side_listening), log_level=log_level)


@app.command()
def up(
    engines: Annotated[str, typer.Option(
        help="simulator dialects, comma-separated; engine=N sets that engine's count "
             "(vllm=3,sglang=1)")] = "vllm,sglang",
    per_engine: Annotated[int, typer.Option(help="simulators per engine without =N")] = 2,
    model: Annotated[str, typer.Option(help="model name every simulator serves")] = "llmd-sim",
    gateway_port: Annotated[int, typer.Option(help="Envoy's port; 0 = ephemeral")] = 8080,
    base_port: Annotated[int, typer.Option(
        help="first simulator port (+1 each), then the EPP's ext_proc, health and metrics "
             "ports; 0 = ephemeral")] = 8100,
    epp_config_file: Annotated[str | None, typer.Option(
        help="EndpointPickerConfig YAML for the EPP (default: llm-d's default config)")] = None,
    epp: Annotated[bool, typer.Option(help="--no-epp: Envoy round-robin, no endpoint picker")] = True,
    failure_mode: Annotated[str, typer.Option(help="FailOpen or FailClose (EPP down)")] = "FailClose",
    time_scale: Annotated[float, typer.Option(help="simulators' latency factor; 0 = none")] = 1.0,
    pd: Annotated[bool, typer.Option(
        help="P/D: --engines are decode sims, each behind an `llmd sidecar`, plus prefill sims "
             "per engine; the EPP gets the P/D config")] = False,
    prefill_per_engine: Annotated[int, typer.Option(help="--pd: prefill sims per engine")] = 1,
    bootstrap_port: Annotated[int, typer.Option(
        help="--pd: SGLang prefill bootstrap port (shared; 0 = ephemeral)")] = 8998,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Start the local stack on loopback until Ctrl-C: simulators (2 vLLM + 2 SGLang dialect by
    default), the llmd EPP and Envoy in front of them (--pd: prefill/decode disaggregated)."""
    from pathlib import Path

    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.gateway import StackSpec, run_up
    from llmd.gateway.stack import engines_from_flag

    try:
        spec = StackSpec(
            engines=engines_from_flag(engines, per_engine), model=model,
            gateway_port=gateway_port, base_port=base_port, epp=epp,
            epp_config_file=Path(epp_config_file) if epp_config_file else None,
            failure_mode=failure_mode, time_scale=time_scale,  # type: ignore[arg-type]
            pd=pd, prefill_per_engine=prefill_per_engine, bootstrap_port=bootstrap_port,
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd up")), err=True)
        raise typer.Exit(2) from None
    except LlmdError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    run_service(lambda stop: run_up(spec, stop, log_level=log_level), log_level=log_level)


@app.command()
def gateway(
    epp: Annotated[str | None, typer.Option(
        help="EPP ext_proc host:port (omit for plain round robin over --fallback)")] = None,
    fallback: Annotated[list[str] | None, typer.Option(
        help="ip:port used when the EPP is down with FailOpen, or always without --epp "
             "(repeatable)")] = None,
    failure_mode: Annotated[str, typer.Option(help="FailOpen or FailClose")] = "FailClose",
    ext_proc_mode: Annotated[str, typer.Option(help="buffered or full-duplex")] = "buffered",
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8080,
    admin_port: Annotated[int, typer.Option(help="Envoy admin port (0 picks a free one)")] = 0,
    concurrency: Annotated[int, typer.Option(help="Envoy worker threads")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run Envoy in front of the pool: ext_proc to the EPP, ORIGINAL_DST to its choice."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.gateway import GatewaySpec, serve_gateway

    try:
        spec = GatewaySpec(
            host=host, port=port, admin_port=admin_port, epp=epp,
            fallback_endpoints=tuple(fallback or ()), failure_mode=failure_mode,  # type: ignore[arg-type]
            ext_proc_mode=ext_proc_mode,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd gateway")), err=True)
        raise typer.Exit(2) from None
    run_service(lambda stop: serve_gateway(spec, stop, listening, concurrency=concurrency),
                log_level=log_level)


bench_app = typer.Typer(help="Benchmarks: load any OpenAI endpoint; compare llmd with peer routers.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _floats(text: str | None) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()] if text else []


def _run_bench_command(coro: Awaitable[object]) -> None:
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    workload: Annotated[str, typer.Option(help="shared-prefix, multi-turn or random")] = "shared-prefix",
    workload_file: Annotated[str | None, typer.Option(help="replay a saved workload.jsonl instead")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json (or dir) that counts lengths")] = None,
    num_groups: Annotated[int | None, typer.Option(help="shared-prefix: groups")] = None,
    num_prompts_per_group: Annotated[int | None, typer.Option(help="shared-prefix: prompts per group")] = None,
    system_prompt_len: Annotated[int | None, typer.Option(help="shared-prefix/multi-turn: system prompt tokens")] = None,
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
    concurrency: Annotated[str | None, typer.Option(help="closed-loop concurrencies, e.g. 1,64")] = None,
    stage_duration_s: Annotated[float, typer.Option(help="target length of each rate stage")] = 15.0,
    requests_per_stage: Annotated[int | None, typer.Option(help="fixed requests per stage")] = None,
    system: Annotated[str, typer.Option(help="label of the system in tables and plots")] = "target",
    output_dir: Annotated[str, typer.Option(help="where results.json/.md/.png go")] = "bench/results/run",
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
        target=target, model=model, workload=wl, rates=_floats(rates),
        concurrency=[int(c) for c in _floats(concurrency)], output_dir=out, system=system,
        stage_duration_s=stage_duration_s, requests_per_stage=requests_per_stage, seed=seed))
    typer.echo(f"wrote {out}/results.json, results.md, requests.jsonl, workload.jsonl"
               + (", ttft_throughput.png" if (out / "ttft_throughput.png").exists() else ""))


@bench_app.command("compare")
def bench_compare(
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer.json (or dir) for the sims and lengths")] = None,
    systems: Annotated[str | None, typer.Option(help="comma list (default: all eight)")] = None,
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
    """Same fleet, workload and arrivals through llmd (4 configs), Envoy RR, sglang/vllm routers."""
    from pathlib import Path

    from llmd.bench.commands import compare_main
    from llmd.bench.compare import DEFAULT_SYSTEMS, CompareConfig

    cfg = CompareConfig(
        systems=tuple(systems.split(",")) if systems else DEFAULT_SYSTEMS,
        rates=tuple(_floats(rates)), stage_duration_s=stage_duration_s, num_groups=num_groups,
        num_prompts_per_group=num_prompts_per_group, system_prompt_len=system_prompt_len,
        question_len=question_len, output_len=output_len, vllm=vllm, sglang=sglang,
        kv_cache_blocks=kv_cache_blocks, block_size=block_size, time_scale=time_scale, seed=seed,
        tokenizer=tokenizer, output_dir=Path(output_dir))
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

    cfg = OverheadConfig(systems=tuple(systems.split(",")) if systems else DEFAULT_SYSTEMS,
                         concurrency=tuple(int(c) for c in _floats(concurrency)),
                         repeats=repeats, tokenizer=tokenizer, output_dir=Path(output_dir))
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
    cfg = CrossCheckConfig(tokenizer=tokenizer, rate=rate, duration_s=duration_s, fleet=fleet,
                           output_dir=Path(output_dir))
    _run_bench_command(crosscheck_main(cfg))


@bench_app.command("report")
def bench_report(
    results: Annotated[str, typer.Option(help="directory with compare/, overhead/, crosscheck/")] = "bench/results",
    docs: Annotated[str, typer.Option(help="Markdown file whose sections are replaced")] = "docs/benchmarks.md",
    img_dir: Annotated[str, typer.Option(help="where the plot is copied")] = "docs/img",
) -> None:
    """Write the Router comparison / overhead / inference-perf sections of docs/benchmarks.md."""
    from pathlib import Path

    from llmd.bench.commands import report_main

    for heading in report_main(Path(results), Path(docs), Path(img_dir)):
        typer.echo(f"wrote {docs}: {heading}")


def main() -> None:
    app()
