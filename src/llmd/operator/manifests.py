"""What installs the operator: `install_manifests()` → CRD, ServiceAccount, RBAC, Deployment.

RBAC is least privilege, derived from the kinds the operator touches (`_kinds.OWNED`):

- the LLMInferenceService resource: get/list/watch/patch (kopf's finalizer and annotations),
  and get/patch on its `status`;
- every owned kind: get/list/watch (the drift watches), create/patch (server-side apply creates
  a missing object through PATCH, which needs both), delete (pruning, the delete handler);
  Roles and RoleBindings are among them because the stack has its own (the EPP's, the routing
  sidecar's); Kubernetes lets a subject create a Role only with permissions it holds itself,
  so the operator also gets the rules those Roles grant (pods get/list/watch), rather than the
  broader `escalate`/`bind` verbs;
- Gateways: get (the service's `status.url` comes from its Gateway's addresses);
- Events: create (a Warning Event for every failure);
- Leases: get/create/patch, only in the operator's own namespace (leader election).

Namespace scope (`namespaces`) grants these with a Role and RoleBinding per namespace; cluster
scope with a ClusterRole and ClusterRoleBinding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmd.deploy import LLMD_IMAGE
from llmd.operator._kinds import EVENT, GATEWAY, LEASE, OWNED, PARENT

__all__ = ["DEFAULT_IMAGE", "install_manifests", "operator_rules"]

DEFAULT_IMAGE = LLMD_IMAGE
NAME = "llmd-operator"
RBAC = "rbac.authorization.k8s.io/v1"
OWNED_VERBS = ["create", "delete", "get", "list", "patch", "watch"]
ROLE_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def operator_rules() -> list[dict[str, Any]]:
    """The rules the operator needs in every namespace it reconciles (module docstring)."""
    by_group: dict[str, list[str]] = {}
    for kind in OWNED:
        by_group.setdefault(kind.group, []).append(kind.plural)
    rules: list[dict[str, Any]] = [
        {"apiGroups": [PARENT.group], "resources": [PARENT.plural],
         "verbs": ["get", "list", "patch", "watch"]},
        {"apiGroups": [PARENT.group], "resources": [f"{PARENT.plural}/status"],
         "verbs": ["get", "patch"]},
    ]
    rules += [{"apiGroups": [group], "resources": sorted(plurals), "verbs": OWNED_VERBS}
              for group, plurals in sorted(by_group.items())]
    rules += [{"apiGroups": [GATEWAY.group], "resources": [GATEWAY.plural], "verbs": ["get"]},
              {"apiGroups": [EVENT.group], "resources": [EVENT.plural], "verbs": ["create"]},
              *ROLE_RULES]
    return rules


def install_manifests(crd: Mapping[str, Any], *, namespace: str = "llmd-system",
                      image: str = DEFAULT_IMAGE,
                      watch: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object that installs the operator in `namespace`, reconciling the namespaces in
    `watch` (none: the whole cluster)."""
    meta = {"name": NAME, "namespace": namespace,
            "labels": {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "llmd"}}
    objects: list[dict[str, Any]] = [
        dict(crd),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
    ]
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    if watch:
        for ns in watch:
            role_meta = {**meta, "namespace": ns}
            objects += [
                {"apiVersion": RBAC, "kind": "Role", "metadata": role_meta,
                 "rules": operator_rules()},
                {"apiVersion": RBAC, "kind": "RoleBinding", "metadata": role_meta,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": NAME}, "subjects": subject}]
    else:
        cluster_meta = {"name": NAME, "labels": meta["labels"]}
        objects += [
            {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": cluster_meta,
             "rules": operator_rules()},
            {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": cluster_meta,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": NAME}, "subjects": subject}]
    lease_meta = {**meta, "name": f"{NAME}-lease"}
    objects += [
        {"apiVersion": RBAC, "kind": "Role", "metadata": lease_meta,
         "rules": [{"apiGroups": [LEASE.group], "resources": [LEASE.plural],
                    "verbs": ["create", "get", "patch"]}]},
        {"apiVersion": RBAC, "kind": "RoleBinding", "metadata": lease_meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": f"{NAME}-lease"}, "subjects": subject},
        _deployment(meta, image, watch),
    ]
    return objects


def _deployment(meta: Mapping[str, Any], image: str, watch: Sequence[str]) -> dict[str, Any]:
    scope = [f"--namespace={ns}" for ns in watch] or ["--all-namespaces"]
    labels = {"app.kubernetes.io/name": NAME}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(meta),
        "spec": {
            "replicas": 2,  # one leads (Lease), the other stands by
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "operator", "image": image,
                        "command": ["llmd", "operator", *scope],
                        "env": [
                            {"name": "POD_NAMESPACE", "valueFrom": {
                                "fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "POD_NAME", "valueFrom": {
                                "fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }
