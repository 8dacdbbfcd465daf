"""The `LLMInferenceService` resource: its CRD, the examples, the rules, the objects.

The API server is not available here, so the CRD is applied as it would be, offline: its
`openAPIV3Schema` with jsonschema, unknown fields refused (as `kubectl apply`'s strict field
validation does), and every `x-kubernetes-validations` rule evaluated with the
`common-expression-language` CEL library on the node it sits on. This walk reads the generated
CRD, not llmd's models, so it checks what a cluster would enforce; each bad object must be
refused both by it and by `plan_service` (which the operator and `llmd render` use), naming the
same field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cel
import jsonschema
import pytest
import yaml

from llmd.deploy import crd, dump_yaml, plan_service
from llmd.errors import ConfigError

from ._cases import EXAMPLES, REPO
from ._k8s import K8S_VERSION, validate_object

CRD_FILE = REPO / "deploy" / "crds" / "llm-d.ai_llminferenceservices.yaml"
RESOURCES = sorted(EXAMPLES.glob("llmisvc-*.yaml"))
SHAPES = {"vllm", "sglang", "vllm-pd", "sglang-pd", "vllm-multinode", "sglang-multinode"}


def _schema() -> dict[str, Any]:
    version = crd()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def _load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def cluster_problems(obj: dict[str, Any], schema: dict[str, Any] | None = None) -> list[str]:
    """`path: message` for what an API server with this CRD would refuse in `obj`."""
    schema = schema or _schema()
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    if problems:
        return problems
    return _walk(schema, obj, "")


def _walk(node: dict[str, Any], data: Any, path: str) -> list[str]:
    problems = []
    for rule in node.get("x-kubernetes-validations", []):
        if cel.evaluate(rule["rule"], {"self": data}) is not True:
            problems.append(f"{path}{rule.get('fieldPath', '')}".lstrip(".") + ": "
                            + rule["message"])
    if node.get("type") == "object" and isinstance(data, dict):
        properties = node.get("properties")
        if properties is not None:
            problems += [f"{path}.{k}".lstrip(".") + ": unknown field" for k in data
                         if k not in properties]
            for key, sub in properties.items():
                if key in data:
                    problems += _walk(sub, data[key], f"{path}.{key}")
        elif isinstance(node.get("additionalProperties"), dict):
            for key, value in data.items():
                problems += _walk(node["additionalProperties"], value, f"{path}.{key}")
    elif node.get("type") == "array" and isinstance(data, list):
        for i, item in enumerate(data):
            problems += _walk(node["items"], item, f"{path}[{i}]")
    return problems


def test_the_committed_crd_is_the_generated_one() -> None:
    assert CRD_FILE.read_text() == dump_yaml([crd()]), \
        "deploy/crds/ is stale: run `llmd crd > deploy/crds/llm-d.ai_llminferenceservices.yaml`"


def test_the_crd_validates_as_a_kubernetes_object(shared_dir: Path) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(crd(), K8S_VERSION, strict=True)
    names = crd()["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == \
        ("LLMInferenceService", "llminferenceservices", ["llmisvc"])


def test_there_is_an_example_per_shape() -> None:
    shapes = {p.stem.removeprefix("llmisvc-") for p in RESOURCES}
    assert SHAPES <= shapes, SHAPES - shapes


@pytest.mark.parametrize("path", RESOURCES, ids=lambda p: p.stem)
def test_every_example_is_accepted_and_renders_objects_that_validate(
        path: Path, shared_dir: Path) -> None:
    obj = _load(path)
    assert cluster_problems(obj) == []
    rendered = plan_service({**obj, "metadata": {**obj["metadata"], "namespace": "llm"}})
    assert rendered.warnings == []
    kinds = {o["kind"] for o in rendered.objects}
    assert kinds & {"Deployment", "LeaderWorkerSet"}
    assert {"InferencePool", "ConfigMap"} <= kinds
    for o in rendered.objects:
        assert o["metadata"]["namespace"] == "llm"
        validate_object(o, shared_dir)


def _with(example: str, change: dict[str, Any]) -> dict[str, Any]:
    """The example with `change` deep-merged in; a None value removes the key."""
    obj = copy.deepcopy(_load(EXAMPLES / f"llmisvc-{example}.yaml"))

    def merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
        for key, value in patch.items():
            if value is None:
                into.pop(key, None)
            elif isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(obj, change)
    return obj


# (example, change, the field path both the cluster and llmd must name)
BAD = {
    "unknown-engine": ("vllm", {"spec": {"inferenceServer": {"type": "tgi"}}},
                       "spec.inferenceServer.type"),
    "no-image": ("sglang", {"spec": {"inferenceServer": {"image": None}}},
                 "spec.inferenceServer"),
    "bad-uri": ("vllm", {"spec": {"model": {"uri": "s3://bucket/model"}}}, "spec.model.uri"),
    "negative-replicas": ("vllm", {"spec": {"replicas": -1}}, "spec.replicas"),
    "typo": ("sglang", {"spec": {"inferenceServer": {"imagePullPolicyy": "Always"}}},
             "spec.inferenceServer.imagePullPolicyy"),
    "pd-without-router": ("sglang-pd", {"spec": {"router": None}}, "spec.prefill"),
    "pd-across-engines": ("sglang-pd", {"spec": {"prefill": {"inferenceServer": {
        "type": "vllm"}}}}, "spec.prefill.inferenceServer.type"),
    "config-and-ref": ("vllm", {"spec": {"router": {"scheduler": {
        "config": {"kind": "EndpointPickerConfig"}, "configRef": {"name": "cm"}}}}},
        "spec.router.scheduler"),
    "precise-with-config": ("sglang-precise", {"spec": {"router": {"scheduler": {
        "config": {"kind": "EndpointPickerConfig"}}}}}, "spec.router.scheduler.precise"),
    "replicated-config-ref": ("vllm", {"spec": {"router": {"scheduler": {
        "replicas": 2, "configRef": {"name": "cm"}}}}}, "spec.router.scheduler.configRef"),
    "joined-pool-with-scheduler": ("vllm", {"spec": {"router": {
        "pool": {"ref": {"name": "shared"}}, "scheduler": {"replicas": 1}}}},
        "spec.router.pool.ref"),
    "joined-pool-pd": ("sglang-pd", {"spec": {"router": {
        "pool": {"ref": {"name": "shared"}}, "gateway": None}}}, "spec.router.pool.ref"),
    "data-not-multiple": ("vllm-multinode", {"spec": {"parallelism": {"data": 6}}},
                          "spec.parallelism.data"),
    "duplicate-adapters": ("sglang-precise", {"spec": {"model": {"lora": {"adapters": [
        {"name": "a", "uri": "hf://o/a"}, {"name": "a", "uri": "hf://o/b"}]}}}},
        "spec.model.lora.adapters"),
    "single-node-worker": ("sglang-multinode", {"spec": {"worker": {"nodes": 1}}},
                           "spec.worker.nodes"),
    "long-name": ("vllm", {"metadata": {"name": "a" * 56}}, "metadata.name"),
    "dotted-name": ("vllm", {"metadata": {"name": "qwen3.6b"}}, "metadata.name"),
}


@pytest.mark.parametrize(("example", "change", "field"), BAD.values(), ids=BAD.keys())
def test_bad_objects_are_refused_by_the_crd_and_by_llmd_naming_the_field(
        example: str, change: dict[str, Any], field: str) -> None:
    obj = _with(example, change)
    cluster = cluster_problems(obj)
    assert any(p.startswith(field) for p in cluster), cluster
    with pytest.raises(ConfigError) as caught:
        plan_service(obj)
    assert any(line.startswith(field) for line in caught.value.problems), caught.value.problems


# Problems only the planner finds (the schema cannot express them): the operator reports them
# as Ready=False, reason InvalidSpec.
PLANNER_ONLY = {
    "vllm-multinode-by-tensor": ("vllm-multinode", {"spec": {"parallelism": {
        "tensor": 8, "data": None, "dataLocal": None}}}, "spec.parallelism"),
    "template-containers": ("vllm", {"spec": {"template": {"containers": []}}},
                            "spec.template"),
    "bad-adapter-uri": ("sglang-precise", {"spec": {"model": {"lora": {"adapters": [
        {"name": "a", "uri": "s3://bucket/a"}]}}}}, "spec.model.lora.adapters[0].uri"),
}


@pytest.mark.parametrize(("example", "change", "field"), PLANNER_ONLY.values(),
                         ids=PLANNER_ONLY.keys())
def test_what_the_schema_cannot_see_the_planner_refuses_by_field(
        example: str, change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_service(_with(example, change))
    assert any(line.startswith(field) for line in caught.value.problems), caught.value.problems


def test_the_engine_type_decides_the_serving_command_and_the_pd_connector() -> None:
    def commands(example: str, engine: str) -> dict[str, list[str]]:
        obj = _with(example, {"spec": {"inferenceServer": {"type": engine}}})
        out = {}
        for o in plan_service(obj).objects:
            if o["kind"] == "Deployment" and not o["metadata"]["name"].endswith("-epp"):
                pod = o["spec"]["template"]["spec"]
                for c in [*pod.get("initContainers", []), *pod["containers"]]:
                    out[f"{o['metadata']['name']}/{c['name']}"] = [*c.get("command", []),
                                                                    *c.get("args", [])]
        return out

    vllm, sglang = commands("sglang-pd", "vllm"), commands("sglang-pd", "sglang")
    assert vllm["qwen3-14b-decode/vllm"][:2] == ["vllm", "serve"]
    assert "--kv-transfer-config" in vllm["qwen3-14b-prefill/vllm"]
    assert "--kv-connector=nixlv2" in vllm["qwen3-14b-decode/routing-proxy"]
    assert sglang["qwen3-14b-decode/sglang"][:3] == ["python3", "-m", "sglang.launch_server"]
    assert "--disaggregation-mode" in sglang["qwen3-14b-prefill/sglang"]
    assert "--kv-connector=sglang" in sglang["qwen3-14b-decode/routing-proxy"]


def test_a_service_without_a_router_is_only_its_workloads() -> None:
    objects = plan_service(_with("vllm", {"spec": {"router": None}})).objects
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Deployment"}
    pod = objects[-1]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm"]  # no sidecar without P/D


def test_a_joined_pool_gets_pods_with_its_labels_and_no_picker() -> None:
    obj = _with("vllm", {"spec": {"router": {"gateway": None, "pool": {"ref": {
        "name": "shared-pool"}}}, "labels": {"pool": "shared"}}})
    objects = plan_service(obj).objects
    assert not {"InferencePool", "HTTPRoute", "ConfigMap"} & {o["kind"] for o in objects}
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["pool"] == "shared"


def test_a_scheduler_config_from_a_configmap_is_mounted_not_rendered() -> None:
    obj = _with("sglang", {"spec": {"router": {"scheduler": {"configRef": {
        "name": "team-epp", "key": "epp.yaml"}}}}})
    objects = plan_service(obj).objects
    assert "ConfigMap" not in {o["kind"] for o in objects}
    epp = next(o for o in objects if o["metadata"]["name"] == "qwen3-0-6b-epp"
               and o["kind"] == "Deployment")
    pod = epp["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "team-epp"}}]
    assert "--config-file=/config/epp.yaml" in pod["containers"][0]["args"]


def test_precise_routing_makes_every_engine_publish_in_blocks_the_index_uses() -> None:
    for engine, flag in (("vllm", "--block-size"), ("sglang", "--page-size")):
        obj = _with("sglang-precise", {"spec": {"inferenceServer": {"type": engine}}})
        objects = plan_service(obj).objects
        config = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap")
                                ["data"]["config.yaml"])
        assert "precise-prefix-cache-scorer" in {p["type"] for p in config["plugins"]}
        decode = next(o for o in objects if o["metadata"]["name"] == "qwen3-8b-decode")
        argv = decode["spec"]["template"]["spec"]["containers"][0]["args"]
        assert argv[argv.index(flag) + 1] == "16" and "--kv-events-config" in argv


def test_llmd_render_takes_a_resource_alone(tmp_path: Path) -> None:
    from llmd.deploy import render_inputs

    path = EXAMPLES / "llmisvc-sglang-pd.yaml"
    obj = _load(path)
    assert render_inputs([path], namespace="llm").objects == plan_service(
        {**obj, "metadata": {**obj["metadata"], "namespace": "llm"}}).objects
    with pytest.raises(ConfigError, match="renders alone"):
        render_inputs([path], ("replicas=3",))
    bad = tmp_path / "svc.yaml"
    bad.write_text(yaml.safe_dump(_with("vllm", {"spec": {"replicas": -1}})))
    with pytest.raises(ConfigError, match=r"svc.yaml: spec.replicas"):
        render_inputs([bad])
