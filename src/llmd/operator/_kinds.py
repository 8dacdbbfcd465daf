"""The Kubernetes kinds the operator reads and writes, and where each one lives in the API.

`OWNED` is the one list of kinds a service's objects may have: the operator applies, prunes
and watches exactly these, and `manifests.py` grants RBAC on exactly these. A planned object
of any other kind is an error, not an object written without a way to clean it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from llmd.deploy import llmisvc

__all__ = ["EVENT", "GATEWAY", "LEASE", "OWNED", "PARENT", "Kind", "kind_of", "object_path"]


@dataclass(frozen=True, slots=True)
class Kind:
    """One namespaced resource: `apps/v1` `Deployment` is served at `.../deployments`."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str, name: str | None = None) -> str:
        """The collection URL in `namespace`, or one object's URL."""
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        url = f"{root}/namespaces/{quote(namespace)}/{self.plural}"
        return f"{url}/{quote(name)}" if name else url


PARENT: Final = Kind(llmisvc.API_VERSION, llmisvc.KIND, llmisvc.PLURAL)
GATEWAY: Final = Kind("gateway.networking.k8s.io/v1", "Gateway", "gateways")
LEASE: Final = Kind("coordination.k8s.io/v1", "Lease", "leases")
EVENT: Final = Kind("v1", "Event", "events")

OWNED: Final[tuple[Kind, ...]] = (
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("resource.k8s.io/v1", "ResourceClaimTemplate", "resourceclaimtemplates"),
    Kind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
)
_BY_TYPE: Final = {(k.api_version, k.kind): k for k in OWNED}


def kind_of(obj: Mapping[str, Any]) -> Kind | None:
    """The owned kind of `obj` (by apiVersion and kind), or None when it is not one."""
    return _BY_TYPE.get((str(obj.get("apiVersion")), str(obj.get("kind"))))


def object_path(kind: Kind, obj: Mapping[str, Any]) -> str:
    """The URL of `obj` (its metadata names it and its namespace)."""
    meta = obj["metadata"]
    return kind.path(str(meta["namespace"]), str(meta["name"]))
