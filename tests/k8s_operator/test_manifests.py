"""`llmd operator manifests`: every object validates (kubernetes-validate), RBAC follows scope."""

from __future__ import annotations

import kubernetes_validate
import pytest
from typer.testing import CliRunner

from llmd.cli import app
from llmd.deploy import crd
from llmd.operator import DEFAULT_IMAGE, install_manifests

K8S_VERSION = "1.34"


@pytest.mark.parametrize("watch", [(), ("team-a", "team-b")], ids=["cluster", "namespaces"])
def test_manifests_validate_and_follow_the_scope(watch: tuple[str, ...]) -> None:
    objects = install_manifests(crd(), namespace="ops", watch=watch)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    kinds = [(o["kind"], o["metadata"].get("namespace")) for o in objects]
    if watch:
        assert ("Role", "team-a") in kinds and ("RoleBinding", "team-b") in kinds
        assert not any(k == "ClusterRole" for k, _ in kinds)
    else:
        assert ("ClusterRole", None) in kinds and ("ClusterRoleBinding", None) in kinds
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == DEFAULT_IMAGE
    assert container["command"][:2] == ["llmd", "operator"]
    rules = next(o for o in objects if o["kind"] in ("ClusterRole", "Role")
                 and o["metadata"]["name"] == "llmd-operator")["rules"]
    verbs = {(g, r): set(rule["verbs"]) for rule in rules for g in rule["apiGroups"]
             for r in rule["resources"]}
    assert verbs[("llm-d.ai", "llminferenceservices/status")] == {"get", "patch"}
    assert verbs[("apps", "deployments")] == {"create", "delete", "get", "list", "patch",
                                              "watch"}
    assert "escalate" not in {v for vs in verbs.values() for v in vs}


def test_the_command_needs_a_scope() -> None:
    result = CliRunner().invoke(app, ["operator"])
    assert result.exit_code != 0 and "--all-namespaces" in result.output
