"""Model artifacts by URI scheme, for both engines: argument, volume, mount and env."""

from __future__ import annotations

from typing import Any

import pytest

from llmd.deploy import render_values
from llmd.engines import ServeSpec, get_adapter

COMMAND = {"vllm": "vllmServe", "sglang": "sglangServe"}


def _engine_pod(engine: str, artifacts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    tree = {"modelArtifacts": {"name": "served", **artifacts}, "prefill": {"create": False},
            "decode": {"containers": [{"name": "e", "image": "img",
                                       "modelCommand": COMMAND[engine],
                                       "mountModelVolume": True}]}, **extra}
    objects = render_values(tree).objects
    spec: dict[str, Any] = objects[1]["spec"]["template"]["spec"]
    return spec


def _model_arg(engine: str, args: list[str]) -> str:
    if engine == "vllm":
        return args[0]  # `vllm serve MODEL`
    return args[args.index("--model-path") + 1]


@pytest.mark.parametrize(("uri", "model", "volume", "env"), [
    pytest.param("hf://Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B",
                 {"name": "model-storage", "emptyDir": {"sizeLimit": "5Mi"}},
                 {"HF_HOME": "/model-cache"}, id="hf"),
    pytest.param("pvc://models/qwen/0.6b", "/model-cache/qwen/0.6b",
                 {"name": "model-storage",
                  "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
                 {}, id="pvc"),
    pytest.param("pvc+hf://cache/hub/Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B",
                 {"name": "model-storage",
                  "persistentVolumeClaim": {"claimName": "cache", "readOnly": True}},
                 {"HF_HUB_CACHE": "/model-cache/hub"}, id="pvc+hf"),
    pytest.param("oci://registry.example/models/qwen:1", "/model-cache",
                 {"name": "model-storage", "image": {"reference": "registry.example/models/qwen:1",
                                                     "pullPolicy": "IfNotPresent"}},
                 {}, id="oci"),
])
def test_uri_schemes(engine: str, uri: str, model: str, volume: dict[str, Any],
                     env: dict[str, str]) -> None:
    pod = _engine_pod(engine, {"uri": uri})
    container = pod["containers"][0]
    assert _model_arg(engine, container["args"]) == model
    assert volume in pod["volumes"]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: values[k] for k in env} == env
    assert not {"HF_HOME", "HF_HUB_CACHE"} - set(env) & set(values)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model-storage")
    assert mount["mountPath"] == "/model-cache"
    assert mount.get("readOnly", False) == (not uri.startswith("hf://"))
    assert container["args"][container["args"].index("--served-model-name") + 1] == "served"


def test_writable_pvc_and_token(engine: str) -> None:
    pod = _engine_pod(engine, {"uri": "pvc+hf://cache/hub/Qwen/Qwen3-0.6B", "readOnly": False,
                               "authSecretName": "hf"})
    assert pod["volumes"][-1]["persistentVolumeClaim"]["readOnly"] is False
    container = pod["containers"][0]
    assert "readOnly" not in container["volumeMounts"][-1]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}


def test_image_default_uses_the_engines_model_flag(engine: str) -> None:
    tree = {"prefill": {"create": False}, "decode": {"containers": [
        {"name": "e", "image": "img", "modelCommand": "imageDefault", "engine": engine}]}}
    container = render_values(tree).objects[1]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container
    expected = get_adapter(engine).serve_args(ServeSpec(model="random/model"),
                                              model_as_flag=True)[:2]
    assert container["args"][:2] == expected
    if engine == "sglang":  # never a vLLM-only flag for SGLang
        assert not any("data-parallel-size-local" in a for a in container["args"])


def test_extra_objects_pass_through_with_templates() -> None:
    tree = {"extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "{{ .Release.Name }}-extra"},
                              "data": {"model": "{{ .Values.modelArtifacts.name }}"}}]}
    objects = render_values(tree, release="rel").objects
    assert objects[-1] == {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "rel-extra"}, "data": {"model": "random/model"}}
