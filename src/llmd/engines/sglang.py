"""SGLang: `python3 -m sglang.launch_server`, `sglang:` metrics, bootstrap-room P/D."""

from __future__ import annotations

import json
from typing import ClassVar

from llmd.engines._common import (
    has_flag,
    metrics_from_page,
    prefill_from_page,
    recognize,
    scraped_families,
)
from llmd.engines._sglang_kv import SGLangKvEvents
from llmd.engines.base import (
    EndpointMetrics,
    EngineName,
    LoraSpec,
    MetricNames,
    PdProtocol,
    PrefillCounters,
    Probe,
    Probes,
    ReportedPd,
    Role,
    ServerAnswers,
    ServeSpec,
)
from llmd.engines.kv_events import KvEventsDialect
from llmd.engines.page import MetricsPage

__all__ = ["SGLangAdapter"]

# Route → a key its JSON body has. /server_info is the current name of /get_server_info (kept
# as an alias by SGLang); both are its server args, disaggregation settings included.
_IDENTITY = {"/get_model_info": "model_path", "/server_info": "disaggregation_mode",
             "/get_server_info": "disaggregation_mode"}
_MODES: dict[object, Role] = {"null": "both", "prefill": "prefill", "decode": "decode"}
DEFAULT_TRANSFER_BACKEND = "nixl"  # what llm-d's P/D guide runs; SGLang's own default is mooncake


class SGLangAdapter:
    """SGLang (>= 0.4, `--enable-metrics` required for /metrics)."""

    name: ClassVar[EngineName] = "sglang"
    engine_type_label: ClassVar[str] = "sglang"
    sidecar_connector: ClassVar[str] = "sglang"
    serve_model_command: ClassVar[str] = "sglangServe"
    env_prefixes: ClassVar[tuple[str, ...]] = ("SGLANG_", "SGL_")  # SGL_ is the older spelling
    default_port: ClassVar[int] = 30000
    listen_host: ClassVar[str | None] = "0.0.0.0"  # SGLang's default host is 127.0.0.1
    tp_spans_nodes: ClassVar[bool] = True  # --nnodes/--node-rank: one TP group over hosts
    command_markers: ClassVar[tuple[str, ...]] = ("sglang.launch_server", "sglang")
    extra_routes: ClassVar[frozenset[str]] = frozenset(
        {"/health", "/health_generate", "/get_model_info", "/get_server_info", "/get_load",
         "/generate"}
    )
    metric_names: ClassVar[MetricNames] = MetricNames(
        waiting="sglang:num_queue_reqs",
        running="sglang:num_running_reqs",
        kv_usage="sglang:token_usage",
        cache_config_info="sglang:cache_config_info",
        block_size_label="page_size",
        num_blocks_label="num_pages",
        prefix_hits="sglang:cached_tokens",
        prefix_hits_labels=(("cache_source", "device"),),
        prefix_queries="sglang:prompt_tokens",
        prompt_tokens="sglang:prompt_tokens",
        generation_tokens="sglang:generation_tokens",
        request_success="sglang:num_requests",
        ttft="sglang:time_to_first_token_seconds",
        itl="sglang:inter_token_latency_seconds",
        e2e="sglang:e2e_request_latency_seconds",
        queue_time="sglang:queue_time_seconds",
        pd_transfer_misses="sglang:num_transfer_failed_reqs",
    )
    pd: ClassVar[PdProtocol] = PdProtocol(
        handoff="bootstrap-room",
        request_fields=("bootstrap_host", "bootstrap_port", "bootstrap_room"),
        decode_cached_includes_transfer=False,
        decode_alone=False,  # a decode-mode server rejects a request without bootstrap_room
        prefill_queue="sglang:num_prefill_bootstrap_queue_reqs",
        transfer_queue="sglang:num_decode_transfer_queue_reqs",
    )
    # /health_generate runs one decode step: the pod is started only once the model generates.
    probes: ClassVar[Probes] = Probes(
        startup=Probe("/health_generate", initial_delay_s=15, period_s=30, timeout_s=10,
                      failure_threshold=60),
        readiness=Probe("/health", period_s=5, timeout_s=2, failure_threshold=3),
        liveness=Probe("/health", period_s=10, timeout_s=5, failure_threshold=3),
    )
    scraped_families: ClassVar[tuple[str, ...]] = scraped_families(metric_names)
    kv_events: ClassVar[KvEventsDialect] = SGLangKvEvents()
    block_size_flag: ClassVar[str] = "--page-size"
    identity_routes: ClassVar[tuple[str, ...]] = tuple(_IDENTITY)

    def serve_command(self) -> list[str]:
        return ["python3", "-m", "sglang.launch_server"]

    def serve_args(self, spec: ServeSpec, *, model_as_flag: bool = False) -> list[str]:
        # SGLang always takes the model as a flag; `model_as_flag` changes nothing here.
        user = spec.extra_args
        args = ["--model-path", spec.model]
        if spec.host is not None:
            args += ["--host", spec.host]
        if spec.port is not None:
            args += ["--port", str(spec.port)]
        if spec.tensor_parallel > 1:
            args += ["--tensor-parallel-size", str(spec.tensor_parallel)]
        if spec.data_parallel > 1:
            args += ["--data-parallel-size", str(spec.data_parallel)]
        if spec.multinode is not None:
            mn = spec.multinode
            args += ["--dist-init-addr", f"{mn.leader_address}:{mn.dist_init_port}",
                     "--nnodes", mn.nnodes, "--node-rank", mn.node_rank]
        if spec.served_model_name:
            args += ["--served-model-name", spec.served_model_name]
        if not has_flag(user, "--enable-metrics"):
            args.append("--enable-metrics")
        if spec.tracing is not None and not has_flag(user, "--otlp-traces-endpoint"):
            # SGLang wants host:port for its OTLP gRPC exporter, not a URL.
            endpoint = spec.tracing.endpoint.split("://", 1)[-1]
            args += ["--enable-trace", "--otlp-traces-endpoint", endpoint]
        if spec.role != "both" and not has_flag(user, "--disaggregation-mode"):
            args += ["--disaggregation-mode", spec.role]
            if not has_flag(user, "--disaggregation-transfer-backend"):
                backend = spec.transfer_backend or DEFAULT_TRANSFER_BACKEND
                args += ["--disaggregation-transfer-backend", backend]
            if spec.role == "prefill" and not has_flag(user, "--disaggregation-bootstrap-port"):
                args += ["--disaggregation-bootstrap-port", str(spec.bootstrap_port)]
        if spec.kv_events is not None and not has_flag(user, "--kv-events-config"):
            events = self.kv_events.serve_config(spec.kv_events.endpoint, spec.kv_events.topic)
            args += ["--kv-events-config", json.dumps(events, separators=(",", ":"))]
        if spec.expert_parallel and not has_flag(user, "--ep-size"):
            # SGLang's MoE layers take the expert-parallel size equal to the tensor-parallel one.
            args += ["--ep-size", str(spec.tensor_parallel)]
        if spec.lora is not None and not has_flag(user, "--lora-paths"):
            args += _lora_args(spec.lora, user)
        return args + list(user)

    def serve_argv(self, spec: ServeSpec) -> list[str]:
        return self.serve_command() + self.serve_args(spec)

    def side_ports(self, spec: ServeSpec) -> tuple[int, ...]:
        if spec.role != "prefill" or has_flag(spec.extra_args, "--disaggregation-bootstrap-port"):
            return ()
        return (spec.bootstrap_port,)

    def endpoint_metrics(self, page: MetricsPage) -> EndpointMetrics:
        return metrics_from_page(page, self.metric_names)

    def recognize(self, answers: ServerAnswers) -> tuple[str, ...]:
        return recognize(answers, self.engine_type_label, self.metric_names, _IDENTITY)

    def reported_pd(self, answers: ServerAnswers) -> ReportedPd:
        info = next((body for route in ("/server_info", "/get_server_info")
                     if isinstance(body := answers.json.get(route), dict)), None)
        if info is None:
            return ReportedPd()
        role = _MODES.get(info.get("disaggregation_mode"))
        port = info.get("disaggregation_bootstrap_port")
        side = port if role == "prefill" and isinstance(port, int) and 0 < port < 65536 else None
        return ReportedPd(role, side)

    def prefill_counters(self, page: MetricsPage) -> PrefillCounters | None:
        return prefill_from_page(page, self.metric_names)


def _lora_args(lora: LoraSpec, user: tuple[str, ...]) -> list[str]:
    args = [] if has_flag(user, "--enable-lora") else ["--enable-lora"]
    args += ["--lora-paths", *(f"{name}={path}" for name, path in lora.adapters)]
    if lora.max_rank is not None and not has_flag(user, "--max-lora-rank"):
        args += ["--max-lora-rank", str(lora.max_rank)]
    if lora.max_adapters is not None and not has_flag(user, "--max-loras-per-batch"):
        args += ["--max-loras-per-batch", str(lora.max_adapters)]
    return args
