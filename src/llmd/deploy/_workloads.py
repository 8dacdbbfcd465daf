"""Decode/prefill pods and their workloads: Deployment or LeaderWorkerSet, PodMonitor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmd.deploy._containers import (
    ContainerContext,
    accelerator_warning,
    engine_container,
    otel_env,
)
from llmd.deploy._pd import go_sidecar
from llmd.deploy._plan import RolePlan
from llmd.deploy._sources import deep_merge
from llmd.deploy._ssrf import ssrf_args, ssrf_env
from llmd.engines import ENGINE_TYPE_LABEL, ROLE_LABEL, get_adapter
from llmd.errors import ConfigError

__all__ = ["Names", "pod_labels", "role_objects"]

WORKER_LABEL = "llm-d.ai/multinode-worker"


class Names:
    """Object names and common metadata, as the chart computes them."""

    def __init__(self, fullname: str, namespace: str | None, labels: dict[str, str]) -> None:
        self.fullname = fullname
        self.namespace = namespace
        self.labels = labels

    def meta(self, name: str, labels: dict[str, str] | None = None,
             annotations: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        if self.namespace:
            out["namespace"] = self.namespace
        out["labels"] = {**self.labels, **(labels or {})}
        if annotations:
            out["annotations"] = annotations
        return out


def selector_labels(plan: RolePlan, model_labels: dict[str, str]) -> dict[str, str]:
    return {**model_labels, ROLE_LABEL: plan.name}


def pod_labels(plan: RolePlan, model_labels: dict[str, str]) -> dict[str, str]:
    return {**selector_labels(plan, model_labels),
            ENGINE_TYPE_LABEL: get_adapter(plan.engine).engine_type_label}


def role_objects(ctx: ContainerContext, names: Names, service_account: str) -> list[dict[str, Any]]:
    plan, role = ctx.plan, ctx.plan.values
    name = f"{names.fullname}-{plan.name}"
    labels = ctx.values.model_artifacts.labels
    annotations = dict(role.annotations)
    if warning := accelerator_warning(ctx):
        annotations["llm-d.ai/accelerator-warning"] = warning
    objects: list[dict[str, Any]] = []
    if plan.multinode:
        objects.append(_lws(ctx, names, name, service_account, annotations))
    else:
        spec: dict[str, Any] = {"replicas": role.replicas,
                                "selector": {"matchLabels": selector_labels(plan, labels)}}
        if role.strategy:
            spec["strategy"] = role.strategy
        spec["template"] = _template(ctx, service_account, pod_labels(plan, labels),
                                     role.pod_annotations, leader=True)
        objects.append({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": names.meta(name, annotations=annotations), "spec": spec})
    if role.monitoring.podmonitor.enabled:
        objects.append(_pod_monitor(ctx, names, name))
    return objects


def _lws(ctx: ContainerContext, names: Names, name: str, service_account: str,
         annotations: dict[str, Any]) -> dict[str, Any]:
    plan, role = ctx.plan, ctx.plan.values
    labels = ctx.values.model_artifacts.labels
    pod_annotations = dict(role.pod_annotations)
    if role.sub_group_exclusive_topology:
        key = "leaderworkerset.sigs.k8s.io/subgroup-exclusive-topology"
        annotations = {key: "kubernetes.io/hostname", **annotations}
        pod_annotations = {key: "kubernetes.io/hostname", **pod_annotations}
    template: dict[str, Any] = {"size": plan.parallel.workers}
    if role.sub_group_policy:
        template["subGroupPolicy"] = role.sub_group_policy
    template["restartPolicy"] = "RecreateGroupOnPodRestart"
    leader = _template(ctx, service_account, pod_labels(plan, labels), pod_annotations,
                       leader=True)
    if plan.parallel.workers > 1:
        # The leader serves HTTP (sidecar, probes, pool labels); the other pods only compute,
        # so they carry no pool labels and the EPP never routes to them.
        worker_labels = {ROLE_LABEL: plan.name,
                         ENGINE_TYPE_LABEL: get_adapter(plan.engine).engine_type_label,
                         WORKER_LABEL: "true"}
        template["leaderTemplate"] = leader
        template["workerTemplate"] = _template(
            _worker(ctx), service_account, worker_labels, pod_annotations, leader=False)
    else:
        template["workerTemplate"] = leader
    spec: dict[str, Any] = {}
    if not role.autoscaling.enabled:
        spec["replicas"] = role.replicas
    spec["leaderWorkerTemplate"] = template
    spec["startupPolicy"] = "LeaderCreated"
    meta_labels = selector_labels(plan, labels)
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": names.meta(name, meta_labels, annotations), "spec": spec}


def _worker(ctx: ContainerContext) -> ContainerContext:
    return replace(ctx, worker=True)


def _template(ctx: ContainerContext, service_account: str, labels: dict[str, str],
              annotations: dict[str, Any], *, leader: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": _pod_spec(ctx, service_account, leader=leader)}


def _pod_spec(ctx: ContainerContext, service_account: str, *, leader: bool) -> dict[str, Any]:
    values, plan, role = ctx.values, ctx.plan, ctx.plan.values
    spec: dict[str, Any] = {}
    if role.node_selector:
        spec["nodeSelector"] = role.node_selector
    init = []
    if plan.name == "decode" and values.routing.proxy.enabled and leader:
        with ctx.problems.collect():
            init.append(_proxy(ctx))
    init += role.init_containers
    if init:
        spec["initContainers"] = init
    if plan.multinode:
        if role.host_ipc is not None:
            spec["hostIPC"] = role.host_ipc
        if role.host_pid is not None:
            spec["hostPID"] = role.host_pid
    if role.enable_service_links is not None:
        spec["enableServiceLinks"] = role.enable_service_links
    if role.termination_grace_period_seconds is not None:
        spec["terminationGracePeriodSeconds"] = role.termination_grace_period_seconds
    if role.image_pull_secrets:
        spec["imagePullSecrets"] = role.image_pull_secrets
    if scheduler := role.scheduler_name or values.scheduler_name:
        spec["schedulerName"] = scheduler
    if role.priority_class_name and role.priority_class_name != "none":
        spec["priorityClassName"] = role.priority_class_name
    if role.pod_security_context:
        spec["securityContext"] = role.pod_security_context
    spec["serviceAccountName"] = service_account
    types = role.accelerator_types
    if types.label_key:
        expression: dict[str, Any] = {"key": types.label_key, "operator": "In"}
        if types.label_values:
            expression["values"] = types.label_values
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}
    volumes = list(role.volumes)
    if any(c.mount_model_volume for c in role.containers):
        volumes.append(ctx.source.volume)
    spec["volumes"] = volumes
    claims = [{"name": c.name, "resourceClaimTemplateName": c.resource_claim_template_name}
              for c in role.resource_claims]
    if ctx.claim is not None:
        claims.insert(0, {"name": ctx.claim.claim_name,
                          "resourceClaimTemplateName": ctx.claim.template_name})
    if claims:
        spec["resourceClaims"] = claims
    spec["containers"] = []
    for i in range(len(role.containers)):
        with ctx.problems.collect():
            spec["containers"].append(engine_container(ctx, i))
    if role.tolerations:
        spec["tolerations"] = role.tolerations
    if role.extra_config:
        spec = deep_merge(spec, ctx.tpl(role.extra_config, f"{plan.name}.extraConfig"))
    return spec


def _proxy(ctx: ContainerContext) -> dict[str, Any]:
    routing = ctx.values.routing
    proxy = routing.proxy
    connector = proxy.connector or get_adapter(ctx.plan.engine).sidecar_connector
    out: dict[str, Any] = {"name": "routing-proxy"}
    go_image = go_sidecar(ctx.values)
    if go_image:
        out["args"] = _go_sidecar_args(routing.service_port, proxy.target_port, connector, proxy)
    else:
        for key, flag in (("secure", "--secure-proxy"),
                          ("prefiller_use_tls", "--prefiller-use-tls"),
                          ("cert_path", "--cert-path")):
            if getattr(proxy, key):
                raise ConfigError(
                    f"routing.proxy.{type(proxy).model_fields[key].alias}: `llmd sidecar` has "
                    f"no {flag}; serve TLS at "
                    "the gateway, or set routing.proxy.image to an llm-d-routing-sidecar image")
        out["command"] = ["llmd", "sidecar"]
        out["args"] = [f"--port={routing.service_port}",
                       f"--model-server-port={proxy.target_port}",
                       f"--kv-connector={connector}", *proxy.extra_args]
    env = otel_env(ctx.values, ctx.values.tracing.service_names.routing_proxy)
    if ctx.ssrf is not None:
        out["args"] += ssrf_args(ctx.ssrf, go_image)
        env = [*ssrf_env(ctx.ssrf, go_image), *env]
    out.update(image=proxy.image, imagePullPolicy=proxy.image_pull_policy or "Always")
    if env:
        out["env"] = env
    out["ports"] = [{"containerPort": routing.service_port, "protocol": "TCP"}]
    out["resources"] = proxy.resources if proxy.resources is not None else {
        "requests": {"cpu": "200m", "memory": "128Mi"}}
    out["restartPolicy"] = "Always"
    out["securityContext"] = {"allowPrivilegeEscalation": False, "runAsNonRoot": True}
    return out


def _go_sidecar_args(port: int, target: int, connector: str, proxy: Any) -> list[str]:
    args = [f"--port={port}", f"--vllm-port={target}", f"--connector={connector}"]
    for key, flag in (("zap_devel", "zap-devel"), ("zap_encoder", "zap-encoder"),
                      ("zap_log_level", "zap-log-level"),
                      ("zap_stacktrace_level", "zap-stacktrace-level"),
                      ("zap_time_encoding", "zap-time-encoding"), ("secure", "secure-proxy"),
                      ("prefiller_use_tls", "prefiller-use-tls"), ("cert_path", "cert-path")):
        value = getattr(proxy, key)
        if value is not None:
            args.append(f"--{flag}={str(value).lower() if isinstance(value, bool) else value}")
    return args


def _pod_monitor(ctx: ContainerContext, names: Names, name: str) -> dict[str, Any]:
    pm = ctx.plan.values.monitoring.podmonitor
    endpoint: dict[str, Any] = {"port": pm.port_name, "path": pm.path, "interval": pm.interval}
    if pm.scrape_timeout:
        endpoint["scrapeTimeout"] = pm.scrape_timeout
    if pm.relabelings:
        endpoint["relabelings"] = pm.relabelings
    if pm.metric_relabelings:
        endpoint["metricRelabelings"] = pm.metric_relabelings
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(ctx.plan, ctx.values.model_artifacts.labels)},
        "podMetricsEndpoints": [endpoint]}
    if pm.namespace_selector is not None:
        spec["namespaceSelector"] = pm.namespace_selector
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": names.meta(name, pm.labels, pm.annotations or None), "spec": spec}

