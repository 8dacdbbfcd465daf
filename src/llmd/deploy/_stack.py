"""Beyond the chart: the InferencePool, the EPP that picks its endpoints, an HTTPRoute to it.

The EPP runs `llmd epp --kubernetes` on the pool named by `--pool-name`/`--pool-namespace`: its
pods come from watching the InferencePool (`llmd.epp.discovery_k8s`). The other flags are
`llmd epp`'s, named as llm-d's EPP names them (`--config-file`, `--grpc-port`,
`--grpc-health-port`, `--metrics-port`). With `routing.epp.replicas` > 1 the replicas are spread,
kept available and wired to each other (`_epp_replicas`).
"""

from __future__ import annotations

from typing import Any

import yaml

from llmd.deploy._epp_replicas import (
    SYNC_PORT,
    SYNC_PORT_NAME,
    replica_objects,
    replicated_config,
    spread,
)
from llmd.deploy._kv_events import PORT_NAME, KvEvents
from llmd.deploy._workloads import Names
from llmd.deploy.values import Values
from llmd.errors import ConfigError

__all__ = ["EPP_PORTS", "PRECISE_BLOCK_SIZE", "default_epp_config", "epp_name",
           "routing_objects"]

EPP_PORTS = {"grpc": 9002, "grpc-health": 9003, "metrics": 9090}
POOL_GROUP = "inference.networking.k8s.io"
CONFIG_FILE = "config.yaml"
PRECISE_BLOCK_SIZE = 16
PRECISE_SOCKET_PORT = 5557


def epp_name(fullname: str) -> str:
    """The EPP's Deployment, Service, ConfigMap and RBAC name."""
    return f"{fullname}-epp"


def routing_objects(values: Values, names: Names, pd: bool,
                    kv: KvEvents | None = None) -> list[dict[str, Any]]:
    """InferencePool, EPP and HTTPRoute; with centralized KV events (`kv` without pod
    discovery) the EPP also exposes the port the engines connect to."""
    routing = values.routing
    pool_on, route_on = routing.inference_pool.enabled, routing.http_route.enabled
    epp_on = routing.epp_on
    errors = []
    if epp_on and not pool_on:
        errors.append("routing.epp.enabled: the EPP picks endpoints of the InferencePool: "
                      "set routing.inferencePool.enabled: true")
    if route_on and not pool_on:
        errors.append("routing.httpRoute.enabled: the route's backend is the InferencePool: "
                      "set routing.inferencePool.enabled: true")
    if route_on and not routing.http_route.parent_refs:
        errors.append("routing.httpRoute.parentRefs: required (the Gateway to attach to), e.g. "
                      "[{name: my-gateway}]")
    if pool_on and not values.model_artifacts.labels:
        errors.append("modelArtifacts.labels: the InferencePool selects pods by these labels; "
                      "give at least one")
    ports = routing.inference_pool.target_ports or [routing.service_port]
    if pool_on and (len(set(ports)) != len(ports) or not 1 <= len(ports) <= 8):
        errors.append(f"routing.inferencePool.targetPorts: {ports} must be 1 to 8 "
                      "distinct ports")
    if errors:
        raise ConfigError(errors)
    pool_name = routing.inference_pool.name or names.fullname
    epp = epp_name(names.fullname)
    objects: list[dict[str, Any]] = []
    if pool_on:
        objects.append(_pool(values, names, pool_name, epp if epp_on else None))
    if epp_on:
        centralized = kv if kv is not None and not kv.discover_pods else None
        objects += _epp(values, names, pool_name, epp, pd, centralized)
    if route_on:
        objects.append(_route(values, names, pool_name))
    return objects


def _pool(values: Values, names: Names, name: str, epp: str | None) -> dict[str, Any]:
    pool = values.routing.inference_pool
    ports = pool.target_ports or [values.routing.service_port]
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(values.model_artifacts.labels)},
                            "targetPorts": [{"number": p} for p in ports]}
    if pool.app_protocol:
        spec["appProtocol"] = pool.app_protocol
    if epp:
        spec["endpointPickerRef"] = {"kind": "Service", "name": epp,
                                     "port": {"number": EPP_PORTS["grpc"]},
                                     "failureMode": pool.failure_mode}
    return {"apiVersion": f"{POOL_GROUP}/v1", "kind": "InferencePool",
            "metadata": names.meta(name), "spec": spec}


def default_epp_config(pd: bool, *, precise: bool = False) -> dict[str, Any]:
    """llm-d's default scorers (queue 2, KV utilisation 2, prefix 3); with P/D, a decode and a
    prefill profile behind llm-d's `disagg-profile-handler` and `prefix-based-pd-decider`.

    `precise`: the prefix scorer is `precise-prefix-cache-scorer`, fed by every pod's KV events
    (each engine binds `PRECISE_SOCKET_PORT`, blocks of `PRECISE_BLOCK_SIZE` tokens), with
    speculative indexing (docs/benchmarks.md, "Precise prefix-cache routing")."""
    prefix = "precise-prefix-cache-scorer" if precise else "prefix-cache-scorer"
    scorers = [("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), (prefix, 3)]
    plugins: list[dict[str, Any]] = [{"type": t} for t, _ in scorers]
    if precise:
        plugins[-1]["parameters"] = {
            "tokenProcessorConfig": {"blockSize": PRECISE_BLOCK_SIZE},
            "kvEventsConfig": {"discoverPods": True,
                               "podDiscoveryConfig": {"socketPort": PRECISE_SOCKET_PORT}},
            "speculativeIndexing": True}
    plugins.append({"type": "max-score-picker"})
    refs = [{"pluginRef": t, "weight": w} for t, w in scorers]
    if not pd:
        plugins.insert(0, {"type": "single-profile-handler"})
        profiles = [{"name": "default", "plugins": [*refs, {"pluginRef": "max-score-picker"}]}]
    else:
        # llm-d's P/D scheduling: decode first, then prefill when the decider approves (a prompt
        # whose uncached part on the chosen decode endpoint is at least 16 tokens).
        plugins = [{"type": "disagg-profile-handler",
                    "parameters": {"deciders": {"prefill": "prefix-based-pd-decider"}}},
                   {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": 16}},
                   {"type": "decode-filter"}, {"type": "prefill-filter"}, *plugins]
        profiles = [
            {"name": name, "plugins": [{"pluginRef": f"{name}-filter"}, *refs,
                                       {"pluginRef": "max-score-picker"}]}
            for name in ("decode", "prefill")]
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
            "plugins": plugins, "schedulingProfiles": profiles}


def _epp(values: Values, names: Names, pool: str, name: str, pd: bool,
         kv: KvEvents | None) -> list[dict[str, Any]]:
    epp = values.routing.epp
    ports = dict(EPP_PORTS)
    if kv is not None:  # the EPP binds zmqEndpoint; the engines connect through the Service
        if kv.port in ports.values():
            raise ConfigError(f"{kv.port_path}: port {kv.port} is also one of the EPP's "
                              f"({', '.join(f'{n} {p}' for n, p in EPP_PORTS.items())}): "
                              "choose another")
        ports[PORT_NAME] = kv.port
    replicated = epp.replicas > 1
    if replicated:  # (centralized KV events, `kv`, take one EPP: refused in _kv_events)
        ports[SYNC_PORT_NAME] = SYNC_PORT
    namespace = names.namespace or "default"
    labels = {"app.kubernetes.io/component": "epp", "llm-d.ai/epp": name}
    if epp.config_ref is not None and (epp.config is not None or replicated):
        raise ConfigError(
            "routing.epp.configRef: " + ("give either config or configRef, not both"
                                         if epp.config is not None else
                                         f"with replicas: {epp.replicas} the config must be "
                                         "inline (`config`): llmd adds the replicas' sync to it"))
    config = epp.config if epp.config is not None else default_epp_config(pd)
    if replicated:
        config = replicated_config(config, labels)
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": names.meta(name)}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": names.meta(name), "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [POOL_GROUP], "resources": ["inferencepools"],
                 "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": names.meta(name),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": names.meta(name),
                  "data": {CONFIG_FILE: yaml.safe_dump(config, sort_keys=False)}}
    config_name, config_file = ((epp.config_ref.name, epp.config_ref.key)
                                if epp.config_ref is not None else (name, CONFIG_FILE))
    args = ["--kubernetes", "--host=0.0.0.0", f"--pool-name={pool}",
            "--pool-namespace=$(NAMESPACE)",
            f"--config-file=/config/{config_file}",
            f"--grpc-port={EPP_PORTS['grpc']}", f"--grpc-health-port={EPP_PORTS['grpc-health']}",
            f"--metrics-port={EPP_PORTS['metrics']}", *epp.extra_args]
    probe = {"grpc": {"port": EPP_PORTS["grpc-health"]}, "periodSeconds": 10}
    container = {
        "name": "epp", "image": epp.image, "imagePullPolicy": epp.image_pull_policy,
        "command": ["llmd", "epp"], "args": args,
        "env": [{"name": "NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                *([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                   {"name": "POD_NAMESPACE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]
                  if replicated else [])],
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()],
        "readinessProbe": {**probe, "initialDelaySeconds": 5},
        "livenessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
        "resources": epp.resources,
        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": True}],
    }
    strategy = ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
                if replicated else {"type": "Recreate"})
    pod_spec = {"serviceAccountName": name, "terminationGracePeriodSeconds": 130,
                **(spread(labels) if replicated else {}), "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": config_name}}]}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": names.meta(name),
        "spec": {"replicas": epp.replicas, "strategy": strategy,
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    service_ports: list[dict[str, Any]] = [
        {"name": "grpc-ext-proc", "port": EPP_PORTS["grpc"], "targetPort": "grpc",
         "protocol": "TCP", "appProtocol": "http2"},
        {"name": "grpc-health", "port": EPP_PORTS["grpc-health"], "targetPort": "grpc-health",
         "protocol": "TCP"},
        {"name": "metrics", "port": EPP_PORTS["metrics"], "targetPort": "metrics",
         "protocol": "TCP"}]
    if kv is not None:
        service_ports.append({"name": PORT_NAME, "port": kv.port, "targetPort": PORT_NAME,
                              "protocol": "TCP"})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": names.meta(name),
               "spec": {"type": "ClusterIP", "selector": labels, "ports": service_ports}}
    objects: list[dict[str, Any]] = [account, role, binding,
                                     *([config_map] if epp.config_ref is None else []),
                                     deployment, service]
    return objects + replica_objects(names, name, labels) if replicated else objects


def _route(values: Values, names: Names, pool: str) -> dict[str, Any]:
    route = values.routing.http_route
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": route.path_prefix}}],
            "backendRefs": [{"group": POOL_GROUP, "kind": "InferencePool", "name": pool}],
            "timeouts": {"request": route.timeout}}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": names.meta(route.name or names.fullname),
            "spec": {"parentRefs": route.parent_refs, "rules": [rule]}}
