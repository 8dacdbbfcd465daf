"""SSRF protection for the routing sidecar: which InferencePool it follows, its flags and env,
and the RBAC its service account needs (get/list/watch on the pool and on pods).

The chart never renders llm-d's `--enable-ssrf-protection` (see docs/deploy.md); llmd renders it
from `routing.proxy.ssrfProtection`, on by default: a sidecar without it forwards to any host a
request names in `x-prefiller-host-port`. With no pool to follow (the chart's own examples render
none) it stays off with a warning rather than failing every chart values file.

The pool is named by env `INFERENCE_POOL` (`namespace/name`), which `llmd sidecar` and llm-d's
newer sidecar read; llm-d's older sidecar images read `INFERENCE_POOL_NAMESPACE` and
`INFERENCE_POOL_NAME`, which Go images get as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmd.deploy.values import Values
from llmd.errors import ConfigError

if TYPE_CHECKING:
    from llmd.deploy._workloads import Names

__all__ = ["SsrfPool", "ssrf_args", "ssrf_env", "ssrf_pool", "ssrf_rbac"]

DEFAULT_GROUP = "inference.networking.k8s.io"
_NAME = re.compile(r"[a-z0-9]([-.a-z0-9]*[a-z0-9])?")
_KEY = "routing.proxy.ssrfProtection"


@dataclass(frozen=True, slots=True)
class SsrfPool:
    """The InferencePool the sidecar's allowlist follows."""

    name: str
    namespace: str | None
    """None: the pod's own namespace (downward API)."""
    group: str


def ssrf_pool(values: Values, fullname: str, decode_pods: bool,
              warnings: list[str]) -> SsrfPool | None:
    """The pool the sidecar's allowlist follows, or None when protection is off (explicitly,
    with no sidecar rendered, or by default with no pool known: then with a warning);
    ConfigError when `enabled: true` cannot be honoured or the pool's name is unusable."""
    ssrf = values.routing.proxy.ssrf_protection
    if ssrf.enabled is False:
        return None
    explicit = ssrf.enabled is True
    routing = values.routing
    if not routing.proxy.enabled or not decode_pods:
        if not explicit:
            return None
        if not routing.proxy.enabled:
            raise ConfigError(f"{_KEY}.enabled: the routing sidecar is off "
                              "(routing.proxy.enabled: false)")
        raise ConfigError(f"{_KEY}.enabled: no decode pods run the routing sidecar "
                          "(decode.create: false)")
    ref = ssrf.inference_pool
    if ref is None:
        if routing.inference_pool.enabled:
            return SsrfPool(routing.inference_pool.name or fullname, None, ssrf.pool_group)
        if explicit:
            raise ConfigError(f"{_KEY}.inferencePool: required unless routing.inferencePool is "
                              "enabled: name the InferencePool whose pods may be prefill "
                              "targets (name or namespace/name)")
        warnings.append(
            f"{_KEY}: off: no InferencePool to follow (routing.inferencePool.enabled is false "
            f"and {_KEY}.inferencePool unset), so the routing sidecar calls any prefill host a "
            f"request names; name the pool ({_KEY}.inferencePool: NAME or NAMESPACE/NAME), or "
            f"set {_KEY}.enabled: false")
        return None
    namespace, _, name = ref.rpartition("/")
    if not _NAME.fullmatch(name) or (namespace and not _NAME.fullmatch(namespace)) \
            or ref.startswith("/"):
        raise ConfigError(f"{_KEY}.inferencePool: {ref!r} is not name or namespace/name")
    return SsrfPool(name, namespace or None, ssrf.pool_group)


def ssrf_args(pool: SsrfPool, go_image: bool) -> list[str]:
    args = ["--enable-ssrf-protection=true" if go_image else "--enable-ssrf-protection"]
    if pool.group != DEFAULT_GROUP:
        args.append(f"--pool-group={pool.group}")
    return args


def ssrf_env(pool: SsrfPool, go_image: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    namespace = pool.namespace
    if namespace is None:
        env.append({"name": "POD_NAMESPACE",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        namespace = "$(POD_NAMESPACE)"
    if go_image:
        env += [{"name": "INFERENCE_POOL_NAMESPACE", "value": namespace},
                {"name": "INFERENCE_POOL_NAME", "value": pool.name}]
    env.append({"name": "INFERENCE_POOL", "value": f"{namespace}/{pool.name}"})
    return env


def ssrf_rbac(pool: SsrfPool, names: Names, account: str) -> list[dict[str, Any]]:
    """A Role in the pool's namespace and its binding to the decode pods' service account."""
    name = f"{names.fullname}-routing-proxy"
    meta = names.meta(name)
    if pool.namespace:
        meta["namespace"] = pool.namespace
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [pool.group], "resources": ["inferencepools"],
                 "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": dict(meta),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": account,
                             "namespace": names.namespace or "default"}]}
    return [role, binding]
