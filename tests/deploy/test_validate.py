"""Every rendered object validates offline: core kinds with kubernetes-validate (strict, so an
unknown field fails), custom resources with jsonschema against the CRDs in ../shared/crds/.

PodMonitor (monitoring.coreos.com) has no CRD in ../shared/crds/: it gets a structural check.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmd.deploy import render_files

from ._cases import COMPAT, COMPAT_CASES, EXAMPLES, GOLDEN_CASES, NAMESPACE

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


def _validate(obj: dict[str, Any], shared: Path) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if obj["kind"] in CORE:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    elif key in CRDS:
        jsonschema.validate(obj, _crd_schema(shared, *key))
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


def _renders() -> list[Any]:
    cases = [pytest.param([EXAMPLES / f for f in files], sets, id=name)
             for name, (_, files, sets) in sorted(GOLDEN_CASES.items())]
    cases += [pytest.param([COMPAT / f"values-{name}.yaml"], (), id=f"compat-{name}")
              for name in sorted(COMPAT_CASES)]
    cases.append(pytest.param([EXAMPLES / "values-sglang-pd.yaml"],
                              ("accelerator.dra=true", "prefill.accelerator.type=amd"), id="dra"))
    cases.append(pytest.param([COMPAT / "values.default.yaml"], ("tracing.enabled=true",),
                              id="chart-defaults"))
    cases += [pytest.param([EXAMPLES / f"values-{name}.yaml"], (f"routing.epp.replicas={n}",),
                           id=f"{name}-epp-replicas-{n}")
              for name in ("vllm", "sglang", "vllm-pd", "sglang-pd", "vllm-precise",
                           "sglang-precise")
              for n in (2, 3)]
    return cases


@pytest.mark.parametrize(("files", "sets"), _renders())
def test_every_object_validates(files: list[Path], sets: tuple[str, ...],
                                shared_dir: Path) -> None:
    objects = render_files(files, sets, release="demo", namespace=NAMESPACE).objects
    assert objects
    for obj in objects:
        try:
            _validate(obj, shared_dir)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}") \
                from None


def test_validators_catch_mistakes(shared_dir: Path) -> None:
    """The validators are not vacuous: a broken pool, Deployment and budget fail."""
    pool = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "p"}, "spec": {"selector": {}, "targetPorts": []}}
    with pytest.raises(jsonschema.ValidationError):
        _validate(pool, shared_dir)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                      "metadata": {"labels": {"a": "b"}},
                      "spec": {"containers": [{"name": "c", "image": "i", "argz": []}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment, shared_dir)
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
              "spec": {"maxUnavailabel": 1, "selector": {"matchLabels": {"a": "b"}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(budget, shared_dir)
