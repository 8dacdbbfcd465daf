"""vLLM: `vllm serve`, `vllm:` metrics, NIXL v2 P/D through the sidecar."""

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
from llmd.engines._vllm_kv import VllmKvEvents
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
    ServerAnswers,
    ServeSpec,
)
from llmd.engines.kv_events import KvEventsDialect
from llmd.engines.page import MetricsPage

__all__ = ["VllmAdapter"]

KV_TRANSFER_CONFIG = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}


class VllmAdapter:
    """vLLM (>= 0.10, V1 engine)."""

    name: ClassVar[EngineName] = "vllm"
    engine_type_label: ClassVar[str] = "vllm"
    sidecar_connector: ClassVar[str] = "nixlv2"
    serve_model_command: ClassVar[str] = "vllmServe"
    env_prefixes: ClassVar[tuple[str, ...]] = ("VLLM_",)
    default_port: ClassVar[int] = 8000
    listen_host: ClassVar[str | None] = None  # vLLM binds every interface by default
    tp_spans_nodes: ClassVar[bool] = False  # only with Ray, which llmd does not deploy
    command_markers: ClassVar[tuple[str, ...]] = ("vllm", "vllm.entrypoints.openai.api_server")
    extra_routes: ClassVar[frozenset[str]] = frozenset({"/health", "/tokenize"})
    metric_names: ClassVar[MetricNames] = MetricNames(
        waiting="vllm:num_requests_waiting",
        running="vllm:num_requests_running",
        kv_usage="vllm:kv_cache_usage_perc",
        kv_usage_fallback="vllm:gpu_cache_usage_perc",
        cache_config_info="vllm:cache_config_info",
        block_size_label="block_size",
        num_blocks_label="num_gpu_blocks",
        lora_info="vllm:lora_requests_info",
        prefix_hits="vllm:prefix_cache_hits",
        prefix_queries="vllm:prefix_cache_queries",
        prompt_tokens="vllm:prompt_tokens",
        generation_tokens="vllm:generation_tokens",
        request_success="vllm:request_success",
        ttft="vllm:time_to_first_token_seconds",
        itl="vllm:inter_token_latency_seconds",
        e2e="vllm:e2e_request_latency_seconds",
        queue_time="vllm:request_queue_time_seconds",
        prefill_time="vllm:request_prefill_time_seconds",
        pd_transfer_misses="vllm:nixl_num_failed_transfers",
    )
    pd: ClassVar[PdProtocol] = PdProtocol(
        handoff="kv-transfer-params",
        request_fields=("kv_transfer_params",),
        decode_cached_includes_transfer=True,  # num_cached_tokens counts the connector's tokens
        decode_alone=True,  # kv_both: no kv_transfer_params means a local prefill
    )
    # The llm-d guides' probes: the OpenAI model list answers only once the engine is up.
    probes: ClassVar[Probes] = Probes(
        startup=Probe("/v1/models", initial_delay_s=15, period_s=30, timeout_s=5,
                      failure_threshold=60),
        readiness=Probe("/v1/models", period_s=5, timeout_s=2, failure_threshold=3),
        liveness=Probe("/health", period_s=10, timeout_s=5, failure_threshold=3),
    )
    scraped_families: ClassVar[tuple[str, ...]] = scraped_families(metric_names)
    kv_events: ClassVar[KvEventsDialect] = VllmKvEvents()
    block_size_flag: ClassVar[str] = "--block-size"
    # vLLM has no route SGLang lacks that every build serves (/server_info needs dev mode):
    # its model cards' owned_by and its always-on vllm: metrics tell it apart.
    identity_routes: ClassVar[tuple[str, ...]] = ()

    def serve_command(self) -> list[str]:
        return ["vllm", "serve"]

    def serve_args(self, spec: ServeSpec, *, model_as_flag: bool = False) -> list[str]:
        user = spec.extra_args
        args = ["--model", spec.model] if model_as_flag else [spec.model]
        if spec.host is not None:
            args += ["--host", spec.host]
        if spec.port is not None:
            args += ["--port", str(spec.port)]
        if spec.tensor_parallel > 1:
            args += ["--tensor-parallel-size", str(spec.tensor_parallel)]
        if spec.data_parallel > 1:
            args += ["--data-parallel-size", str(spec.data_parallel)]
        if spec.data_parallel_local > 1:
            args += ["--data-parallel-size-local", str(spec.data_parallel_local)]
        if spec.served_model_name:
            args += ["--served-model-name", spec.served_model_name]
        if spec.multinode is not None:
            args += _multinode_args(spec)
        if spec.tracing is not None and not has_flag(user, "--otlp-traces-endpoint"):
            args += ["--otlp-traces-endpoint", spec.tracing.endpoint]
            if spec.tracing.detailed:
                args += ["--collect-detailed-traces", spec.tracing.detailed]
        if spec.role != "both" and not has_flag(user, "--kv-transfer-config"):
            config = dict(KV_TRANSFER_CONFIG)
            if spec.transfer_backend:
                config["kv_connector"] = spec.transfer_backend
            args += ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
        if spec.kv_events is not None and not has_flag(user, "--kv-events-config"):
            events = self.kv_events.serve_config(spec.kv_events.endpoint, spec.kv_events.topic)
            args += ["--kv-events-config", json.dumps(events, separators=(",", ":"))]
        if spec.expert_parallel and not has_flag(user, "--enable-expert-parallel"):
            # vLLM's expert-parallel group is the whole tensor x data-parallel group.
            args.append("--enable-expert-parallel")
        if spec.lora is not None and not has_flag(user, "--lora-modules"):
            args += _lora_args(spec.lora, user)
        return args + list(user)

    def serve_argv(self, spec: ServeSpec) -> list[str]:
        return self.serve_command() + self.serve_args(spec)

    def side_ports(self, spec: ServeSpec) -> tuple[int, ...]:
        # NIXL's side channel port comes from VLLM_NIXL_SIDE_CHANNEL_PORT, set by the user.
        return ()

    def endpoint_metrics(self, page: MetricsPage) -> EndpointMetrics:
        return metrics_from_page(page, self.metric_names)

    def recognize(self, answers: ServerAnswers) -> tuple[str, ...]:
        return recognize(answers, self.engine_type_label, self.metric_names, {})

    def reported_pd(self, answers: ServerAnswers) -> ReportedPd:
        # --kv-transfer-config is not visible over HTTP: the user says role=prefill|decode.
        return ReportedPd()

    def prefill_counters(self, page: MetricsPage) -> PrefillCounters | None:
        return prefill_from_page(page, self.metric_names)


def _lora_args(lora: LoraSpec, user: tuple[str, ...]) -> list[str]:
    args = [] if has_flag(user, "--enable-lora") else ["--enable-lora"]
    args += ["--lora-modules", *(f"{name}={path}" for name, path in lora.adapters)]
    if lora.max_rank is not None and not has_flag(user, "--max-lora-rank"):
        args += ["--max-lora-rank", str(lora.max_rank)]
    if lora.max_adapters is not None and not has_flag(user, "--max-loras"):
        args += ["--max-loras", str(lora.max_adapters)]
    return args


def _multinode_args(spec: ServeSpec) -> list[str]:
    """vLLM's multi-node data parallelism: the leader serves the API for every rank, the other
    pods run `--headless` from rank `node_rank * data_parallel_local`.

    Kubernetes `$(VAR)` references cannot multiply, so with several local ranks the start rank
    is a shell expression (`$$` is Kubernetes' escape for `$`); the caller runs such an argv
    through `sh -c`.
    """
    assert spec.multinode is not None
    mn = spec.multinode
    args = ["--data-parallel-address", mn.leader_address,
            "--data-parallel-rpc-port", str(mn.dist_init_port)]
    if mn.worker:
        local = spec.data_parallel_local
        rank = mn.node_rank if local == 1 else f"$$(({mn.node_rank} * {local}))"
        args += ["--headless", "--data-parallel-start-rank", rank]
    return args
