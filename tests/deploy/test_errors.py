"""Bad values files: each problem names the file, the values path, the bad value and what is
allowed; `llmd render` exits 2 with the messages and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import render_files
from llmd.errors import ConfigError

from ._cases import EXAMPLES


def _values(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _container(**over: Any) -> dict[str, Any]:
    return {"name": "engine", "image": "img", "modelCommand": "vllmServe", **over}


CASES = [
    pytest.param({"decode": {"containers": [_container(modelCommand="sglangserve")]}},
                 "decode.containers[0].modelCommand: 'sglangserve' is not one of vllmServe, "
                 "sglangServe, imageDefault, custom", id="bad-model-command"),
    pytest.param({"decode": {"containers": [_container(engine="tgi")]}},
                 "decode.containers[0].engine: 'tgi' is not one of vllm, sglang",
                 id="bad-engine"),
    pytest.param({"decode": {"containers": [_container(engine="sglang")]}},
                 "decode.containers[0].engine: 'sglang' contradicts modelCommand vllmServe",
                 id="engine-contradicts-command"),
    pytest.param({"decode": {"containers": [_container(modelCommand="custom")]}},
                 "decode.containers[0].command: required when modelCommand is custom",
                 id="custom-without-command"),
    pytest.param({"decode": {"containers": [_container(image=None)]}},
                 "decode.containers[0].image: required", id="no-image"),
    pytest.param({"decode": {"parallelism": {"data": 3, "dataLocal": 2}}, "multinode": True},
                 "decode.parallelism.data: 3 is not a multiple of dataLocal (2)",
                 id="dp-does-not-divide"),
    pytest.param({"decode": {"parallelism": {"data": 4, "dataLocal": 2, "workers": 1}}},
                 "decode.parallelism: data (4) must equal dataLocal (2) without multinode",
                 id="dp-needs-multinode"),
    pytest.param({"decode": {"parallelism": {"workers": 2}}},
                 "decode.parallelism.workers: 2 pods per group need `multinode: true`",
                 id="workers-need-multinode"),
    pytest.param({"multinode": True, "decode": {"parallelism": {"tensor": 8, "workers": 2}}},
                 "decode.parallelism: vllm spreads a multinode group only by data parallelism",
                 id="vllm-tp-across-nodes"),
    pytest.param({"routing": {"servicePort": 8200}},
                 "routing.proxy.targetPort: 8200 is also routing.servicePort", id="port-clash"),
    pytest.param({"routing": {"servicePort": 8998}, "prefill": {"replicas": 1, "containers": [
                      _container(modelCommand="sglangServe")]},
                  "decode": {"containers": [_container(modelCommand="sglangServe")]}},
                 "routing.servicePort: 8998 is also a port sglang binds for prefill",
                 id="bootstrap-port-clash"),
    pytest.param({"routing": {"proxy": {"enabled": False}}, "prefill": {"replicas": 2}},
                 "routing.proxy.enabled: false, but prefill.replicas is 2: P/D needs the "
                 "routing sidecar", id="pd-without-proxy"),
    pytest.param({"routing": {"proxy": {"connector": "nixlv2"}}, "prefill": {"replicas": 1,
                  "containers": [_container(modelCommand="sglangServe")]},
                  "decode": {"containers": [_container(modelCommand="sglangServe")]}},
                 "routing.proxy.connector: 'nixlv2' speaks vllm's P/D protocol, but decode "
                 "runs sglang (decode.containers[0].modelCommand 'sglangServe'): use 'sglang'",
                 id="connector-mismatch"),
    pytest.param({"modelArtifacts": {"uri": "s3://bucket/model"}},
                 "modelArtifacts.uri: 's3://bucket/model' is not one of hf://MODEL",
                 id="bad-uri-scheme"),
    pytest.param({"routing": {"httpRoute": {"enabled": True}}},
                 "routing.httpRoute.enabled: the route's backend is the InferencePool",
                 id="route-without-pool"),
    pytest.param({"routing": {"inferencePool": {"enabled": True}, "httpRoute": {"enabled": True}}},
                 "routing.httpRoute.parentRefs: required", id="route-without-parent"),
    pytest.param({"decode": {"replicas": -1}},
                 "decode.replicas: Input should be greater than or equal to 0",
                 id="negative-replicas"),
    pytest.param({"modelArtifacts": {"uri": "hf://{{ .Values.nope }}"}},
                 "modelArtifacts.uri: '{{ .Values.nope }}' refers to a value that is not set",
                 id="tpl-unknown-value"),
    pytest.param({"routing": {"proxy": {"secure": True}}},
                 "routing.proxy.secure: `llmd sidecar` has no --secure-proxy",
                 id="secure-proxy"),
    pytest.param({"dra": {"enabled": True, "type": "nvidia"}},
                 "dra.enabled: v0.3.8's top-level `dra` block was replaced in chart v0.4.0; "
                 "set accelerator.dra: true", id="v0.3.8-dra"),
    pytest.param({"decode": {"resourceClaims": [{"name": "imex"}]}},
                 "decode.resourceClaims[0].resourceClaimTemplateName: field required",
                 id="claim-without-template"),
    pytest.param({"decode": {"containers": [_container(resources={"limits": ["1"]})]}},
                 "decode.containers[0].resources.limits: Input should be a valid dictionary",
                 id="limits-not-a-map"),
    pytest.param({"requester": {"enable": True}},
                 "requester.enable: the fast-model-actuation requester is not rendered",
                 id="requester"),
]


@pytest.mark.parametrize(("doc", "message"), CASES)
def test_bad_values(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    path = _values(tmp_path / "bad.yaml", doc)
    with pytest.raises(ConfigError) as info:
        render_files([path])
    text = str(info.value)
    assert message in text
    assert all(line.startswith(f"{path}: ") for line in info.value.problems), text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _values(tmp_path / "bad.yaml", {
        "routing": {"servicePort": 8200},
        "decode": {"parallelism": {"workers": 2}},
        "prefill": {"parallelism": {"workers": 3}}})
    with pytest.raises(ConfigError) as info:
        render_files([path])
    assert len(info.value.problems) == 3


def test_unknown_keys_are_warnings(tmp_path: Path) -> None:
    path = _values(tmp_path / "typo.yaml", {
        "decode": {"replica": 2, "containers": [_container(volumeMount=[])]},
        "routing": {"proxy": {"targetport": 8300}}})
    warnings = render_files([path]).warnings
    assert f"{path}: decode.replica: unknown key, ignored (did you mean 'replicas'?)" in warnings
    assert any("decode.containers[0].volumeMount: unknown key" in w for w in warnings)
    assert any("routing.proxy.targetport: unknown key, ignored (did you mean 'targetPort'?)" in w
               for w in warnings)


def test_free_form_maps_pass_through(tmp_path: Path) -> None:
    path = _values(tmp_path / "v.yaml", {
        "common": {"anything": 1},
        "routing": {"proxy": {"ssrfProtection": {"enabled": False}}},  # no pool: no warning
        "modelArtifacts": {"labels": {"llm-d.ai/inferenceServing": "true", "team": "a"}},
        "decode": {"nodeSelector": {"gpu": "h100"}, "extraConfig": {"hostNetwork": True},
                   "containers": [_container(extraConfig={"stdin": True})]}})
    result = render_files([path])
    assert result.warnings == []
    pod = next(o for o in result.objects if o["kind"] == "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["llm-d.ai/inferenceServing"] == "true"  # v0.3.8 label
    assert pod["spec"]["hostNetwork"] is True and pod["spec"]["nodeSelector"] == {"gpu": "h100"}
    assert pod["spec"]["containers"][0]["stdin"] is True


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from llmd.cli import main; main()", "render",
                           *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_error_exit_code_and_no_traceback(tmp_path: Path) -> None:
    path = _values(tmp_path / "bad.yaml",
                   {"decode": {"containers": [_container(modelCommand="sglangserve")]}})
    proc = _cli("-f", str(path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {path}: decode.containers[0].modelCommand: "
                                  "'sglangserve' is not one of vllmServe, sglangServe, "
                                  "imageDefault, custom")
    assert proc.stdout == ""


@pytest.mark.parametrize("content", ["a: [unclosed", "- just\n- a list\n"])
def test_cli_unreadable_yaml(tmp_path: Path, content: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    proc = _cli("-f", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_cli_prints_a_yaml_stream_and_writes_a_directory(tmp_path: Path) -> None:
    proc = _cli("-f", str(EXAMPLES / "values-sglang-pd.yaml"), "--release", "r",
                "--namespace", "ns")
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    assert {d["metadata"]["namespace"] for d in docs} == {"ns"}
    assert "InferencePool" in {d["kind"] for d in docs}
    out = tmp_path / "out"
    proc = _cli("-f", str(EXAMPLES / "values-sglang-pd.yaml"), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("*.yaml"))) == len(docs)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@pytest.mark.parametrize("junk", [None, -1, "x", [], {"a": 1}, "{{ .Values.nope }}"])
def test_any_wrong_value_is_a_config_error(junk: Any) -> None:
    """Every key of a full values file replaced by a wrong value: a ConfigError, or a render;
    never another exception (which the CLI would show as a traceback)."""
    from llmd.deploy import load_values_sources, render_values

    tree = load_values_sources([EXAMPLES / "values-sglang-pd.yaml"])
    for path in _paths(tree):
        broken = yaml.safe_load(yaml.safe_dump(tree))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = junk
        try:
            render_values(broken)
        except ConfigError:
            pass
