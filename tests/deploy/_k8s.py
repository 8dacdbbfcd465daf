"""Offline validation of rendered objects, shared by the render and resource tests: core kinds
with kubernetes-validate (strict, so an unknown field fails), custom resources with jsonschema
against the CRDs in ../shared/crds/; PodMonitor (no CRD there) gets a structural check.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = ["K8S_VERSION", "validate_object"]

K8S_VERSION = "1.34"  # resource.k8s.io/v1 (DRA) is GA from 1.34
CRDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"):
        "inference.networking.k8s.io_inferencepools.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
        "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
}
CORE = {"ServiceAccount", "Deployment", "Service", "ConfigMap", "Role", "RoleBinding",
        "ResourceClaimTemplate", "PodDisruptionBudget"}


@functools.cache
def _crd_schema(shared: Path, api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((shared / "crds" / CRDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return dict(v["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{kind} {api_version} not in its CRD")


@functools.cache
def _crd_validator(shared: Path, api_version: str, kind: str) -> Any:
    """A validator of the kind's schema. Not `jsonschema.validate`, which first checks the
    schema itself against the metaschema, on every call: seconds for the LeaderWorkerSet CRD,
    whose schema is upstream's and not what these tests check."""
    schema = _crd_schema(shared, api_version, kind)
    return jsonschema.validators.validator_for(schema)(schema)


def validate_object(obj: dict[str, Any], shared: Path) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if obj["kind"] in CORE:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    elif key in CRDS:
        _crd_validator(shared, *key).validate(obj)
    elif obj["kind"] == "PodMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["spec"]["selector"]["matchLabels"] and obj["spec"]["podMetricsEndpoints"]
    else:
        raise AssertionError(f"no validator for {key}")
    for template in _pod_templates(obj):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"],
               "spec": template["spec"]}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        return [obj["spec"]["template"]]
    if obj["kind"] == "LeaderWorkerSet":
        lwt = obj["spec"]["leaderWorkerTemplate"]
        return [lwt[k] for k in ("leaderTemplate", "workerTemplate") if k in lwt]
    return []
