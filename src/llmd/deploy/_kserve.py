"""KServe's `LLMInferenceService` spec → the `llm-d.ai` one (`llmd convert`).

KServe picks SGLang through `spec.runtime: kserve-llm-sglang` (or an image/command that runs
`sglang`) and silently falls back to vLLM presets for `prefill` and `worker`; here the engine
type carries over to every role, so a P/D or multinode SGLang service converts as SGLang.
Fields without a place in the resource are named in `notes`.
"""

from __future__ import annotations

import re
from typing import Any

from llmd.deploy._llmisvc_plan import MODEL_LABEL, SERVING_LABEL
from llmd.engines import DEFAULT_ENGINE, EngineName, engine_for_command

__all__ = ["kserve_spec"]

Json = dict[str, Any]
MAIN = "main"  # KServe's name for the serving container in `template`/`prefill.template`
_CONTAINER_KEYS = ("image", "args", "env", "ports", "resources", "readinessProbe",
                   "livenessProbe", "startupProbe")
_UNSUPPORTED = {
    "baseRefs": "LLMInferenceServiceConfig presets are not resolved offline; merge them into "
                "the spec first",
    "tracing": "tracing: give the engine's OpenTelemetry flags in inferenceServer.args",
    "kvCacheOffloading": "KV-cache offloading: give the engine's flags in "
                         "inferenceServer.args",
    "scaling": "autoscaling is not part of the resource; replicas is taken from minReplicas",
    "rolloutStrategy": "the resource rolls Deployments with their default strategy",
    "storageInitializer": "the model is fetched by the engine (hf://) or mounted (pvc://)",
    "annotations": "workload annotations are not carried",
}


def kserve_spec(spec: Json, name: str, notes: list[str]) -> Json:
    """The resource's `spec` for KServe `spec`; `notes` gets what was not carried over."""
    engine = _engine(spec)
    out: Json = {"model": _model(spec.get("model") or {}, notes)}
    main, template = _split_template(spec.get("template"), "template", notes)
    out["inferenceServer"] = {"type": engine, **main}
    if "image" not in main:
        notes.append("template.containers[main].image: KServe takes it from its presets; "
                     "set spec.inferenceServer.image")
    for key, why in _UNSUPPORTED.items():
        if spec.get(key):
            notes.append(f"{key}: {why}")
    scaling = spec.get("scaling") or {}
    replicas = spec.get("replicas", scaling.get("minReplicas"))
    if replicas is not None:
        out["replicas"] = replicas
    if parallelism := _parallelism(spec.get("parallelism"), "parallelism", notes):
        out["parallelism"] = parallelism
    if template:
        out["template"] = template
    if spec.get("worker") is not None:
        out["worker"] = {}
        if spec["worker"]:
            notes.append("worker: the pod spec of KServe's worker pods is not carried; worker "
                         "pods run the leader's container with the engine's worker flags")
    if isinstance(spec.get("labels"), dict) and spec["labels"]:
        out["labels"] = {SERVING_LABEL: "true", MODEL_LABEL: name, **spec["labels"]}
    if (prefill := spec.get("prefill")) is not None:
        out["prefill"] = _prefill(prefill, engine, main, notes)
    if (router := spec.get("router")) is not None:
        out["router"] = _router(router, notes)
    return out


def _engine(spec: Json) -> EngineName:
    """The engine the runtime's name (`kserve-llm-sglang`) names, else the one the `main`
    container's image or command runs (the adapters' command markers), else llmd's default."""
    runtime = re.split(r"[-_./:\s]+", str(spec.get("runtime", "")))
    containers = (spec.get("template") or {}).get("containers") or []
    words = [w for c in containers for key in ("image", "command", "args")
             for part in (c.get(key) if isinstance(c.get(key), list) else [c.get(key) or ""])
             for w in re.split(r"[/:\s]+", str(part))]
    return engine_for_command(runtime) or engine_for_command(words) or DEFAULT_ENGINE


def _model(model: Json, notes: list[str]) -> Json:
    out: Json = {"uri": model.get("uri", "")}
    if model.get("name"):
        out["name"] = model["name"]
    scheme = str(out["uri"]).partition("://")[0]
    if scheme not in ("hf", "pvc", "oci"):
        notes.append(f"model.uri: {out['uri']!r}: llmd serves hf://, pvc://, pvc+hf:// and "
                     "oci:// models (copy it to a PVC or an OCI image)")
    lora = model.get("lora") or {}
    adapters = [{"name": a.get("name") or f"adapter-{i}", "uri": a.get("uri", "")}
                for i, a in enumerate(lora.get("adapters") or [])]
    if adapters:
        out["lora"] = {"adapters": adapters}
        if lora.get("maxRank"):
            out["lora"]["maxRank"] = lora["maxRank"]
        if lora.get("maxAdapters"):
            out["lora"]["maxAdapters"] = lora["maxAdapters"]
    if model.get("criticality"):
        notes.append("model.criticality: v1alpha1's criticality has no place in the resource "
                     "(InferenceObjective priorities replace it)")
    return out


def _split_template(template: Json | None, where: str, notes: list[str]) -> tuple[Json, Json]:
    """(the `main` container's carried fields, the other pod fields)."""
    if not template:
        return {}, {}
    pod = dict(template)
    containers = pod.pop("containers", None) or []
    main: Json = {}
    for i, c in enumerate(containers):
        if c.get("name") != MAIN:
            notes.append(f"{where}.containers[{i}] ({c.get('name')}): only the {MAIN!r} "
                         "container is carried (the resource's pods run the engine and, for "
                         "P/D, the routing sidecar)")
            continue
        main = {k: c[k] for k in _CONTAINER_KEYS if c.get(k)}
        if c.get("command"):
            notes.append(f"{where}.containers[{i}].command: not carried: the resource runs the "
                         "engine's own serve command with llmd's flags (extra flags go in args)")
    return main, pod


def _parallelism(parallelism: Json | None, where: str, notes: list[str]) -> Json:
    if not parallelism:
        return {}
    out = {k: parallelism[k] for k in ("tensor", "data", "dataLocal", "expert")
           if parallelism.get(k) is not None}
    for key in ("pipeline", "dataRPCPort"):
        if parallelism.get(key):
            notes.append(f"{where}.{key}: not supported (llmd's multinode groups spread data "
                         "parallelism, or SGLang's tensor parallelism, over pods)")
    return out


def _prefill(prefill: Json, engine: EngineName, main: Json, notes: list[str]) -> Json:
    scaling = prefill.get("scaling") or {}
    out: Json = {"replicas": prefill.get("replicas", scaling.get("minReplicas", 1))}
    if parallelism := _parallelism(prefill.get("parallelism"), "prefill.parallelism", notes):
        out["parallelism"] = parallelism
    own, template = _split_template(prefill.get("template"), "prefill.template", notes)
    override = {k: v for k, v in own.items() if main.get(k) != v}
    if override:
        out["inferenceServer"] = {"type": engine, **override}
    if template:
        out["template"] = template
    if prefill.get("worker") is not None:
        notes.append("prefill.worker: a multinode prefill pool is not supported; prefill pods "
                     "are single-node")
    return out


def _router(router: Json, notes: list[str]) -> Json:
    out: Json = {}
    refs = (router.get("gateway") or {}).get("refs") or []
    if refs:
        out["gateway"] = {"parentRefs": [{k: r[k] for k in ("name", "namespace") if r.get(k)}
                                         for r in refs]}
    route = router.get("route") or {}
    if (route.get("http") or {}).get("refs"):
        notes.append("router.route.http.refs: existing HTTPRoutes are not adopted; llmd "
                     "creates its own route to the pool (router.gateway.parentRefs)")
    elif "route" in router and not refs:
        notes.append("router.route: KServe's managed default gateway has no counterpart; set "
                     "router.gateway.parentRefs to the Gateway to attach to")
    scheduler = router.get("scheduler")
    if scheduler is not None:
        pool_ref = ((scheduler.get("pool") or {}).get("ref") or {}).get("name")
        if pool_ref:
            out["pool"] = {"ref": {"name": pool_ref}}
            out.pop("gateway", None)
            return out
        converted: Json = {}
        if scheduler.get("replicas"):
            converted["replicas"] = scheduler["replicas"]
        config = scheduler.get("config") or {}
        if isinstance(config.get("inline"), dict):
            converted["config"] = config["inline"]
        elif isinstance(config.get("ref"), dict) and config["ref"].get("name"):
            converted["configRef"] = {"name": config["ref"]["name"],
                                      "key": config["ref"].get("key", "config.yaml")}
        if scheduler.get("template"):
            notes.append("router.scheduler.template: the EPP's pod spec is not carried "
                         "(the resource runs `llmd epp` from the llmd image)")
        if converted:
            out["scheduler"] = converted
    return out
