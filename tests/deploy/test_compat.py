"""The chart's own examples render to objects equivalent to the chart's output beside them.

Compared: object kinds and names, replicas, selectors, pod labels, volumes, and for every
container its command, args, env, ports, resources and volumeMounts. The differences llmd makes
on purpose are listed in ALLOWED below (and in docs/deploy.md, "Differences from the chart");
anything else fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import render_files

from ._cases import COMPAT, COMPAT_CASES

# Every deliberate difference, as the test applies it to llmd's objects before comparing.
ALLOWED = {
    "metadata-labels": "object labels say managed-by llmd instead of Helm chart/version labels",
    "engine-type-label": "pod templates carry llm-d.ai/engine-type",
    "probes": "engine containers get the engine's startup/readiness/liveness probes",
    "llmd-sidecar": "the routing proxy runs `llmd sidecar --port --model-server-port "
                    "--kv-connector` (zap flags belong to the Go sidecar and are dropped)",
    "sidecar-resources": "the routing proxy requests cpu 200m / memory 128Mi instead of {}",
    "sidecar-image": "the routing proxy image is llmd's",
    "port-protocol": "the sidecar's containerPort states protocol TCP",
    "pd-kv-transfer": "with P/D on, vLLM containers get --kv-transfer-config (NixlConnector, "
                      "kv_both) unless their args already set it",
    "ssrf-no-pool": "SSRF protection is on by default, but the examples name no InferencePool "
                    "for it to follow: the sidecar is rendered as the chart renders it "
                    "(unprotected) and llmd says so in a warning",
}
SSRF_NO_POOL = "routing.proxy.ssrfProtection: off: no InferencePool to follow"
NIXL = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
COMPARED_CONTAINER_KEYS = ("name", "image", "command", "args", "env", "ports", "resources",
                           "volumeMounts")


def _chart(name: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all((COMPAT / f"output-{name}.yaml").read_text()) if o]


def _normalise_chart(obj: dict[str, Any]) -> dict[str, Any]:
    obj = yaml.safe_load(yaml.safe_dump(obj))
    obj["metadata"].pop("labels", None)
    for pod in _pod_templates(obj):
        for c in pod["spec"].get("initContainers", []):
            if c.get("env") is None:
                c.pop("env", None)
    return obj


def _normalise_llmd(obj: dict[str, Any]) -> dict[str, Any]:
    obj = yaml.safe_load(yaml.safe_dump(obj))
    obj["metadata"].pop("labels", None)  # metadata-labels
    for pod in _pod_templates(obj):
        pod["metadata"]["labels"].pop("llm-d.ai/engine-type")  # engine-type-label
        for c in pod["spec"]["containers"]:
            args = c.get("args", [])
            if "--kv-transfer-config" in args:  # pd-kv-transfer (the chart's values set it)
                i = args.index("--kv-transfer-config")
                if args[i + 1] == NIXL:
                    del args[i:i + 2]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):  # probes
                c.pop(probe, None)
        for c in pod["spec"].get("initContainers", []):
            if c["name"] == "routing-proxy":
                _sidecar_back_to_chart(c)
    return obj


def _sidecar_back_to_chart(c: dict[str, Any]) -> None:
    """Undo llmd-sidecar, sidecar-resources, sidecar-image and port-protocol, so the rest of
    the proxy container must match the chart's."""
    assert c.pop("command") == ["llmd", "sidecar"]
    port, target, connector = (a.split("=", 1)[1] for a in c["args"][:3])
    assert [a.split("=")[0] for a in c["args"][:3]] == \
        ["--port", "--model-server-port", "--kv-connector"]
    c["args"] = [f"--port={port}", f"--vllm-port={target}", f"--connector={connector}",
                 "--zap-encoder=json", "--zap-log-level=debug", "--secure-proxy=false"]
    c["resources"] = {}
    c["image"] = "ghcr.io/llm-d/llm-d-routing-sidecar:latest"
    for p in c["ports"]:
        assert p.pop("protocol") == "TCP"


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        return [obj["spec"]["template"]]
    return []


def _view(obj: dict[str, Any]) -> dict[str, Any]:
    """The compared parts of one object."""
    out: dict[str, Any] = {"kind": obj["kind"], "name": obj["metadata"]["name"]}
    if obj["kind"] == "Deployment":
        spec = obj["spec"]
        pod = spec["template"]
        out.update(replicas=spec["replicas"], selector=spec["selector"],
                   labels=pod["metadata"]["labels"], volumes=pod["spec"]["volumes"],
                   serviceAccountName=pod["spec"]["serviceAccountName"])
        for group in ("initContainers", "containers"):
            out[group] = [{k: c.get(k) for k in (*COMPARED_CONTAINER_KEYS, "restartPolicy",
                                                   "securityContext", "imagePullPolicy")
                           if k in c}
                          for c in pod["spec"].get(group, [])]
    return out


@pytest.mark.parametrize(("name", "release"), sorted(COMPAT_CASES.items()))
def test_upstream_example_renders_like_the_chart(name: str, release: str) -> None:
    path = COMPAT / f"values-{name}.yaml"
    result = render_files([path], release=release)
    # ssrf-no-pool: the one warning
    assert [w.startswith(f"{path}: {SSRF_NO_POOL}") for w in result.warnings] == [True]
    ours = [_view(_normalise_llmd(o)) for o in result.objects]
    chart = [_view(_normalise_chart(o)) for o in _chart(name)]
    assert [(o["kind"], o["name"]) for o in ours] == [(o["kind"], o["name"]) for o in chart]
    for mine, theirs in zip(ours, chart, strict=True):
        assert mine == theirs, f"{mine['kind']} {mine['name']}"


def test_allowed_differences_are_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    for key in ALLOWED:
        assert f"`{key}`" in doc, f"docs/deploy.md does not list the difference {key!r}"


def test_probes_are_the_only_container_addition() -> None:
    """Without the probe normalisation the engine containers differ only by probes."""
    result = render_files([COMPAT / "values-pd.yaml"], release="pd")
    for obj in result.objects:
        for pod in _pod_templates(obj):
            c = pod["spec"]["containers"][0]
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= c.keys()
