"""Engine-neutral types and the `EngineAdapter` protocol every engine module implements.

Everything that differs between vLLM and SGLang is a method or attribute of an adapter;
callers never branch on the engine name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from llmd.engines.kv_events import KvEventsDialect
    from llmd.engines.page import MetricsPage

EngineName = Literal["vllm", "sglang"]
Role = Literal["both", "prefill", "decode"]
ENGINE_TYPE_LABEL = "llm-d.ai/engine-type"
ROLE_LABEL = "llm-d.ai/role"


@dataclass(frozen=True, slots=True)
class LoraState:
    """LoRA adapters an endpoint reports (vLLM's `lora_requests_info`)."""

    max_lora: int
    running: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """One scrape of one endpoint, in engine-neutral units.

    `kv_usage` is a 0..1 ratio. `block_size` is tokens per KV block (SGLang: page size) and
    `total_blocks` the number of blocks (SGLang: pages); both None when not reported.
    `prefix_cache_hits`/`prefix_cache_queries` are cumulative token counters.
    """

    waiting: int = 0
    running: int = 0
    kv_usage: float = 0.0
    block_size: int | None = None
    total_blocks: int | None = None
    lora: LoraState | None = None
    prefix_cache_hits: float | None = None
    prefix_cache_queries: float | None = None


@dataclass(frozen=True, slots=True)
class MetricNames:
    """The engine's own Prometheus names: read by the adapter's parser, exported by the simulator.

    Counter names are given without the `_total` suffix, as prometheus-client declares them.
    `prefix_hits_labels` selects the label set of the hit counter that counts cache hits.
    """

    waiting: str
    running: str
    kv_usage: str
    cache_config_info: str
    block_size_label: str
    num_blocks_label: str
    prefix_hits: str
    prefix_queries: str
    prompt_tokens: str
    generation_tokens: str
    request_success: str
    ttft: str
    itl: str
    e2e: str
    queue_time: str
    kv_usage_fallback: str | None = None
    prefill_time: str | None = None
    """A per-request prefill-time histogram (vLLM's); None: prefill time is TTFT − queue time."""
    lora_info: str | None = None
    prefix_hits_labels: tuple[tuple[str, str], ...] = ()
    pd_transfer_misses: str | None = None


@dataclass(frozen=True, slots=True)
class PrefillCounters:
    """Cumulative prefill work an endpoint reports on one /metrics page: prompt tokens, those
    served from its prefix cache, seconds spent prefilling (summed over requests) and the
    requests counted. Two pages' difference gives its prefill throughput."""

    prompt_tokens: float
    cached_tokens: float
    prefill_seconds: float
    requests: float


@dataclass(frozen=True, slots=True)
class PdProtocol:
    """How an engine's prefill and decode instances hand the prompt's KV over.

    `handoff` is "kv-transfer-params" (vLLM NIXL: serial legs; the prefill answer carries
    `kv_transfer_params` naming the held blocks, the decode leg pulls them and prefills locally
    when they are invalid or gone) or "bootstrap-room" (SGLang: both legs carry
    `request_fields` at once; the decode side meets the prefill at the prefill server's
    bootstrap port and fails when the room never arrives).
    `decode_cached_includes_transfer`: the decode leg counts transferred tokens as cached in
    `usage` (vLLM reports external tokens as computed). `decode_alone`: a decode-role server
    also serves a request that has no prefill peer (vLLM's `kv_both` NixlConnector computes it
    locally; an SGLang `--disaggregation-mode decode` server needs a bootstrap room on every
    request, so the EPP must give each one a prefill endpoint). The queue gauges are the
    engine's own names for prefill requests waiting for their decode peer and decode requests
    waiting for KV (None: the engine reports no such gauge).
    """

    handoff: Literal["kv-transfer-params", "bootstrap-room"]
    request_fields: tuple[str, ...]
    decode_cached_includes_transfer: bool
    decode_alone: bool
    prefill_queue: str | None = None
    transfer_queue: str | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """An HTTP GET probe, as a Kubernetes container probe renders it."""

    path: str
    initial_delay_s: int = 0
    period_s: int = 10
    timeout_s: int = 5
    failure_threshold: int = 3


@dataclass(frozen=True, slots=True)
class Probes:
    startup: Probe
    readiness: Probe
    liveness: Probe


@dataclass(frozen=True, slots=True)
class KvEventsSpec:
    """Where the engine publishes KV-cache events over ZMQ (topic `kv@<ip>:<port>@<model>`)."""

    endpoint: str = "tcp://*:5557"
    topic: str = ""


@dataclass(frozen=True, slots=True)
class MultinodeSpec:
    """One engine spread over `nnodes` hosts (LeaderWorkerSet); values may be `$(ENV)` refs.

    `worker` marks the argv of the non-leader pods (engines whose followers differ, such as
    vLLM's headless data-parallel ranks); `dist_init_port` is where the leader coordinates.
    """

    leader_address: str
    nnodes: str
    node_rank: str
    dist_init_port: int = 20000
    worker: bool = False


@dataclass(frozen=True, slots=True)
class TracingSpec:
    """OpenTelemetry trace export: OTLP gRPC `endpoint` (e.g. `http://otel-collector:4317`);
    `detailed` is vLLM's `--collect-detailed-traces` (engines without it ignore it)."""

    endpoint: str
    detailed: str | None = None


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """LoRA adapters the server loads at start: `(name, path or HF repo id)` pairs; `max_rank`
    and `max_adapters` (adapters in one batch) None leave the engine's defaults."""

    adapters: tuple[tuple[str, str], ...]
    max_rank: int | None = None
    max_adapters: int | None = None


@dataclass(frozen=True, slots=True)
class ServeSpec:
    """What to serve and how; turned into argv by `EngineAdapter.serve_args`.

    `port`/`host` None means "do not pass the flag" (the engine default applies).
    `transfer_backend` None picks the adapter's default P/D transport.
    """

    model: str
    served_model_name: str | None = None
    host: str | None = None
    port: int | None = None
    tensor_parallel: int = 1
    data_parallel: int = 1
    data_parallel_local: int = 1
    role: Role = "both"
    transfer_backend: str | None = None
    bootstrap_port: int = 8998
    kv_events: KvEventsSpec | None = None
    multinode: MultinodeSpec | None = None
    tracing: TracingSpec | None = None
    expert_parallel: bool = False
    """Spread MoE experts over the group's accelerators instead of sharding each expert."""
    lora: LoraSpec | None = None
    extra_args: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ServerAnswers:
    """A running server's answers to llmd's identifying GETs (`llmd.engines.identify`):
    `json` maps each route that answered 200 with JSON to the parsed body, `metric_families`
    holds the metric names of its `/metrics` page (empty when it has none)."""

    json: Mapping[str, object] = field(default_factory=dict)
    metric_families: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ReportedPd:
    """The P/D setup a running server reports about itself: its role and the side port a
    prefill server listens on (SGLang's bootstrap port); None where it reports nothing."""

    role: Role | None = None
    side_port: int | None = None


class EngineAdapter(Protocol):
    """Everything llmd needs to know about one inference engine. Methods are pure."""

    name: ClassVar[EngineName]
    engine_type_label: ClassVar[str]
    """Value of the `llm-d.ai/engine-type` pod label."""
    sidecar_connector: ClassVar[str]
    """`llmd sidecar --kv-connector` value for this engine's P/D protocol."""
    serve_model_command: ClassVar[str]
    """ModelService `modelCommand` that runs this engine's server (`vllmServe`, `sglangServe`)."""
    env_prefixes: ClassVar[tuple[str, ...]]
    """Prefixes of the environment variables only this engine reads (`VLLM_`): a renderer keeps
    them off the other engines' containers."""
    metric_names: ClassVar[MetricNames]
    pd: ClassVar[PdProtocol]
    """The engine's P/D handshake (what the legs carry, how the decode side gets the KV)."""
    kv_events: ClassVar[KvEventsDialect]
    """The engine's KV events: `--kv-events-config`, socket rule, block hash, event fields."""
    probes: ClassVar[Probes]
    default_port: ClassVar[int]
    listen_host: ClassVar[str | None]
    """`--host` that makes the server reachable from outside its pod (None: the default does)."""
    tp_spans_nodes: ClassVar[bool]
    """Whether a multinode group may spread tensor parallelism over hosts without Ray."""
    command_markers: ClassVar[tuple[str, ...]]
    """Tokens whose presence in a custom command's argv identifies this engine."""
    extra_routes: ClassVar[frozenset[str]]
    """Engine-specific HTTP routes beyond the OpenAI API (the simulator serves exactly these)."""
    scraped_families: ClassVar[tuple[str, ...]]
    """Metric families `endpoint_metrics` reads (the scraper parses only these)."""
    block_size_flag: ClassVar[str]
    """The option that sets the KV-cache block (page) size in tokens."""
    identity_routes: ClassVar[tuple[str, ...]]
    """JSON routes only this engine serves, GET'd to recognise a running server and read its
    P/D setup (`recognize`, `reported_pd`)."""

    def serve_command(self) -> list[str]:
        """The executable part of the serve argv (e.g. `vllm serve`)."""
        ...

    def serve_args(self, spec: ServeSpec, *, model_as_flag: bool = False) -> list[str]:
        """Arguments after `serve_command()`; `model_as_flag` passes the model as a flag
        (for images whose entrypoint already is the server)."""
        ...

    def serve_argv(self, spec: ServeSpec) -> list[str]:
        """`serve_command() + serve_args(spec)`."""
        ...

    def side_ports(self, spec: ServeSpec) -> tuple[int, ...]:
        """Ports the server binds besides `spec.port` (e.g. SGLang's prefill bootstrap)."""
        ...

    def endpoint_metrics(self, page: MetricsPage) -> EndpointMetrics:
        """Map one scraped /metrics page to engine-neutral fields."""
        ...

    def recognize(self, answers: ServerAnswers) -> tuple[str, ...]:
        """Why the answering server is this engine (one reason per sign found, readable:
        "/v1/models owned_by 'vllm'"); empty when nothing in `answers` is this engine's."""
        ...

    def reported_pd(self, answers: ServerAnswers) -> ReportedPd:
        """The P/D role and side port the server reports (vLLM reports neither over HTTP)."""
        ...

    def prefill_counters(self, page: MetricsPage) -> PrefillCounters | None:
        """The page's cumulative prefill work; None when it lacks the engine's counters."""
        ...
