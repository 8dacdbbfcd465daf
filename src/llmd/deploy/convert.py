"""`llmd convert`: ModelService values or a KServe `LLMInferenceService` → an `llm-d.ai` one.

What cannot be carried over is said, never dropped silently. For values the check is the
render itself: both the values and the converted resource are rendered and every difference
between their objects becomes a note (`Deployment qwen-decode: spec...containers[1]: only
from the values`), so an empty list of notes means the resource deploys exactly the same
objects. A KServe resource has no renderer here; its fields llmd does not carry are named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmd.deploy._kserve import kserve_spec
from llmd.deploy._llmisvc_plan import MODEL_LABEL, plan_service
from llmd.deploy._plan import plan_roles
from llmd.deploy._problems import validate
from llmd.deploy._sources import deep_merge, load_values_sources, render_tpl
from llmd.deploy.llmisvc import API_VERSION, KIND
from llmd.deploy.render import render_values
from llmd.deploy.values import Container, RoleValues, Values, chart_map_defaults
from llmd.errors import ConfigError

__all__ = ["Converted", "convert_files", "convert_kserve", "convert_values"]

Json = dict[str, Any]
KSERVE_GROUP = "serving.kserve.io"
_MAX_DIFFS = 6  # per object: enough to see what differs without flooding the terminal
_SERVER_KEYS = ("image", "args", "env", "ports", "resources", "readinessProbe",
                "livenessProbe", "startupProbe")


@dataclass
class Converted:
    resource: Json
    notes: list[str] = field(default_factory=list)
    """What was not carried over (empty: nothing)."""


def convert_files(files: Sequence[Path | str], sets: Sequence[str] = (), *,
                  name: str | None = None, namespace: str | None = None) -> Converted:
    """A KServe resource (one file) or merged ModelService values files → the resource."""
    if len(files) == 1 and not sets:
        data = yaml.safe_load(Path(files[0]).read_text())
        if isinstance(data, dict) and str(data.get("apiVersion", "")).startswith(KSERVE_GROUP):
            return convert_kserve(data, name=name, namespace=namespace)
    return convert_values(load_values_sources(files, sets), name=name, namespace=namespace)


def convert_values(tree: Json, *, name: str | None = None,
                   namespace: str | None = None) -> Converted:
    """ModelService values → the resource named `name` (default: the `llm-d.ai/model`
    label)."""
    values, problems, _ = validate(deep_merge(chart_map_defaults(), tree))
    if values is None or problems:
        raise ConfigError(problems or ["values: not valid"])
    errors: list[str] = []
    plans = {p.name: p for p in plan_roles(values, [], errors)}
    if errors:
        raise ConfigError(errors)
    name = name or values.model_artifacts.labels.get(MODEL_LABEL)
    if not name:
        raise ConfigError("--name: required (the values have no llm-d.ai/model label to name "
                          "the resource after)")
    decode = plans.get("decode")
    if decode is None:
        raise ConfigError("decode.create: false: a resource always has a decode (serving) role")
    notes: list[str] = []
    aliased = values.model_dump(by_alias=True)
    release = {"Name": name, "Namespace": namespace or "default"}
    artifacts = values.model_artifacts
    model: Json = {"uri": render_tpl(artifacts.uri, aliased, release, "modelArtifacts.uri"),
                   "name": artifacts.name, "size": artifacts.size}
    if artifacts.auth_secret_name:
        model["authSecretName"] = artifacts.auth_secret_name
    if artifacts.lora is not None:
        model["lora"] = artifacts.lora.model_dump(by_alias=True, exclude_none=True)
    server = _server(decode.values, decode.engine, notes, "decode")
    spec: Json = {"model": model, "inferenceServer": {"type": decode.engine, **server},
                  "replicas": decode.values.replicas, "labels": dict(artifacts.labels)}
    if parallelism := _parallelism(decode.values):
        spec["parallelism"] = parallelism
    if values.multinode:
        spec["worker"] = {"nodes": decode.parallel.workers}
    if template := _template(decode.values):
        spec["template"] = template
    if decode.values.monitoring.podmonitor.enabled:
        spec["monitoring"] = {"podMonitor": True}
    if values.accelerator.type != "nvidia":
        spec["accelerator"] = values.accelerator.type
    prefill = plans.get("prefill")
    if prefill is not None and prefill.pd:
        own = _server(prefill.values, prefill.engine, notes, "prefill")
        override = {k: v for k, v in own.items() if server.get(k) != v}
        override.update({k: None for k in server if k not in own})
        spec["prefill"] = {"replicas": prefill.values.replicas}
        if (p := _parallelism(prefill.values)) != spec.get("parallelism", {}):
            spec["prefill"]["parallelism"] = p or {"tensor": 1}
        if override:
            if any(v is None for v in override.values()):
                notes.append("prefill.containers[0]: fields decode sets and prefill does not "
                             f"({', '.join(k for k, v in override.items() if v is None)}) "
                             "are inherited by the resource's prefill pods")
            spec["prefill"]["inferenceServer"] = {k: v for k, v in override.items()
                                                  if v is not None}
        if (t := _template(prefill.values)) != template:
            spec["prefill"]["template"] = t
    if (router := _router(values)) is not None:
        spec["router"] = router
    if values.routing.proxy.enabled and not (prefill is not None and prefill.pd):
        notes.append("routing.proxy.enabled: the resource runs the routing sidecar only with "
                     "a prefill pool; without one the decode engine serves on "
                     f"{values.routing.service_port} itself (the port differences below "
                     "follow from this)")
    metadata: Json = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    resource = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    notes += _render_differences(tree, resource, name, namespace)
    return Converted(resource, notes)


def _server(role: RoleValues, engine: str, notes: list[str], where: str) -> Json:
    index = next((i for i, c in enumerate(role.containers)
                  if c.model_command in ("vllmServe", "sglangServe", "imageDefault")), None)
    if index is None:
        raise ConfigError(f"{where}.containers: no container runs vllmServe, sglangServe or "
                          "imageDefault; a custom command has no place in the resource (it "
                          "runs the engine's own serve command)")
    container: Container = role.containers[index]
    data = container.model_dump(by_alias=True, exclude_defaults=True)
    out = {k: data[k] for k in _SERVER_KEYS if data.get(k) not in (None, [], {})}
    if not out.get("resources") or not any(out["resources"].values()):
        out.pop("resources", None)
    return out


def _parallelism(role: RoleValues) -> Json:
    data = role.parallelism.model_dump(by_alias=True, exclude_none=True)
    data.pop("workers", None)
    if not data.get("expert"):
        data.pop("expert", None)
    return data


def _template(role: RoleValues) -> Json:
    """Pod fields the values set that the resource's `template` carries the same way."""
    out = dict(role.extra_config)
    if role.node_selector:
        out["nodeSelector"] = role.node_selector
    if role.tolerations:
        out["tolerations"] = role.tolerations
    if role.priority_class_name:
        out["priorityClassName"] = role.priority_class_name
    if role.image_pull_secrets:
        out["imagePullSecrets"] = role.image_pull_secrets
    return out


def _router(values: Values) -> Json | None:
    routing = values.routing
    if not routing.inference_pool.enabled:
        ssrf = routing.proxy.ssrf_protection.inference_pool
        return {"pool": {"ref": {"name": ssrf.rpartition("/")[2]}}} if ssrf else None
    router: Json = {}
    epp = routing.epp
    scheduler: Json = {}
    if epp.replicas != 1:
        scheduler["replicas"] = epp.replicas
    if epp.config is not None:
        scheduler["config"] = epp.config
    if epp.config_ref is not None:
        scheduler["configRef"] = epp.config_ref.model_dump(by_alias=True)
    if scheduler:
        router["scheduler"] = scheduler
    route = routing.http_route
    if route.enabled:
        router["gateway"] = {"parentRefs": route.parent_refs, "pathPrefix": route.path_prefix,
                             "timeout": route.timeout}
    return router


def _render_differences(tree: Json, resource: Json, name: str,
                        namespace: str | None) -> list[str]:
    """Every difference between the values' objects and the resource's, one note each."""
    try:
        converted = plan_service({**resource, "metadata": {**resource["metadata"],
                                                           "namespace": namespace}}).objects
    except ConfigError as exc:
        return [f"the converted resource is refused: {p}" for p in exc.problems]
    original = render_values({**tree, "fullnameOverride": name}, release=name,
                             namespace=namespace).objects
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in original}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in converted}
    notes = [f"{kind} {obj_name}: only from the values"
             for kind, obj_name in theirs if (kind, obj_name) not in ours]
    notes += [f"{kind} {obj_name}: only from the resource"
              for kind, obj_name in ours if (kind, obj_name) not in theirs]
    for key in theirs.keys() & ours.keys():
        diffs = _diff(theirs[key], ours[key], "")
        notes += [f"{key[0]} {key[1]}: {d}" for d in diffs[:_MAX_DIFFS]]
        if len(diffs) > _MAX_DIFFS:
            notes.append(f"{key[0]} {key[1]}: {len(diffs) - _MAX_DIFFS} more differences")
    return sorted(notes)


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in b:
                out.append(f"{sub}: only from the values ({_short(a[key])})")
            elif key not in a:
                out.append(f"{sub}: only from the resource ({_short(b[key])})")
            else:
                out += _diff(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {_short(a)} from the values, {_short(b)} from the "
                              "resource"]


def _short(value: Any) -> str:
    text = str(yaml.safe_dump(value, default_flow_style=True, width=10_000)).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def convert_kserve(obj: Json, *, name: str | None = None,
                   namespace: str | None = None) -> Converted:
    """KServe's `serving.kserve.io` LLMInferenceService (v1alpha1 or v1alpha2, vLLM or SGLang
    runtime, P/D and multinode included) → the resource; unsupported fields become notes."""
    if obj.get("kind") != "LLMInferenceService":
        raise ConfigError(f"kind: {obj.get('kind')!r}: only KServe's LLMInferenceService "
                          "converts")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name = name or meta.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("metadata.name: required (or --name)")
    namespace = namespace or meta.get("namespace")
    notes: list[str] = []
    spec = kserve_spec(obj.get("spec") or {}, name, notes)
    metadata: Json = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    resource = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    try:
        plan_service(resource)
    except ConfigError as exc:
        notes += [f"the converted resource is refused: {p}" for p in exc.problems]
    return Converted(resource, notes)
