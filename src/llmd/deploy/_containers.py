"""Engine containers: argv from the engine adapters, env, resources, mounts and probes."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from llmd.deploy._dra import RoleClaim
from llmd.deploy._kv_events import PORT_NAME, KvEvents, arg_value, serving_index
from llmd.deploy._model import VOLUME, ModelSource, lora_spec
from llmd.deploy._plan import RolePlan
from llmd.deploy._problems import Problems
from llmd.deploy._sources import deep_merge
from llmd.deploy._ssrf import SsrfPool
from llmd.deploy.values import ACCELERATOR_ENV, Container, Values
from llmd.engines import (
    ADAPTERS,
    EngineName,
    MultinodeSpec,
    Probe,
    ServeSpec,
    TracingSpec,
    get_adapter,
)
from llmd.errors import ConfigError

__all__ = ["ContainerContext", "accelerator_warning", "engine_container", "otel_env",
           "service_name_warnings"]

SIM_IMAGE = "llm-d-inference-sim"
LWS_ENV = ("$(LWS_LEADER_ADDRESS)", "$(LWS_GROUP_SIZE)", "$(LWS_WORKER_INDEX)")


@dataclass(frozen=True, slots=True)
class ContainerContext:
    values: Values
    plan: RolePlan
    source: ModelSource
    tpl: Any
    """`tpl(obj, where)`: Helm's tpl over strings inside `obj`."""
    worker: bool = False
    """A non-leader pod of a multinode group: no probes (it serves no HTTP)."""
    claim: RoleClaim | None = None
    """The role's DRA accelerator claim (then no device-plugin counts)."""
    ssrf: SsrfPool | None = None
    """The InferencePool the routing sidecar's SSRF allowlist follows, if protection is on."""
    kv_events: KvEvents | None = None
    """Where the serving container publishes KV events (the EPP runs a precise prefix plugin)."""
    problems: Problems = field(default_factory=Problems)
    """Where a container's problems go, so the next container is still checked."""


def engine_container(ctx: ContainerContext, index: int) -> dict[str, Any]:
    """One container of the role's pod, in the chart's key order."""
    c = ctx.plan.values.containers[index]
    engine = ctx.plan.container_engines[index]
    where = f"{ctx.plan.name}.containers[{index}]"
    if not c.image:
        ctx.problems.add(f"{where}.image: required")
    out: dict[str, Any] = {"name": c.name or engine or ctx.plan.engine, "image": c.image or ""}
    if c.security_context:
        out["securityContext"] = c.security_context
    if c.image_pull_policy:
        out["imagePullPolicy"] = c.image_pull_policy
    kv = _publisher(ctx, index)
    out.update(_command(ctx, c, engine, where, kv))
    out["env"] = [*ctx.tpl(c.env, f"{where}.env"),
                  *_injected_env(ctx, c, engine or ctx.plan.engine)]
    if kv is not None and not any(e.get("name") == "POD_IP" for e in c.env):
        # The KV-event topic names the pod as $(POD_IP): the downward API's pod IP.
        out["env"].append({"name": "POD_IP",
                           "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    if c.ports:
        out["ports"] = ctx.tpl(c.ports, f"{where}.ports")
    elif c.model_command not in (None, "custom"):
        out["ports"] = [{"name": "metrics", "containerPort": ctx.plan.engine_port,
                         "protocol": "TCP"}]
    if kv is not None and kv.discover_pods:
        out["ports"] = _with_kv_port(out.get("ports", []), kv, where)
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if (probe := getattr(c, _snake(key))) is not None:
            out[key] = probe
    if c.probes and engine is not None and c.model_command not in (None, "custom") \
            and not ctx.worker:
        _add_engine_probes(out, c, engine, ctx.plan.engine_port)
    out["resources"] = _resources(ctx, c, engine)
    mounts = list(c.volume_mounts)
    if c.mount_model_volume:
        mount: dict[str, Any] = {"name": VOLUME, "mountPath": ctx.values.model_artifacts.mount_path}
        if ctx.source.read_only_mount:
            mount["readOnly"] = True
        mounts.append(mount)
    if mounts:
        out["volumeMounts"] = mounts
    for key in ("working_dir", "stdin", "tty"):
        if (value := getattr(c, key)) is not None:
            out[_camel(key)] = value
    if c.extra_config:
        out = deep_merge(out, ctx.tpl(c.extra_config, f"{where}.extraConfig"))
    return out


def _publisher(ctx: ContainerContext, index: int) -> KvEvents | None:
    """The KV-event plan if container `index` publishes: the role's serving container, on a
    leader pod (in a LeaderWorkerSet only rank 0's engine serves the pool's endpoint), with a
    command llmd injects into. A `custom` command is only warned about (in `check_role`)."""
    kv, c = ctx.kv_events, ctx.plan.values.containers[index]
    if kv is None or ctx.worker or index != serving_index(ctx.plan) \
            or c.model_command in (None, "custom"):
        return None
    if c.image and SIM_IMAGE in c.image:
        ctx.problems.warn(
            f"{ctx.plan.name}.containers[{index}].image: the llm-d inference simulator takes "
            f"no --kv-events-config; it publishes for {kv.path} only with its own flags "
            "(--enable-kvcache, --zmq-endpoint) in args")
        return None
    return kv


def _with_kv_port(ports: list[dict[str, Any]], kv: KvEvents, where: str) -> list[dict[str, Any]]:
    """The container's ports plus `kv-events` on the socket port the EPP dials (so that a
    NetworkPolicy can name it), unless a port already declares that number."""
    if any(p.get("containerPort") == kv.port for p in ports):
        return ports
    for i, p in enumerate(ports):
        if p.get("name") == PORT_NAME:
            raise ConfigError(
                f"{where}.ports[{i}]: {PORT_NAME!r} is port {p.get('containerPort')}, but the "
                f"EPP dials {kv.port} ({kv.port_path}): make them agree")
    return [*ports, {"name": PORT_NAME, "containerPort": kv.port, "protocol": "TCP"}]


def _command(ctx: ContainerContext, c: Container, engine: EngineName | None,
             where: str, kv: KvEvents | None) -> dict[str, Any]:
    command = c.model_command or "custom"
    if command == "custom" or engine is None:
        out: dict[str, Any] = {"command": list(c.command)}
        if c.args:
            out["args"] = list(c.args)
        return out
    adapter = get_adapter(engine)
    plan, par = ctx.plan, ctx.plan.parallel
    multinode = None
    if plan.multinode and par.workers > 1:
        multinode = MultinodeSpec(*LWS_ENV, worker=ctx.worker)
    spec = ServeSpec(
        model=ctx.source.model_arg,
        served_model_name=ctx.values.model_artifacts.name,
        host=adapter.listen_host,
        port=plan.engine_port,
        tensor_parallel=par.engine_tensor,
        data_parallel=par.data,
        data_parallel_local=par.data_local,
        role=plan.name if plan.pd else "both",
        multinode=multinode,
        tracing=_tracing(ctx.values),
        expert_parallel=plan.values.parallelism.expert,
        lora=lora_spec(ctx.values.model_artifacts),
        kv_events=kv.spec(arg_value(c.args, "--served-model-name")
                          or ctx.values.model_artifacts.name) if kv is not None else None,
        extra_args=tuple(c.args),
    )
    if plan.engine_port in adapter.side_ports(spec):
        key = "routing.servicePort" if plan.name == "prefill" else "routing.proxy.targetPort"
        raise ConfigError(f"{key}: {plan.engine_port} is also a port {engine} binds for "
                          f"{plan.name} ({where}): choose another")
    if kv is not None:
        kv.check_ports(_pod_ports(ctx, c, spec, adapter.side_ports(spec), where),
                       par.data_local, plan.name)
    if command == "imageDefault":
        args = adapter.serve_args(spec, model_as_flag=True)
        if _needs_shell(args):
            raise ConfigError(
                f"{where}.modelCommand: imageDefault cannot compute this multinode rank "
                f"(dataLocal {par.data_local} > 1); use {_serve_command_name(engine)}")
        return {"args": args}
    argv = adapter.serve_command() + adapter.serve_args(spec)
    if _needs_shell(argv):
        # `$$((...))` is shell arithmetic Kubernetes leaves alone (it turns `$$` into `$`).
        script = "exec " + " ".join(a if "$$((" in a else shlex.quote(a) for a in argv)
        return {"command": ["/bin/sh", "-c", script]}
    return {"command": argv[: len(adapter.serve_command())],
            "args": argv[len(adapter.serve_command()):]}


def _pod_ports(ctx: ContainerContext, c: Container, spec: ServeSpec, side: tuple[int, ...],
               where: str) -> dict[int, str]:
    """The ports the pod of `spec` listens on, each with what binds it."""
    routing = ctx.values.routing
    taken = {p["containerPort"]: f"{where}.ports[{i}]" for i, p in enumerate(c.ports)
             if isinstance(p.get("containerPort"), int) and p.get("name") != PORT_NAME}
    taken.update({p: f"a port {ctx.plan.engine} binds" for p in side})
    if spec.multinode is not None:
        taken[spec.multinode.dist_init_port] = "the multinode rendezvous port"
    if ctx.plan.name == "decode" and routing.proxy.enabled:
        taken[routing.service_port] = "the routing sidecar's port (routing.servicePort)"
    key = "routing.proxy.targetPort" if ctx.plan.name == "decode" and routing.proxy.enabled \
        else "routing.servicePort"
    taken[ctx.plan.engine_port] = f"the engine's port ({key})"
    return taken


def _tracing(values: Values) -> TracingSpec | None:
    tracing = values.tracing
    if not tracing.enabled:
        return None
    return TracingSpec(tracing.otlp_endpoint, tracing.vllm.collect_detailed_traces)


def otel_env(values: Values, service: str) -> list[dict[str, Any]]:
    """The standard OpenTelemetry SDK variables, when tracing is on."""
    tracing = values.tracing
    if not tracing.enabled:
        return []
    return [{"name": "OTEL_SERVICE_NAME", "value": service},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.otlp_endpoint},
            {"name": "OTEL_TRACES_SAMPLER", "value": tracing.sampling.sampler},
            {"name": "OTEL_TRACES_SAMPLER_ARG", "value": tracing.sampling.sampler_arg}]


def _serve_command_name(engine: EngineName) -> str:
    return get_adapter(engine).serve_model_command


def _needs_shell(argv: list[str]) -> bool:
    return any("$$((" in a for a in argv)


def _injected_env(ctx: ContainerContext, c: Container,
                  engine: EngineName) -> list[dict[str, Any]]:
    """The chart's env, as `engine` should get it: its own OpenTelemetry service name, and no
    accelerator env only another engine reads (`VLLM_*` on an SGLang container)."""
    par = ctx.plan.parallel
    env: list[dict[str, Any]] = [
        {"name": "DP_SIZE", "value": str(par.data)},
        {"name": "TP_SIZE", "value": str(par.tensor)},
        {"name": "DP_SIZE_LOCAL", "value": str(par.data_local)},
    ]
    if c.mount_model_volume:
        env += [dict(e) for e in ctx.source.env]
    if secret := ctx.values.model_artifacts.auth_secret_name:
        env.append({"name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}})
    env += otel_env(ctx.values,
                    ctx.values.tracing.service_names.for_role(engine, ctx.plan.name))
    accel = _accelerator_type(ctx)
    if accel == "cpu":
        return env
    foreign = {p: a.name for a in ADAPTERS.values() if a.name != engine for p in a.env_prefixes}
    for i, e in enumerate(ctx.values.accelerator.env.get(accel, [])):
        name, where = e.get("name"), f"accelerator.env.{accel}[{i}]"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: required (an environment variable name)")
        owner = next((o for p, o in foreign.items() if name.startswith(p)), None)
        if owner is None:
            env.append({"name": name, "value": str(e.get("value", ""))})
        elif e not in ACCELERATOR_ENV.get(accel, []):  # the chart's own vLLM env: no warning
            ctx.problems.warn(f"{where}: {name} is {owner}'s; not set on {engine} containers")
    return env


def service_name_warnings(values: Values, plans: list[RolePlan]) -> list[str]:
    """A service name set for another engine's pods than the role runs is not applied to it
    (`vllmDecode` never names SGLang pods): say so, and which key would."""
    names = values.tracing.service_names
    if not values.tracing.enabled:
        return []
    out = []
    for plan in plans:
        own = names.field_for(plan.engine, plan.name)
        for other in ADAPTERS:
            field = names.field_for(other, plan.name)
            if other != plan.engine and field in names.model_fields_set \
                    and own not in names.model_fields_set:
                named = names.for_role(plan.engine, plan.name)
                out.append(
                    f"tracing.serviceNames.{_camel(field)}: names {other} pods only; "
                    f"{plan.name} runs {plan.engine}, named {named!r} (set "
                    f"tracing.serviceNames.{_camel(own)})")
    return out


def _accelerator_type(ctx: ContainerContext) -> str:
    role_accel = ctx.plan.values.accelerator
    return (role_accel.type if role_accel and role_accel.type else None) \
        or ctx.values.accelerator.type or "nvidia"


def _accelerator_resource(ctx: ContainerContext, c: Container) -> str:
    accel = _accelerator_type(ctx)
    if (c.image and SIM_IMAGE in c.image) or accel == "cpu":
        return ""
    return ctx.values.accelerator.resources.get(accel, "nvidia.com/gpu")


def _resources(ctx: ContainerContext, c: Container,
               engine: EngineName | None) -> dict[str, Any]:
    limits: dict[str, Any] = dict(c.resources.limits)
    requests: dict[str, Any] = dict(c.resources.requests)
    resource = _accelerator_resource(ctx, c)
    gpus = ctx.plan.parallel.gpus_per_pod
    # Only containers that run an engine get accelerators (the chart gives them to every
    # container, so helper containers needed an explicit "0").
    if resource and gpus >= 1 and engine is not None and ctx.claim is None:
        limits.setdefault(resource, str(gpus))
        requests.setdefault(resource, str(gpus))
    out: dict[str, Any] = {"limits": limits, "requests": requests}
    claims = [dict(claim) for claim in c.resources.claims]
    if ctx.claim is not None and engine is not None:
        claims.insert(0, {"name": ctx.claim.claim_name})
    if claims:
        out["claims"] = claims
    return out


def accelerator_warning(ctx: ContainerContext) -> str:
    """The chart's `llm-d.ai/accelerator-warning` for an explicit count that differs from
    tensor x dataLocal in the first container ('' when they agree)."""
    if not ctx.plan.values.containers:
        return ""
    c = ctx.plan.values.containers[0]
    resource = _accelerator_resource(ctx, c)
    gpus = ctx.plan.parallel.gpus_per_pod
    given = c.resources.limits.get(resource)
    if ctx.claim is not None or not resource or given is None or str(given) == str(gpus):
        return ""
    return (f"Accelerator mismatch: {resource} is set to {given} but parallelism "
            f"calculates {gpus}. Using {given}.")


def _add_engine_probes(out: dict[str, Any], c: Container, engine: EngineName,
                       port: int) -> None:
    probes = get_adapter(engine).probes
    given = set(c.extra_config)
    for key, probe in (("startupProbe", probes.startup), ("readinessProbe", probes.readiness),
                       ("livenessProbe", probes.liveness)):
        if key not in out and key not in given:
            out[key] = _probe(probe, port)


def _probe(p: Probe, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {"httpGet": {"path": p.path, "port": port}}
    if p.initial_delay_s:
        out["initialDelaySeconds"] = p.initial_delay_s
    out.update(periodSeconds=p.period_s, timeoutSeconds=p.timeout_s,
               failureThreshold=p.failure_threshold)
    return out


def _snake(camel: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in camel)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)
