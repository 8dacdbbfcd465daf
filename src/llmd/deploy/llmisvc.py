"""The `llm-d.ai/v1alpha1` `LLMInferenceService` resource: one object that deploys vLLM or SGLang
with everything llm-d gives (P/D, multinode, the InferencePool, its EPP and an HTTPRoute).

These models are the single source: the CRD's schema is generated from them (`llmd.deploy.crd`),
their `cel_rules` are the CRD's `x-kubernetes-validations` and are evaluated by llmd too
(`_cel`), and `plan_service` maps a resource onto the same `Values` model `llmd render` plans
from, so a service deployed as a resource or from ModelService values gets the same objects.
Free-form Kubernetes structures (env, resources, probes, pod fields, parentRefs, the EPP config)
are passed through as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field

from llmd.config import LlmdModel
from llmd.deploy._cel import CelRule
from llmd.deploy._types import Bool, Int, Quantity
from llmd.engines import EngineName

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "ROOT_RULES", "SHORT_NAMES", "VERSION",
           "Condition", "InferenceServer",
           "InferenceServerOverride", "LLMInferenceServiceSpec", "Lora", "LoraAdapter",
           "ModelSpec", "Parallelism", "PrefillSpec", "RouterSpec", "SchedulerSpec",
           "ServiceStatus", "WorkerSpec", "WorkloadStatus", "root_rules"]

GROUP = "llm-d.ai"
VERSION = "v1alpha1"
KIND = "LLMInferenceService"
PLURAL = "llminferenceservices"
SHORT_NAMES = ["llmisvc"]
API_VERSION = f"{GROUP}/{VERSION}"

Json = dict[str, Any]
Name = Annotated[str, Field(min_length=1, max_length=253)]
PodFields = Annotated[Json, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


def _pod_fields_only(template: Json) -> Json:
    if "containers" in template:
        raise ValueError("containers: the serving container comes from inferenceServer; "
                         "give other pod fields here (initContainers, volumes, nodeSelector...)")
    return template


PodTemplate = Annotated[Json, AfterValidator(_pod_fields_only),
                        Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


class _Spec(LlmdModel):
    model_config = ConfigDict(use_attribute_docstrings=True)
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


class LoraAdapter(_Spec):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^=\s]+$")]
    """The name requests use as `model` to get this adapter."""
    uri: Annotated[str, Field(min_length=1)]
    """`hf://ORG/REPO`, or an absolute path in the pod (a volume `template` mounts)."""


class Lora(_Spec):
    adapters: Annotated[list[LoraAdapter], Field(min_length=1, max_length=64)]
    max_rank: Annotated[Int | None, Field(ge=1)] = None
    max_adapters: Annotated[Int | None, Field(ge=1)] = None
    """Adapters served in one batch (vLLM `--max-loras`, SGLang `--max-loras-per-batch`)."""

    cel_rules = (CelRule("self.adapters.all(a, self.adapters.exists_one(b, b.name == a.name))",
                         "adapter names must be unique", ".adapters"),)


class ModelSpec(_Spec):
    uri: Annotated[str, Field(pattern=r"^(hf|pvc|pvc\+hf|oci)://.+")]
    """`hf://ORG/MODEL`, `pvc://CLAIM/PATH`, `pvc+hf://CLAIM/CACHE/ORG/MODEL` or
    `oci://IMAGE`."""
    name: Name | None = None
    """The served model name (what requests put in `model`); default: `metadata.name`."""
    size: Quantity | None = None
    """Size of the download volume for `hf://` models (default 5Mi, the chart's)."""
    auth_secret_name: Name | None = None
    """A Secret whose `HF_TOKEN` key the engines get."""
    lora: Lora | None = None


class Parallelism(_Spec):
    tensor: Annotated[Int | None, Field(ge=1)] = None
    """Accelerators per data-parallel rank (default 1)."""
    data: Annotated[Int | None, Field(ge=1)] = None
    """Data-parallel ranks of one serving group (default: dataLocal)."""
    data_local: Annotated[Int | None, Field(ge=1)] = None
    """Data-parallel ranks per pod (default: data, or 1)."""
    expert: Bool | None = None
    """Expert parallelism for MoE models (the engine's own flag)."""

    cel_rules = (CelRule("!has(self.data) || !has(self.dataLocal) || "
                         "self.data % self.dataLocal == 0",
                         "data must be a multiple of dataLocal", ".data"),)


class _ServerFields(_Spec):
    image: Name | None = None
    args: list[str] | None = None
    """Extra engine arguments, after the ones llmd computes (the last of a repeated flag wins)."""
    env: list[PodFields] | None = None
    ports: list[PodFields] | None = None
    """Container ports to declare (default: the engine's serving port, named `metrics`)."""
    resources: PodFields | None = None
    """Default: the accelerators parallelism needs (`tensor x dataLocal` GPUs)."""
    readiness_probe: PodFields | None = None
    liveness_probe: PodFields | None = None
    startup_probe: PodFields | None = None
    """Probes override the engine's own (`/health`, SGLang `/health_generate`)."""


class InferenceServer(_ServerFields):
    type: EngineName
    """`vllm` or `sglang`: the serve command, flags, probes, metrics, P/D connector and KV
    events all follow from it."""
    image: Name


class InferenceServerOverride(_ServerFields):
    """The prefill pool's differences from `spec.inferenceServer` (unset fields inherit)."""

    type: EngineName | None = None
    """If given, must equal `spec.inferenceServer.type` (P/D stays within one engine)."""


class PrefillSpec(_Spec):
    """A prefill pool: with it, decode pods run behind the routing sidecar (P/D)."""

    replicas: Annotated[Int, Field(ge=1)]
    parallelism: Parallelism | None = None
    """Default: `spec.parallelism`."""
    inference_server: InferenceServerOverride | None = None
    template: PodTemplate | None = None
    """Default: `spec.template`."""


class WorkerSpec(_Spec):
    """Multinode: every replica is a LeaderWorkerSet group of `nodes` pods."""

    nodes: Annotated[Int | None, Field(ge=2)] = None
    """Pods per group, leader included (default: parallelism.data / dataLocal)."""


class ConfigMapKeyRef(_Spec):
    name: Name
    key: Name = "config.yaml"


class SchedulerSpec(_Spec):
    """The endpoint picker (`llmd epp`) of the service's InferencePool."""

    replicas: Annotated[Int | None, Field(ge=1)] = None
    """More than one: active-active replicas that share one view (default 1)."""
    precise: Bool | None = None
    """Route by the engines' own KV-cache events (precise prefix-cache routing)."""
    config: PodFields | None = None
    """An EndpointPickerConfig (`llm-d.ai/v1alpha1` or v1); default: llm-d's default plugins,
    P/D-aware with `prefill`."""
    config_ref: ConfigMapKeyRef | None = None
    """An EndpointPickerConfig in an existing ConfigMap."""
    image: Name | None = None

    cel_rules = (
        CelRule("!(has(self.config) && has(self.configRef))",
                "give either config or configRef, not both"),
        CelRule("!(has(self.precise) && self.precise && (has(self.config) || "
                "has(self.configRef)))",
                "precise: true selects llmd's precise default config; with your own config, "
                "put precise-prefix-cache-scorer in it instead", ".precise"),
        CelRule("!(has(self.configRef) && has(self.replicas) && self.replicas > 1)",
                "several replicas need an inline config (llmd adds their sync to it)",
                ".configRef"),
    )


class PoolRef(_Spec):
    name: Name


class PoolSpec(_Spec):
    ref: PoolRef | None = None
    """Join this existing InferencePool (its EPP picks) instead of creating one; the pods
    must carry the labels its selector names (`spec.labels`)."""


class GatewaySpec(_Spec):
    parent_refs: Annotated[list[PodFields], Field(min_length=1, max_length=32)]
    """Gateway API `parentRefs` of the HTTPRoute llmd creates to the InferencePool."""
    path_prefix: Annotated[str, Field(pattern=r"^/")] = "/"
    timeout: str = "300s"


class RouterSpec(_Spec):
    """With a router the service gets an InferencePool, its EPP and (with `gateway`) an
    HTTPRoute; `{}` takes every default."""

    gateway: GatewaySpec | None = None
    pool: PoolSpec | None = None
    scheduler: SchedulerSpec | None = None

    cel_rules = (
        CelRule("!(has(self.pool) && has(self.pool.ref) && (has(self.scheduler) || "
                "has(self.gateway)))",
                "a joined pool (pool.ref) brings its own EPP and routes: leave out scheduler "
                "and gateway", ".pool.ref"),
    )


class MonitoringSpec(_Spec):
    pod_monitor: Bool | None = None
    """A Prometheus Operator PodMonitor per role, scraping the engines' `/metrics`."""


class LLMInferenceServiceSpec(_Spec):
    model: ModelSpec
    inference_server: InferenceServer
    replicas: Annotated[Int | None, Field(ge=0)] = None
    """Decode (or, without `prefill`, serving) replicas; default 1."""
    parallelism: Parallelism | None = None
    prefill: PrefillSpec | None = None
    worker: WorkerSpec | None = None
    router: RouterSpec | None = None
    labels: Annotated[dict[str, str] | None, Field(min_length=1)] = None
    """Labels of every model pod, which the InferencePool selects; default
    `llm-d.ai/inference-serving: "true"` and `llm-d.ai/model: <metadata.name>`."""
    template: PodTemplate | None = None
    """Pod fields merged into every model pod's spec (nodeSelector, tolerations, volumes,
    affinity, ...); containers come from `inferenceServer`."""
    monitoring: MonitoringSpec | None = None
    accelerator: Annotated[str | None, Field(min_length=1)] = None
    """The chart's `accelerator.type` (`nvidia` by default, `amd`, `intel-gaudi`, `google`...):
    which resource name the accelerators are requested under."""

    cel_rules = (
        CelRule("!has(self.prefill) || has(self.router)",
                "P/D needs a router: the EPP picks the prefill pod of every request",
                ".prefill"),
        CelRule("!has(self.prefill) || !has(self.prefill.inferenceServer) || "
                "!has(self.prefill.inferenceServer.type) || "
                "self.prefill.inferenceServer.type == self.inferenceServer.type",
                "prefill and decode must run the same engine (its P/D connector)",
                ".prefill.inferenceServer.type"),
        CelRule("!(has(self.router) && has(self.router.pool) && has(self.router.pool.ref) "
                "&& has(self.prefill))",
                "P/D needs llmd's EPP (its decode/prefill profiles): a joined pool cannot "
                "serve a prefill pool", ".router.pool.ref"),
    )



class Condition(_Spec):
    """A Kubernetes condition: `Ready`, `WorkloadsReady` or `RouterReady`."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    """CamelCase, e.g. `InvalidSpec`, `WorkloadsNotReady`, `Ready`."""
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: Int | None = None


class WorkloadStatus(_Spec):
    replicas: Int | None = None
    ready_replicas: Int | None = None


class ServiceStatus(_Spec):
    """What the operator last saw of the service's objects."""

    observed_generation: Int | None = None
    """The `metadata.generation` the conditions describe."""
    url: str | None = None
    """Where clients send OpenAI requests: the Gateway's address and the route's path."""
    conditions: list[Condition] | None = None
    workloads: dict[str, WorkloadStatus] | None = None
    """Per role (`decode`, `prefill`, `epp`): desired and ready replicas (groups for a
    LeaderWorkerSet)."""


ROOT_RULES = (
    CelRule("self.metadata.name.size() <= 55 && "
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "a DNS label of at most 55 characters (lowercase letters, digits, '-'): object "
            "names append -decode, -prefill and -epp, and Services need a DNS label",
            ".metadata.name"),
)
"""Rules on the whole object (the CRD's root schema may read `metadata.name`)."""


def root_rules(metadata: Json) -> list[tuple[str, str]]:
    """(path, message) for each root rule the object's `metadata` breaks."""
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return [("metadata.name", "required")]
    return [((rule.field_path or "").lstrip("."), rule.message) for rule in ROOT_RULES
            if not rule.holds({"metadata": metadata})]


class LLMInferenceService(LlmdModel):
    """The whole object, as `kubectl apply` sends it."""

    api_version: Literal["llm-d.ai/v1alpha1"]
    kind: Literal["LLMInferenceService"]
    metadata: PodFields
    spec: LLMInferenceServiceSpec
    status: ServiceStatus | None = None
