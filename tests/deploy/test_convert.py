"""`llmd convert`: ModelService values and KServe resources → `llm-d.ai` LLMInferenceService.

The strongest check is the one the converter makes itself: for values, both the values and
the resource are rendered and every difference is a note; with no notes, the objects are the
same, which these tests confirm object by object for every shape of both engines.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from llmd.deploy import convert_files, convert_kserve, plan_service, render_files

from ._cases import EXAMPLES
from .test_llmisvc import cluster_problems

# values example → the --set that makes it expressible exactly as a resource
LLMD = [sys.executable, "-c", "from llmd.cli import main; main()"]
EXACT = {
    "vllm": ("routing.proxy.enabled=false",),
    "sglang": ("routing.proxy.enabled=false",),
    "vllm-pd": ("prefill.monitoring.podmonitor.enabled=true",),
    "sglang-pd": ("prefill.monitoring.podmonitor.enabled=true",),
    "vllm-multinode": ("routing.proxy.enabled=false",),
    "sglang-multinode": ("routing.proxy.enabled=false",),
    "vllm-precise": ("routing.proxy.enabled=false",),
    "sglang-precise": ("routing.proxy.enabled=false",),
}


@pytest.mark.parametrize("example", EXACT, ids=EXACT.keys())
def test_values_convert_to_a_resource_that_deploys_the_same_objects(example: str) -> None:
    files, sets = [EXAMPLES / f"values-{example}.yaml"], EXACT[example]
    converted = convert_files(files, sets, namespace="llm")
    assert converted.notes == []
    resource = converted.resource
    assert cluster_problems(resource) == []
    name = resource["metadata"]["name"]
    ours = plan_service(resource).objects
    theirs = render_files(files, (*sets, f"fullnameOverride={name}"), release=name,
                          namespace="llm").objects
    assert ours == theirs


def test_what_a_resource_cannot_say_is_noted_not_dropped() -> None:
    # The chart runs the sidecar in aggregated decode pods; the resource only for P/D.
    notes = convert_files([EXAMPLES / "values-sglang.yaml"]).notes
    assert notes[0].startswith("routing.proxy.enabled: the resource runs the routing sidecar")
    assert "Role qwen3-0-6b-routing-proxy: only from the values" in notes
    # Decode-only PodMonitor in the values; the resource monitors every role.
    notes = convert_files([EXAMPLES / "values-vllm-pd.yaml"]).notes
    assert notes == ["PodMonitor qwen3-14b-prefill: only from the resource"]
    # Tracing has no field in the resource: every difference it makes is listed.
    notes = convert_files([EXAMPLES / "values-both.yaml"]).notes
    assert any("decode: spec.template.spec.containers[0].args:" in n for n in notes), notes
    assert any("containers[0].name: engine from the values, vllm from the resource" in n
               for n in notes), notes


def test_values_without_a_model_label_need_a_name() -> None:
    from llmd.errors import ConfigError

    with pytest.raises(ConfigError, match="--name"):
        convert_files([EXAMPLES / "values-vllm.yaml"], ("modelArtifacts.labels=null",))
    assert convert_files([EXAMPLES / "values-vllm.yaml"], ("modelArtifacts.labels=null",),
                         name="qwen").resource["metadata"]["name"] == "qwen"


def _kserve(spec: dict[str, Any], name: str = "qwen") -> dict[str, Any]:
    return {"apiVersion": "serving.kserve.io/v1alpha2", "kind": "LLMInferenceService",
            "metadata": {"name": name, "namespace": "llm"}, "spec": spec}


MAIN_SGLANG = {"template": {"containers": [{"name": "main",
                                            "image": "lmsysorg/sglang:v0.5.6.post2",
                                            "args": ["--context-length", "8192"]}]}}


def test_a_kserve_vllm_service_converts() -> None:
    obj = _kserve({"model": {"uri": "hf://Qwen/Qwen3-8B", "name": "Qwen/Qwen3-8B"},
                   "replicas": 2, "parallelism": {"tensor": 2},
                   "template": {"containers": [{"name": "main",
                                                "image": "ghcr.io/llm-d/llm-d-cuda:v0.4.0"}],
                                "nodeSelector": {"gpu": "h100"}},
                   "router": {"gateway": {"refs": [{"name": "gw", "namespace": "infra"}]},
                              "route": {}, "scheduler": {}}})
    converted = convert_kserve(obj)
    spec = converted.resource["spec"]
    assert spec["inferenceServer"] == {"type": "vllm",
                                       "image": "ghcr.io/llm-d/llm-d-cuda:v0.4.0"}
    assert spec["template"] == {"nodeSelector": {"gpu": "h100"}}
    assert spec["router"] == {"gateway": {"parentRefs": [{"name": "gw", "namespace": "infra"}]}}
    assert converted.notes == []
    assert cluster_problems(converted.resource) == []


@pytest.mark.parametrize("shape", ["pd", "multinode"])
def test_kserve_sglang_pd_and_multinode_stay_sglang(shape: str) -> None:
    """KServe falls back to vLLM presets for these shapes (kserve#6250); llmd does not."""
    spec: dict[str, Any] = {"model": {"uri": "hf://Qwen/Qwen3-14B"},
                            "runtime": "kserve-llm-sglang", **MAIN_SGLANG,
                            "router": {"gateway": {"refs": [{"name": "gw"}]}, "scheduler": {}}}
    if shape == "pd":
        spec["prefill"] = {"replicas": 2, "parallelism": {"tensor": 1}}
    else:
        spec["parallelism"] = {"tensor": 8}
        spec["worker"] = {}
    converted = convert_kserve(_kserve(spec))
    assert [n for n in converted.notes if "refused" in n] == []
    resource = converted.resource
    assert resource["spec"]["inferenceServer"]["type"] == "sglang"
    objects = plan_service(resource).objects
    containers = [c for o in objects if o["kind"] in ("Deployment", "LeaderWorkerSet")
                  and not o["metadata"]["name"].endswith("-epp")
                  for c in _pod_containers(o)]
    assert containers and all(c.get("command", [""])[:3] == ["python3", "-m",
                                                              "sglang.launch_server"]
                              for c in containers if c["name"] == "sglang")
    assert any(c["name"] == "sglang" for c in containers)


def _pod_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        return list(obj["spec"]["template"]["spec"]["containers"])
    lwt = obj["spec"]["leaderWorkerTemplate"]
    return [c for k in ("leaderTemplate", "workerTemplate") if k in lwt
            for c in lwt[k]["spec"]["containers"]]


def test_kserve_fields_without_a_place_are_named() -> None:
    obj = _kserve({"model": {"uri": "s3://bucket/qwen"}, "baseRefs": [{"name": "preset"}],
                   "parallelism": {"tensor": 2, "pipeline": 2},
                   "tracing": {"enabled": True},
                   "template": {"containers": [{"name": "main", "image": "vllm/vllm-openai",
                                                "command": ["bash", "-c", "vllm serve"]},
                                               {"name": "logger", "image": "busybox"}]},
                   "router": {"route": {"http": {"refs": [{"name": "my-route"}]}}}})
    notes = "\n".join(convert_kserve(obj).notes)
    for expected in ("baseRefs:", "parallelism.pipeline", "tracing:",
                     "containers[0].command", "containers[1] (logger)", "route.http.refs",
                     "model.uri: 's3://bucket/qwen'", "the converted resource is refused"):
        assert expected in notes, notes


def test_the_cli_prints_the_resource_and_notes_on_stderr(tmp_path: Any) -> None:
    out = subprocess.run([*LLMD, "convert", "-f",
                          str(EXAMPLES / "values-vllm.yaml")],
                         capture_output=True, text=True, check=True)
    resource = yaml.safe_load(out.stdout)
    assert resource["kind"] == "LLMInferenceService"
    assert out.stderr.startswith("note: routing.proxy.enabled")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode: {replicas: many}\n")
    out = subprocess.run([*LLMD, "convert", "-f", str(bad),
                          "--name", "x"], capture_output=True, text=True)
    assert out.returncode == 2 and "decode.replicas" in out.stderr


@pytest.mark.parametrize(("main", "runtime", "engine"), [
    ({"name": "main", "image": "registry/serving:1",
      "command": ["python3", "-m", "sglang.launch_server"]}, None, "sglang"),
    ({"name": "main", "image": "lmsysorg/sglang:v0.5.6.post2"}, None, "sglang"),
    ({"name": "main", "image": "ghcr.io/llm-d/llm-d-cuda:v0.4.0"}, "kserve-llm-sglang", "sglang"),
    ({"name": "main", "image": "vllm/vllm-openai:v0.11.0"}, None, "vllm"),
    ({"name": "main", "image": "registry/serving:1"}, None, "vllm"),  # KServe's default
])
def test_kserve_engine_comes_from_the_runtime_or_the_main_container(
        main: dict[str, Any], runtime: str | None, engine: str) -> None:
    spec: dict[str, Any] = {"model": {"uri": "hf://Qwen/Qwen3-8B"},
                            "template": {"containers": [main]}}
    if runtime:
        spec["runtime"] = runtime
    assert convert_kserve(_kserve(spec)).resource["spec"]["inferenceServer"]["type"] == engine
