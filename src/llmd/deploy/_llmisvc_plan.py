"""An `LLMInferenceService` → the ModelService `Values` tree `llmd render` plans from.

One planner for both ways in: the resource is mapped onto values (`service_values`) and
rendered by `render_values`, so its objects are those of the equivalent values file. Problems
come back with the resource's field paths: the schema's and the CEL rules' directly, the
renderer's translated from values paths (`decode.parallelism` → `spec.parallelism`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmd.config import config_error
from llmd.deploy._cel import check_rules
from llmd.deploy._kv_events import arg_value
from llmd.deploy._stack import PRECISE_BLOCK_SIZE, default_epp_config
from llmd.deploy.llmisvc import (
    API_VERSION,
    KIND,
    InferenceServer,
    LLMInferenceServiceSpec,
    Parallelism,
    RouterSpec,
    root_rules,
)
from llmd.deploy.render import Rendered, render_files, render_values
from llmd.engines import get_adapter
from llmd.errors import ConfigError

__all__ = ["plan_service", "render_inputs", "service_values"]

MAX_NAME = 55  # the chart's fullname limit: object names append -decode, -prefill, -epp
SERVING_LABEL = "llm-d.ai/inference-serving"
MODEL_LABEL = "llm-d.ai/model"
_SOURCE = "values"
# Most specific first: the first values-path prefix that matches names the resource's field.
_PATHS = (
    ("decode.containers[0]", "spec.inferenceServer"),
    ("decode.parallelism.workers", "spec.worker.nodes"),
    ("decode.parallelism", "spec.parallelism"),
    ("decode.replicas", "spec.replicas"),
    ("decode.extraConfig", "spec.template"),
    ("decode.monitoring", "spec.monitoring"),
    ("decode", "spec"),
    ("prefill.containers[0]", "spec.prefill.inferenceServer"),
    ("prefill.parallelism.workers", "spec.worker.nodes"),
    ("prefill.parallelism", "spec.prefill.parallelism"),
    ("prefill.extraConfig", "spec.prefill.template"),
    ("prefill", "spec.prefill"),
    ("modelArtifacts.labels", "spec.labels"),
    ("modelArtifacts.authSecretName", "spec.model.authSecretName"),
    ("modelArtifacts", "spec.model"),
    ("multinode", "spec.worker"),
    ("accelerator", "spec.accelerator"),
    ("routing.epp.configRef", "spec.router.scheduler.configRef"),
    ("routing.epp", "spec.router.scheduler"),
    ("routing.httpRoute.parentRefs", "spec.router.gateway.parentRefs"),
    ("routing.httpRoute", "spec.router.gateway"),
    ("routing.inferencePool", "spec.router"),
    ("routing.proxy.ssrfProtection", "spec.router.pool.ref"),
    ("routing", "spec.router"),
)


def plan_service(body: Mapping[str, Any], *, llmd_image: str | None = None) -> Rendered:
    """Every object of the service `body` (a whole resource, as the API server holds it), in
    its namespace; a `ConfigError` lists every problem by the resource's field path.
    `llmd_image` replaces the default llmd image (sidecar, EPP) as `render`'s option does."""
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    name, namespace = metadata.get("name"), metadata.get("namespace")
    problems = [f"{path}: {message}" for path, message in root_rules(metadata)]
    spec_data = body.get("spec")
    if not isinstance(spec_data, dict):
        raise ConfigError([*problems, "spec: required (a map)"])
    try:
        spec = LLMInferenceServiceSpec.model_validate(spec_data)
    except ValidationError as exc:
        lines = [line.split(": ", 1)[1] for line in config_error(exc, "-", ("spec",)).problems]
        raise ConfigError(problems + lines) from None
    problems += check_rules(LLMInferenceServiceSpec, spec_data, "spec")
    if problems:
        raise ConfigError(problems)
    assert isinstance(name, str)
    tree = service_values(name, spec)
    try:
        return render_values(tree, release=name, namespace=namespace, source=_SOURCE,
                             llmd_image=llmd_image)
    except ConfigError as exc:
        raise ConfigError([_spec_line(line) for line in exc.problems]) from None


def render_inputs(files: Sequence[Path | str], sets: Sequence[str] = (), *,
                  release: str = "llmd", namespace: str | None = None,
                  llmd_image: str | None = None) -> Rendered:
    """`llmd render`'s input: ModelService values files, or one `LLMInferenceService` (whose
    name and namespace, unless `namespace` is given, name the objects)."""
    services = [str(f) for f in files if _is_service(Path(f))]
    if not services:
        return render_files(files, sets, release=release, namespace=namespace,
                            llmd_image=llmd_image)
    if len(files) > 1 or sets:
        raise ConfigError(f"{services[0]}: an {KIND} renders alone: no other -f file and no "
                          "--set (edit the resource)")
    body = yaml.safe_load(Path(files[0]).read_text())
    if namespace:
        body = {**body, "metadata": {**(body.get("metadata") or {}), "namespace": namespace}}
    try:
        return plan_service(body, llmd_image=llmd_image)
    except ConfigError as exc:
        raise ConfigError([f"{files[0]}: {p}" for p in exc.problems]) from None


def _is_service(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # render_files reports it
    return isinstance(data, dict) and data.get("apiVersion") == API_VERSION \
        and data.get("kind") == KIND


def service_values(name: str, spec: LLMInferenceServiceSpec) -> dict[str, Any]:
    """The values tree that renders the service `name`."""
    server = spec.inference_server
    router = spec.router
    pd = spec.prefill is not None
    scheduler = router.scheduler if router is not None else None
    precise = bool(scheduler and scheduler.precise)
    model = spec.model
    artifacts: dict[str, Any] = {
        "name": model.name or name, "uri": model.uri,
        "labels": dict(spec.labels) if spec.labels else {SERVING_LABEL: "true",
                                                         MODEL_LABEL: name}}
    if model.size is not None:
        artifacts["size"] = model.size
    if model.auth_secret_name:
        artifacts["authSecretName"] = model.auth_secret_name
    if model.lora is not None:
        artifacts["lora"] = model.lora.model_dump(by_alias=True, exclude_none=True)
    workers = spec.worker.nodes if spec.worker is not None else None
    pod_monitor = bool(spec.monitoring and spec.monitoring.pod_monitor)
    tree: dict[str, Any] = {
        "fullnameOverride": name,
        "modelArtifacts": artifacts,
        "multinode": spec.worker is not None,
        "decode": _role(spec.replicas if spec.replicas is not None else 1, spec.parallelism,
                        server, spec.template, workers, precise, pod_monitor),
        "routing": _routing(router, pd, precise),
    }
    if spec.accelerator:
        tree["accelerator"] = {"type": spec.accelerator}
    if spec.prefill is None:
        tree["prefill"] = {"create": False}
    else:
        prefill = spec.prefill
        override = (prefill.inference_server.model_dump(exclude_none=True)
                    if prefill.inference_server is not None else {})
        merged = InferenceServer.model_validate({**server.model_dump(exclude_none=True),
                                                 **override})
        tree["prefill"] = _role(
            prefill.replicas, prefill.parallelism or spec.parallelism, merged,
            prefill.template if prefill.template is not None else spec.template, workers,
            precise, pod_monitor)
    return tree


def _role(replicas: int, parallelism: Parallelism | None, server: InferenceServer,
          template: dict[str, Any] | None, workers: int | None, precise: bool,
          pod_monitor: bool) -> dict[str, Any]:
    adapter = get_adapter(server.type)
    container: dict[str, Any] = {"name": server.type, "image": server.image,
                                 "modelCommand": adapter.serve_model_command,
                                 "mountModelVolume": True}
    args = list(server.args or [])
    if precise and arg_value(args, adapter.block_size_flag) is None:
        # The EPP's index and the engine must cut prompts into the same blocks.
        args += [adapter.block_size_flag, str(PRECISE_BLOCK_SIZE)]
    if args:
        container["args"] = args
    for key in ("env", "ports", "resources", "readiness_probe", "liveness_probe",
                "startup_probe"):
        value = getattr(server, key)
        if value is not None:
            container[InferenceServer.model_fields[key].alias or key] = value
    role: dict[str, Any] = {"replicas": replicas, "containers": [container]}
    par = parallelism.model_dump(by_alias=True, exclude_none=True) if parallelism else {}
    if workers is not None:
        par["workers"] = workers
    if par:
        role["parallelism"] = par
    if template:
        role["extraConfig"] = dict(template)
    if pod_monitor:
        role["monitoring"] = {"podmonitor": {"enabled": True}}
    return role


def _routing(router: RouterSpec | None, pd: bool, precise: bool) -> dict[str, Any]:
    routing: dict[str, Any] = {"proxy": {"enabled": pd}}
    if router is None:
        routing["inferencePool"] = {"enabled": False}
        return routing
    if router.pool is not None and router.pool.ref is not None:
        routing["inferencePool"] = {"enabled": False}
        routing["proxy"]["ssrfProtection"] = {"inferencePool": router.pool.ref.name}
        return routing
    routing["inferencePool"] = {"enabled": True}
    scheduler = router.scheduler
    epp: dict[str, Any] = {"enabled": True}
    if scheduler is not None:
        if scheduler.replicas is not None:
            epp["replicas"] = scheduler.replicas
        if scheduler.image:
            epp["image"] = scheduler.image
        if scheduler.config is not None:
            epp["config"] = scheduler.config
        if scheduler.config_ref is not None:
            epp["configRef"] = scheduler.config_ref.model_dump(by_alias=True)
    if precise:
        epp["config"] = default_epp_config(pd, precise=True)
    routing["epp"] = epp
    if router.gateway is not None:
        gateway = router.gateway
        routing["httpRoute"] = {"enabled": True, "parentRefs": gateway.parent_refs,
                                "pathPrefix": gateway.path_prefix, "timeout": gateway.timeout}
    return routing


def _spec_line(line: str) -> str:
    """`values: decode.parallelism.data: ...` → `spec.parallelism.data: ...`."""
    text = line.removeprefix(f"{_SOURCE}: ")
    path, sep, message = text.partition(": ")
    if not sep:
        return text
    for values_path, spec_path in _PATHS:
        if path == values_path or path.startswith((values_path + ".", values_path + "[")):
            return f"{spec_path}{path[len(values_path):]}: {message}"
    return text
