"""Top-level commands: the servers (sim, epp, sidecar, gateway, up) and `render`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmd.cli._app import app, listening, run_service
from llmd.errors import LlmdError


@app.command()
def sidecar(
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8000,
    host: Annotated[str, typer.Option(help="listen address")] = "0.0.0.0",
    model_server_port: Annotated[int, typer.Option(help="local decode engine port")] = 8200,
    model_server_host: Annotated[str, typer.Option(help="local decode engine host")] = "127.0.0.1",
    kv_connector: Annotated[str, typer.Option(
        help="P/D protocol: nixlv2 (vLLM) or sglang")] = "nixlv2",
    prefill_max_retries: Annotated[int, typer.Option(
        help="retries of a prefill answered 502/503/504")] = 0,
    prefill_retry_backoff_s: Annotated[float, typer.Option(
        help="first retry backoff, doubled each retry")] = 0.2,
    enable_ssrf_protection: Annotated[bool, typer.Option(
        help="only call allowlisted prefill targets (403 otherwise)")] = False,
    prefill_allow: Annotated[list[str] | None, typer.Option(
        help="HOST:PORT allows exactly that prefill target; a bare HOST only on 8000 and the "
             "engine's default port (repeatable)")] = None,
    inference_pool: Annotated[str | None, typer.Option(
        envvar="INFERENCE_POOL",
        help="namespace/name: with --enable-ssrf-protection, also allow this InferencePool's "
             "pods (IPs and names) on its target ports (503 until first listed)")] = None,
    pool_group: Annotated[str, typer.Option(
        help="InferencePool API group (v1; inference.networking.x-k8s.io: v1alpha2)")
    ] = "inference.networking.k8s.io",
    kube_api_server: Annotated[str | None, typer.Option(
        help="Kubernetes API URL without auth, e.g. kubectl proxy's "
             "(default: the pod's service account)")] = None,
    enable_prefiller_sampling: Annotated[bool, typer.Option(
        help="try a random host of x-prefiller-host-port first (then the others in order)")
    ] = False,
    sglang_bootstrap_port: Annotated[int, typer.Option(
        envvar="SGLANG_BOOTSTRAP_PORT", help="SGLang prefill bootstrap port")] = 8998,
    data_parallel_size: Annotated[int, typer.Option(
        help="prefill data-parallel size (SGLang room mod size = rank)")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the P/D routing sidecar in front of a decode engine (vLLM NIXL v2 or SGLang)."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.sidecar import SidecarConfig, serve

    try:
        cfg = SidecarConfig(
            host=host, port=port, model_server_host=model_server_host,
            model_server_port=model_server_port, kv_connector=kv_connector,
            prefill_max_retries=prefill_max_retries,
            prefill_retry_backoff_s=prefill_retry_backoff_s,
            enable_ssrf_protection=enable_ssrf_protection,
            prefill_allowlist=tuple(prefill_allow or ()), inference_pool=inference_pool,
            pool_group=pool_group, kube_api_server=kube_api_server,
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
             "(repeatable); kv-events=tcp://host:port names its KV-event socket for a precise "
             "prefix-cache plugin")] = None,
    endpoints_file: Annotated[str | None, typer.Option(
        help="YAML: endpoints: [{address, port, labels}]")] = None,
    config_file: Annotated[str | None, typer.Option(
        help="EndpointPickerConfig YAML (default: llm-d's default config)")] = None,
    config_text: Annotated[str | None, typer.Option(help="EndpointPickerConfig as text")] = None,
    values: Annotated[str | None, typer.Option(
        help="an llm-d router chart's Helm values file: load the EndpointPickerConfig it "
             "carries (router.epp.pluginsCustomConfig[pluginsConfigFile])")] = None,
    check: Annotated[bool, typer.Option(
        help="load the config (llm-d.ai/v1 or v1alpha1), print what it schedules with and "
             "exit: 0 when it loads, 2 with every problem")] = False,
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
    stale_after_s: Annotated[float, typer.Option(
        help="an endpoint with no good scrape for this long stops being a candidate (one whose "
             "scrape is refused stops at once); its next good scrape brings it back")] = 2.0,
    fallback_endpoints: Annotated[int, typer.Option(
        help="also name this many next-best endpoints after the destination (GIE's "
             "comma-separated x-gateway-destination-endpoint; the sidecar's prefill list too), "
             "for a gateway that retries on the next when one refuses, as `llmd gateway "
             "--endpoint ...` does; 0 for gateways that accept one ip:port")] = 0,
    max_pending_streams: Annotated[int, typer.Option(
        help="ext_proc streams waiting for a routing decision at once; a request beyond it is "
             "answered 429 with Retry-After at once, before parsing or scheduling")] = 4096,
    max_wait_s: Annotated[float, typer.Option(
        help="a request whose ext_proc stream waited longer than this inside the EPP is "
             "answered 429 with Retry-After (measured behind llmd's gateway, which sends the "
             "grpc-timeout marker); keep it below the gateway's ext_proc message timeout "
             "(15 s)")] = 8.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    list_plugins: Annotated[bool, typer.Option(help="print plugin types and parameters")] = False,
    kubernetes: Annotated[bool, typer.Option(
        help="watch the InferencePool --pool-name's ready pods through the Kubernetes API "
             "(in a pod, with its service account)")] = False,
    peer: Annotated[list[str] | None, typer.Option(
        help="host:port of another EPP replica's sync socket (repeatable): replicas share "
             "their approximate prefix index and in-flight load (the config's "
             "dataLayer.crossReplica syncer, else a zmq-mesh-syncer)")] = None,
    sync_port: Annotated[int | None, typer.Option(
        help="port of this replica's sync socket (default: the syncer's `port`, 9005; 0 "
             "picks a free one)")] = None,
) -> None:
    """Run the endpoint picker (Envoy ext_proc) over a static pool of endpoints."""
    from pathlib import Path

    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.epp import EppSettings, Listening, parse_endpoint_flag, serve
    from llmd.epp.config import plugin_catalog
    from llmd.epp.server import build_config

    if list_plugins:
        typer.echo("\n".join(plugin_catalog()))
        return

    try:
        settings = EppSettings(
            host=host, grpc_port=grpc_port, health_port=grpc_health_port,
            metrics_port=metrics_port, config_text=config_text,
            config_file=Path(config_file) if config_file else None,
            values_file=Path(values) if values else None,
            objectives_file=Path(objectives_file) if objectives_file else None,
            endpoints=tuple(parse_endpoint_flag(e) for e in endpoint or ()),
            endpoints_file=Path(endpoints_file) if endpoints_file else None,
            pool_name=pool_name, pool_namespace=pool_namespace,
            refresh_metrics_interval_s=refresh_metrics_interval_s,
            scrape_timeout_s=scrape_timeout_s, stale_after_s=stale_after_s,
            fallback_endpoints=fallback_endpoints, max_pending_streams=max_pending_streams,
            max_wait_s=max_wait_s, peers=tuple(peer or ()), sync_port=sync_port,
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd epp")), err=True)
        raise typer.Exit(2) from None
    except LlmdError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if check:
        try:
            config = build_config(settings)
            endpoints = config.discovery.load() if config.discovery is not None else ()
        except LlmdError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{config.source}: ok")
        for line in config.describe().split("; "):
            typer.echo(f"  {line}")
        if config.discovery is not None:
            typer.echo(f"  endpoints ({config.discovery.name}): "
                       + (", ".join(e.id for e in endpoints) or "none"))
        return

    discovery, kube = None, None
    if kubernetes:
        from llmd.epp.discovery_k8s import KubeApi, KubernetesDiscovery

        try:
            kube = KubeApi.in_cluster()
            discovery = KubernetesDiscovery(kube, pool_namespace, pool_name=pool_name)
        except LlmdError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    def announce(ports: Listening) -> None:
        for line in ports.lines():
            print(line, flush=True)

    run_service(lambda stop: serve(settings, stop, discovery=discovery, on_listening=announce,
                                   kube=kube), log_level=log_level)


@app.command()
def render(
    values: Annotated[list[str], typer.Option(
        "-f", "--values", help="values file (repeatable; later files win, as with helm -f), "
        "or one llm-d.ai LLMInferenceService")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="a.b=c override, helm style (repeatable)")] = None,
    release: Annotated[str, typer.Option(
        help="release name (object names derive from it)")] = "llmd",
    namespace: Annotated[str | None, typer.Option(
        help="namespace written into the objects")] = None,
    output_dir: Annotated[str | None, typer.Option(
        help="write one file per object here instead of printing the stream")] = None,
    llmd_image: Annotated[str | None, typer.Option(
        metavar="IMAGE",
        help="default image of the containers that run llmd (routing sidecar, EPP) instead "
             "of ghcr.io/llmd/llmd:<version>; routing.proxy.image or routing.epp.image set "
             "in the values still win")] = None,
) -> None:
    """Render the Kubernetes objects for llm-d-modelservice values or an LLMInferenceService
    (vLLM or SGLang): the objects `llmd operator` would apply for it."""
    from pathlib import Path

    from llmd.deploy import dump_yaml, render_inputs, write_output_dir

    try:
        result = render_inputs(values, set_ or (), release=release, namespace=namespace,
                               llmd_image=llmd_image)
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
    model: Annotated[str, typer.Option(
        help="model name (also the served name by default)")] = "llmd-sim",
    served_model_name: Annotated[str | None, typer.Option(
        help="name clients send as `model`")] = None,
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8000,
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    tokenizer: Annotated[str | None, typer.Option(
        help="tokenizer.json path (default: built-in)")] = None,
    block_size: Annotated[int, typer.Option(help="tokens per KV block (SGLang: page size)")] = 16,
    kv_cache_blocks: Annotated[int, typer.Option(help="KV cache size in blocks")] = 8192,
    max_model_len: Annotated[int, typer.Option(help="max prompt + output tokens")] = 8192,
    max_num_seqs: Annotated[int, typer.Option(help="sequences running at once")] = 256,
    max_waiting: Annotated[int, typer.Option(help="waiting-queue bound (429 beyond)")] = 1024,
    prefill_overhead_ms: Annotated[float, typer.Option(help="fixed prefill cost")] = 10.0,
    prefill_per_token_ms: Annotated[float, typer.Option(
        help="prefill cost per uncached token")] = 0.05,
    itl_ms: Annotated[float, typer.Option(help="inter-token latency of a lone sequence")] = 8.0,
    itl_per_seq_ms: Annotated[float, typer.Option(help="added ITL per running sequence")] = 0.1,
    time_scale: Annotated[float, typer.Option(help="multiplies every latency; 0 = none")] = 1.0,
    eos_min_tokens: Annotated[int, typer.Option(
        help="shortest seeded answer without ignore_eos")] = 16,
    eos_max_tokens: Annotated[int, typer.Option(
        help="longest seeded answer without ignore_eos")] = 256,
    seed: Annotated[int, typer.Option(help="seed of output text and failure injection")] = 0,
    failure_rate: Annotated[float, typer.Option(
        help="fraction (0-1) of generation requests failed")] = 0.0,
    failure_kinds: Annotated[list[str] | None, typer.Option(
        help="rate_limit, server_error, invalid_api_key, context_length, invalid_request, "
             "model_not_found (repeatable)")] = None,
    role: Annotated[str, typer.Option(help="P/D role: both, prefill or decode")] = "both",
    kv_transfer_overhead_ms: Annotated[float, typer.Option(
        help="decode leg: fixed KV transfer cost")] = 1.0,
    kv_transfer_per_token_ms: Annotated[float, typer.Option(
        help="decode leg: cost per transferred token")] = 0.005,
    kv_hold_s: Annotated[float, typer.Option(
        help="vLLM prefill: seconds blocks wait for their decode leg")] = 60.0,
    disaggregation_bootstrap_port: Annotated[int, typer.Option(
        help="SGLang prefill: bootstrap server port (0 picks one)")] = 8998,
    bootstrap_timeout_s: Annotated[float, typer.Option(
        help="SGLang: seconds a leg waits for its peer")] = 30.0,
    kv_events_config: Annotated[str | None, typer.Option(
        help="the engine's own --kv-events-config JSON: publish KV events on ZMQ as the engine "
             "does (vLLM: {\"enable_kv_cache_events\": true, \"publisher\": \"zmq\", "
             "\"endpoint\": ..., \"topic\": ..., \"replay_endpoint\": ...}; SGLang: "
             "{\"publisher\": \"zmq\", ...}); the PUB binds tcp://*:P, ipc:// (SGLang also "
             "0.0.0.0) and connects to a concrete host")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Run a simulated vLLM or SGLang model server (OpenAI API, engine routes, metrics, P/D)."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.sim import SimConfig, serve

    try:
        cfg = SimConfig(
            engine=engine, model=model, served_model_name=served_model_name, host=host,
            port=port, tokenizer=tokenizer, block_size=block_size, kv_cache_blocks=kv_cache_blocks,
            max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_waiting=max_waiting,
            prefill_overhead_ms=prefill_overhead_ms, prefill_per_token_ms=prefill_per_token_ms,
            itl_ms=itl_ms, itl_per_seq_ms=itl_per_seq_ms, time_scale=time_scale,
            eos_min_tokens=eos_min_tokens, eos_max_tokens=eos_max_tokens, seed=seed,
            failure_rate=failure_rate, role=role,
            kv_transfer_overhead_ms=kv_transfer_overhead_ms,
            kv_transfer_per_token_ms=kv_transfer_per_token_ms, kv_hold_s=kv_hold_s,
            bootstrap_port=disaggregation_bootstrap_port, bootstrap_timeout_s=bootstrap_timeout_s,
            kv_events_config=kv_events_config,
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
        help="EndpointPickerConfig YAML for the EPP (default: llm-d's default config); with "
             "a precise-prefix-cache plugin the simulators publish KV events to it; with "
             "dataLayer.discovery.endpoints the servers it names are fronted, as with "
             "--endpoint")] = None,
    epp: Annotated[bool, typer.Option(
        help="--no-epp: Envoy round-robin, no endpoint picker")] = True,
    epp_replicas: Annotated[int, typer.Option(
        help="llmd epp processes that share their picks and in-flight load (--peer), each on "
             "its own ports (after the simulators' with --base-port); Envoy spreads ext_proc "
             "streams over them, health-checks them and fails over when one dies")] = 1,
    failure_mode: Annotated[str, typer.Option(
        help="FailOpen or FailClose (EPP down)")] = "FailClose",
    ext_proc_mode: Annotated[str, typer.Option(
        help="how Envoy talks to the EPP: buffered or full-duplex")] = "buffered",
    time_scale: Annotated[float, typer.Option(help="simulators' latency factor; 0 = none")] = 1.0,
    pd: Annotated[bool, typer.Option(
        help="P/D: --engines are decode sims, each behind an `llmd sidecar`, plus prefill sims "
             "per engine; the EPP gets the P/D config")] = False,
    prefill_per_engine: Annotated[int, typer.Option(help="--pd: prefill sims per engine")] = 1,
    bootstrap_port: Annotated[int, typer.Option(
        help="--pd: SGLang prefill bootstrap port (shared; 0 = ephemeral)")] = 8998,
    ssrf_protection: Annotated[bool, typer.Option(
        help="--pd: sidecars send prefill legs only to their engine's prefill sims "
             "(--no-ssrf-protection: anywhere a client names)")] = True,
    fallback_endpoints: Annotated[int, typer.Option(
        help="endpoints Envoy tries, in the EPP's order, after a refused connection")] = 2,
    endpoint: Annotated[list[str] | None, typer.Option(
        help="front a model server that already runs instead of simulators (repeatable): "
             "URL[,engine=vllm|sglang][,role=decode|prefill|both][,model=NAME][,key=value] "
             "(URL: http://HOST:PORT or HOST:PORT; other key=value pairs are EPP labels). "
             "Engine, model and (SGLang) P/D role are detected from /v1/models, /metrics and "
             "the engine's routes when not given; only the EPP and Envoy are started (--pd: "
             "also a sidecar per role=decode server, --bootstrap-port for SGLang prefill "
             "servers that do not report theirs)")] = None,
    endpoint_wait_s: Annotated[float, typer.Option(
        help="--endpoint: how long to wait at start for each server to answer /v1/models "
             "(one still loading its model); past it, an error naming it")] = 120.0,
    max_restarts: Annotated[int, typer.Option(
        help="restarts of one child within --restart-window-s before llmd up gives up")] = 5,
    restart_window_s: Annotated[float, typer.Option(
        help="the crash-loop window of --max-restarts, seconds")] = 60.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Start simulators, the llmd EPP and Envoy on loopback until Ctrl-C (--pd: disaggregated;
    --endpoint: in front of servers that already run, vLLM or SGLang, instead of simulators).

    By default 2 vLLM- and 2 SGLang-dialect simulators behind one gateway. A child that dies is
    restarted on the same ports while the others keep serving; llmd up stops only on Ctrl-C or
    when a child crash-loops (--max-restarts within --restart-window-s).
    """
    from pathlib import Path

    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.gateway import StackSpec, run_up
    from llmd.gateway.stack import engines_from_flag

    try:
        spec = StackSpec(
            engines=engines_from_flag(engines, per_engine), model=model,
            gateway_port=gateway_port, base_port=base_port, epp=epp, epp_replicas=epp_replicas,
            epp_config_file=Path(epp_config_file) if epp_config_file else None,
            failure_mode=failure_mode, ext_proc_mode=ext_proc_mode, time_scale=time_scale,
            pd=pd, prefill_per_engine=prefill_per_engine, bootstrap_port=bootstrap_port,
            ssrf_protection=ssrf_protection, fallback_endpoints=fallback_endpoints,
            max_restarts=max_restarts, restart_window_s=restart_window_s,
            external=tuple(endpoint or ()), endpoint_wait_s=endpoint_wait_s,
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
    epp: Annotated[list[str] | None, typer.Option(
        help="an EPP replica's ext_proc host:port[,health=PORT] (its --grpc-health-port); "
             "repeatable or comma-separated: Envoy spreads ext_proc streams over the "
             "replicas, health-checks them and decides a request whose stream broke again on "
             "another; omit for plain round robin over --fallback")] = None,
    endpoint: Annotated[list[str] | None, typer.Option(
        help="the pool's ip:port endpoints (repeatable): Envoy connects only to these and, "
             "when one refuses, retries the next the EPP named (llmd epp "
             "--fallback-endpoints); without any, it connects to the one ip:port the EPP "
             "names")] = None,
    fallback: Annotated[list[str] | None, typer.Option(
        help="ip:port used when the EPP is down with FailOpen, or always without --epp "
             "(repeatable; default: the --endpoint list)")] = None,
    failure_mode: Annotated[str, typer.Option(help="FailOpen or FailClose")] = "FailClose",
    ext_proc_mode: Annotated[str, typer.Option(help="buffered or full-duplex")] = "buffered",
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port (0 picks a free one)")] = 8080,
    admin_port: Annotated[int, typer.Option(help="Envoy admin port (0 picks a free one)")] = 0,
    concurrency: Annotated[int, typer.Option(help="Envoy worker threads")] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run Envoy in front of the pool: ext_proc to the EPP, then the endpoint it picked."""
    from pydantic import ValidationError

    from llmd.config import config_error
    from llmd.gateway import GatewaySpec, serve_gateway

    try:
        spec = GatewaySpec(
            host=host, port=port, admin_port=admin_port, epp=tuple(epp or ()),
            endpoints=tuple(endpoint or ()), fallback_endpoints=tuple(fallback or ()),
            failure_mode=failure_mode,
            ext_proc_mode=ext_proc_mode,
        )
    except ValidationError as exc:
        typer.echo(str(config_error(exc, "llmd gateway")), err=True)
        raise typer.Exit(2) from None
    run_service(lambda stop: serve_gateway(spec, stop, listening, concurrency=concurrency),
                log_level=log_level)
