"""Every rendered object validates offline: core kinds with kubernetes-validate (strict, so an
unknown field fails), custom resources with jsonschema against the CRDs in ../shared/crds/.

PodMonitor (monitoring.coreos.com) has no CRD in ../shared/crds/: it gets a structural check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from llmd.deploy import render_files

from ._cases import COMPAT, COMPAT_CASES, EXAMPLES, GOLDEN_CASES, NAMESPACE
from ._k8s import validate_object


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
            validate_object(obj, shared_dir)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}") \
                from None


def test_validators_catch_mistakes(shared_dir: Path) -> None:
    """The validators are not vacuous: a broken pool, Deployment and budget fail."""
    pool = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "p"}, "spec": {"selector": {}, "targetPorts": []}}
    with pytest.raises(jsonschema.ValidationError):
        validate_object(pool, shared_dir)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                      "metadata": {"labels": {"a": "b"}},
                      "spec": {"containers": [{"name": "c", "image": "i", "argz": []}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment, shared_dir)
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
              "spec": {"maxUnavailabel": 1, "selector": {"matchLabels": {"a": "b"}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(budget, shared_dir)
