"""The llm-d-modelservice values schema (chart v0.4.12, v0.3.8-era files accepted) plus llmd's
own sections, as pydantic models.

Models accept unknown keys (`extra="allow"`) because the chart's schema does: `unknown_keys()`
lists the ones that the chart would silently ignore, so `llmd render` can report them. Free-form
maps the chart passes through (labels, nodeSelector, extraConfig, env, ports, volumes, ...) are
plain dicts and lists.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from llmd import __version__
from llmd.config import LlmdModel
from llmd.deploy._types import Bool, Int, Level, Quantity
from llmd.engines import EngineName

__all__ = [
    "Accelerator",
    "Container",
    "Epp",
    "HttpRoute",
    "InferencePool",
    "LLMD_IMAGE",
    "LLMD_IMAGE_REPOSITORY",
    "Lora",
    "LoraAdapter",
    "ModelArtifacts",
    "ModelCommand",
    "Parallelism",
    "Proxy",
    "RoleValues",
    "Routing",
    "SsrfProtection",
    "Values",
]

ModelCommand = Literal["vllmServe", "sglangServe", "imageDefault", "custom"]
Json = dict[str, Any]

LLMD_IMAGE_REPOSITORY = "ghcr.io/llmd/llmd"
LLMD_IMAGE = f"{LLMD_IMAGE_REPOSITORY}:{__version__}"
"""The image every container that runs `llmd` gets by default (the EPP, the routing sidecar, the
operator): the repository's `Dockerfile`, built by `make image` with the same tag."""
ACCELERATOR_RESOURCES = {
    "nvidia": "nvidia.com/gpu",
    "intel-i915": "gpu.intel.com/i915",
    "intel-xe": "gpu.intel.com/xe",
    "intel-gaudi": "habana.ai/gaudi",
    "amd": "amd.com/gpu",
    "google": "google.com/tpu",
    "rebellions-atom": "rebellions.ai/ATOM",
}
DRA_TEMPLATES = (  # chart v0.4.12 defaults: (type, claim name stem, device class)
    ("nvidia", "nvidia", "gpu.nvidia.com"), ("intel", "intel", "gpu.intel.com"),
    ("intel-i915", "intel", "gpu.intel.com"), ("intel-xe", "intel", "gpu.intel.com"),
    ("intel-gaudi", "intel-gaudi", "gaudi.intel.com"), ("amd", "amd", "gpu.amd.com"),
    ("google", "google", "tpu.google.com"),
)
ACCELERATOR_ENV: dict[str, list[Json]] = {
    "intel-i915": [
        {"name": "VLLM_USE_V1", "value": "1"},
        {"name": "TORCH_LLM_ALLREDUCE", "value": "1"},
        {"name": "VLLM_WORKER_MULTIPROC_METHOD", "value": "spawn"},
    ],
    "intel-xe": [{"name": "VLLM_WORKER_MULTIPROC_METHOD", "value": "spawn"}],
}


def chart_map_defaults() -> dict[str, Any]:
    """The chart's default maps that values files extend key by key (Helm merges user maps
    into them): the pod labels, accelerator resources/env and DRA claim templates."""
    return {
        "modelArtifacts": {"labels": {"llm-d.ai/inference-serving": "true"}},
        "accelerator": {
            "resources": dict(ACCELERATOR_RESOURCES),
            "env": {k: list(v) for k, v in ACCELERATOR_ENV.items()},
            "resourceClaimTemplates": {
                k: {"name": f"{n}-claim-template", "class": c, "match": "exactly",
                    "selectors": []} for k, n, c in DRA_TEMPLATES},
        },
    }


class _Values(LlmdModel):
    """Chart values: unknown keys are kept (and reported by `unknown_keys`), a YAML `null`
    means "unset" as in Helm, and nothing is frozen."""

    model_config = ConfigDict(extra="allow", frozen=False)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in cls.nullable}
        return data


class Parallelism(_Values):
    """Per-pod tensor parallelism and data parallelism over the LWS group, as the chart's
    helpers compute them from whichever fields are set (see `effective`)."""

    tensor: Annotated[Int | None, Field(ge=1)] = None
    data: Annotated[Int | None, Field(ge=1)] = None
    data_local: Annotated[Int | None, Field(ge=1)] = None
    workers: Annotated[Int | None, Field(ge=1)] = None
    expert: Bool = False
    """llmd: expert parallelism for MoE models (the engine's own flag, from its adapter)."""


class Resources(_Values):
    limits: dict[str, Quantity] = {}
    requests: dict[str, Quantity] = {}
    claims: list[dict[str, str]] = []


class ResourceClaimRef(_Values):
    name: str
    resource_claim_template_name: str


class Container(_Values):
    name: str | None = None
    """Default: the engine's name (`vllm`, `sglang`)."""
    image: str | None = None
    model_command: ModelCommand | None = None
    engine: EngineName | None = None
    """llmd: the engine this container runs, for `imageDefault`/`custom` (default: detected
    from a custom command, else vLLM)."""
    command: list[str] = []
    args: list[str] = []
    env: list[Json] = []
    image_pull_policy: str = ""
    ports: list[Json] = []
    resources: Resources = Field(default_factory=Resources)
    mount_model_volume: Bool = False
    volume_mounts: list[Json] = []
    extra_config: Json = {}
    security_context: Json | None = None
    liveness_probe: Json | None = None
    readiness_probe: Json | None = None
    startup_probe: Json | None = None
    working_dir: str | None = None
    stdin: Bool | None = None
    tty: Bool | None = None
    probes: Bool = True
    """llmd: add the engine's startup/readiness/liveness probes when none are given."""


def _default_container() -> Container:
    return Container(
        name="vllm",
        image="ghcr.io/llm-d/llm-d-inference-sim:latest",
        model_command="imageDefault",
        mount_model_volume=True,
        volume_mounts=[{"name": "metrics-volume", "mountPath": "/.config"}],
    )


class RoleAccelerator(_Values):
    type: str | None = None
    dra: Bool | None = None


class AcceleratorTypes(_Values):
    label_key: str = ""
    label_values: list[str] = []


class PodMonitorValues(_Values):
    enabled: Bool = False
    port_name: str = "metrics"
    path: str = "/metrics"
    interval: str = "30s"
    scrape_timeout: str | None = None
    labels: Json = {}
    annotations: Json = {}
    relabelings: list[Json] = []
    metric_relabelings: list[Json] = []
    namespace_selector: Json | None = None


class Monitoring(_Values):
    podmonitor: PodMonitorValues = Field(default_factory=PodMonitorValues)


class Autoscaling(_Values):
    enabled: Bool = False


class RoleValues(_Values):
    """`decode` or `prefill`."""

    create: Bool = True
    replicas: Annotated[Int, Field(ge=0)] = 1
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    parallelism: Parallelism = Field(default_factory=Parallelism)
    accelerator: RoleAccelerator | None = None
    resource_claims: list[ResourceClaimRef] = []
    containers: list[Container] = Field(default_factory=lambda: [_default_container()])
    volumes: list[Json] = Field(
        default_factory=lambda: [{"name": "metrics-volume", "emptyDir": {}}])
    init_containers: list[Json] = []
    strategy: Json | None = None
    node_selector: Json = {}
    tolerations: list[Json] = []
    annotations: Json = {}
    pod_annotations: Json = {}
    scheduler_name: str | None = None
    priority_class_name: str | None = None
    enable_service_links: Bool | None = None
    termination_grace_period_seconds: Int | None = None
    host_ipc: Annotated[Bool | None, Field(alias="hostIPC")] = None
    host_pid: Annotated[Bool | None, Field(alias="hostPID")] = None
    sub_group_policy: Json | None = None
    sub_group_exclusive_topology: Bool | None = None
    accelerator_types: AcceleratorTypes = Field(default_factory=AcceleratorTypes)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    extra_config: Json = {}
    image_pull_secrets: list[Json] = []
    pod_security_context: Json | None = None


class PrefillValues(RoleValues):
    replicas: Annotated[Int, Field(ge=0)] = 0


class LoraAdapter(_Values):
    name: str
    uri: str
    """`hf://ORG/REPO` or an absolute path inside the pod (a mounted volume)."""


class Lora(_Values):
    """llmd: LoRA adapters every serving container loads at start."""

    adapters: list[LoraAdapter] = []
    max_rank: Annotated[Int | None, Field(ge=1)] = None
    max_adapters: Annotated[Int | None, Field(ge=1)] = None
    """Adapters served in one batch (vLLM `--max-loras`, SGLang `--max-loras-per-batch`)."""


class ModelArtifacts(_Values):
    name: str = "random/model"
    uri: str = "hf://{{ .Values.modelArtifacts.name }}"
    size: Quantity = "5Mi"
    auth_secret_name: str = ""
    mount_path: str = "/model-cache"
    read_only: Bool = True
    labels: dict[str, str] = Field(
        default_factory=lambda: {"llm-d.ai/inference-serving": "true"})
    lora: Lora | None = None


class Accelerator(_Values):
    type: str = "nvidia"
    dra: Bool = False
    resources: dict[str, str] = Field(default_factory=lambda: dict(ACCELERATOR_RESOURCES))
    env: dict[str, list[Json]] = Field(default_factory=lambda: dict(ACCELERATOR_ENV))
    resource_claim_templates: Json = Field(
        default_factory=lambda: chart_map_defaults()["accelerator"]["resourceClaimTemplates"])


class SsrfProtection(_Values):
    """llmd: the routing sidecar calls only prefill targets that are pods of an InferencePool
    (llm-d's `--enable-ssrf-protection`, which the chart cannot render), with RBAC to watch it."""

    enabled: Bool | None = None
    """Default: on wherever the sidecar is rendered and a pool is known (the rendered one, or
    `inferencePool`); without a pool, off with a warning. `false` turns it off, `true` makes a
    missing pool an error."""
    inference_pool: str | None = None
    """`name` or `namespace/name`; default: the rendered InferencePool (`routing.inferencePool`)
    in the pods' own namespace."""
    pool_group: Literal["inference.networking.k8s.io", "inference.networking.x-k8s.io"] = \
        "inference.networking.k8s.io"


class Proxy(_Values):
    """The routing sidecar in decode pods. llmd runs `llmd sidecar` unless `image` is an llm-d
    routing-sidecar image, which gets the chart's flags instead."""

    # Helm `null` removes a chart default, and with it the flag it would render.
    nullable: ClassVar[frozenset[str]] = frozenset({"secure", "zapEncoder", "zapLogLevel"})
    enabled: Bool = True
    image: str = LLMD_IMAGE
    image_pull_policy: str = "Always"
    target_port: Annotated[Int, Field(ge=1, le=65535)] = 8200
    connector: str | None = None
    """None: the decode engine's own connector (`nixlv2` for vLLM, `sglang` for SGLang)."""
    secure: Bool | None = False
    prefiller_use_tls: Annotated[Bool | None, Field(alias="prefillerUseTLS")] = None
    cert_path: str | None = None
    zap_devel: Bool | None = None
    zap_encoder: str | None = "json"
    zap_log_level: Level | None = "debug"
    zap_stacktrace_level: str | None = None
    zap_time_encoding: str | None = None
    resources: Json | None = None
    extra_args: list[str] = []
    """llmd: more `llmd sidecar` flags (e.g. `--enable-prefiller-sampling`)."""
    ssrf_protection: SsrfProtection = Field(default_factory=SsrfProtection)


class InferencePool(_Values):
    """llmd: an `inference.networking.k8s.io/v1` InferencePool over the model's pods."""

    enabled: Bool = False
    name: str | None = None
    target_ports: list[Int] | None = None
    """Default: `[routing.servicePort]` (the sidecar, or the engine without one)."""
    app_protocol: Literal["http", "kubernetes.io/h2c"] | None = None
    failure_mode: Literal["FailOpen", "FailClose"] = "FailOpen"


class ConfigMapKey(_Values):
    name: str
    key: str = "config.yaml"


class Epp(_Values):
    """llmd: the endpoint picker (`llmd epp`) for the pool, with its RBAC and config."""

    enabled: Bool | None = None
    """Default: on when the InferencePool is."""
    image: str = LLMD_IMAGE
    image_pull_policy: str = "IfNotPresent"
    replicas: Annotated[Int, Field(ge=1)] = 1
    """More than one: replicas spread over nodes, under a PodDisruptionBudget, finding each other
    through a headless Service and syncing (`llmd.deploy._epp_replicas`)."""
    config: Json | None = None
    """An EndpointPickerConfig; default: llm-d's default plugins (P/D-aware when P/D is on)."""
    config_ref: ConfigMapKey | None = None
    """llmd: the EndpointPickerConfig in an existing ConfigMap instead of `config`."""
    extra_args: list[str] = []
    resources: Json = Field(default_factory=lambda: {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})


class HttpRoute(_Values):
    """llmd: an HTTPRoute from a Gateway to the InferencePool."""

    enabled: Bool = False
    name: str | None = None
    parent_refs: list[Json] = []
    path_prefix: str = "/"
    timeout: str = "300s"


class Routing(_Values):
    service_port: Annotated[Int, Field(ge=1, le=65535)] = 8000
    proxy: Proxy = Field(default_factory=Proxy)
    inference_pool: InferencePool = Field(default_factory=InferencePool)
    epp: Epp = Field(default_factory=Epp)
    http_route: HttpRoute = Field(default_factory=HttpRoute)

    @property
    def epp_on(self) -> bool:
        """Whether the EPP is rendered: `epp.enabled`, by default on with the InferencePool."""
        return self.epp.enabled if self.epp.enabled is not None else self.inference_pool.enabled


class Sampling(_Values):
    sampler: str = "parentbased_traceidratio"
    sampler_arg: str = "1.0"


class ServiceNames(_Values):
    """`OTEL_SERVICE_NAME` per engine and role (the chart's `vllmDecode`/`vllmPrefill`, llmd's
    `sglangDecode`/`sglangPrefill`) and for the sidecar. A name applies only to pods of its
    own engine: `vllmDecode` never names an SGLang pod."""

    vllm_decode: str = "vllm-decode"
    vllm_prefill: str = "vllm-prefill"
    sglang_decode: str = "sglang-decode"
    sglang_prefill: str = "sglang-prefill"
    routing_proxy: str = "routing-proxy"

    def field_for(self, engine: str, role: str) -> str:
        """The field naming `engine`'s pods of `role`: `sglang_decode`."""
        return f"{engine}_{role}"

    def for_role(self, engine: str, role: str) -> str:
        """The service name of `engine`'s `role` pods (`<engine>-<role>` if no field)."""
        value = getattr(self, self.field_for(engine, role), None)
        return value if isinstance(value, str) else f"{engine}-{role}"


class TracingVllm(_Values):
    collect_detailed_traces: str | None = "all"


class Tracing(_Values):
    """OpenTelemetry traces from the engines (the adapter's flags) and the sidecar (env)."""

    enabled: Bool = False
    otlp_endpoint: str = "http://otel-collector:4317"
    sampling: Sampling = Field(default_factory=Sampling)
    service_names: ServiceNames = Field(default_factory=ServiceNames)
    vllm: TracingVllm = Field(default_factory=TracingVllm)


class Requester(_Values):
    """Fast-model-actuation dual pods: known so they are not reported, not rendered by llmd."""

    enable: Bool = False
    image: str = ""
    admin_port: Int = 8081
    port: Json = {}
    readiness_probe: Json = {}
    resources: Json = {}


class LegacyDra(_Values):
    """v0.3.8's top-level `dra` block (replaced by `accelerator.dra` in v0.4.0)."""

    enabled: Bool = False
    type: str | None = None
    claim_templates: list[Json] = []


class Values(_Values):
    """The whole values tree."""

    common: Json = {}
    enabled: Bool = True
    fullname_override: str = ""
    name_override: str = ""
    service_account_override: str = ""
    scheduler_name: str | None = None
    tracing: Tracing = Field(default_factory=Tracing)
    model_artifacts: ModelArtifacts = Field(default_factory=ModelArtifacts)
    multinode: Bool = False
    accelerator: Accelerator = Field(default_factory=Accelerator)
    requester: Requester = Field(default_factory=Requester)
    routing: Routing = Field(default_factory=Routing)
    decode: RoleValues = Field(default_factory=RoleValues)
    prefill: PrefillValues = Field(default_factory=PrefillValues)
    extra_objects: list[Json] = []
    dra: LegacyDra | None = None
