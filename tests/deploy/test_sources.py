"""Values sources combine like Helm's: -f files deep-merge in order, --set wins, null unsets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmd.deploy import load_values_sources, render_files
from llmd.errors import ConfigError


def _write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_files_merge_maps_and_replace_lists(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"decode": {"replicas": 1, "nodeSelector": {"a": "1"},
                                                "containers": [{"name": "x"}, {"name": "y"}]}})
    b = _write(tmp_path / "b.yaml", {"decode": {"nodeSelector": {"b": "2"},
                                                "containers": [{"name": "z"}]}})
    tree = load_values_sources([a, b])
    assert tree["decode"] == {"replicas": 1, "nodeSelector": {"a": "1", "b": "2"},
                              "containers": [{"name": "z"}]}


@pytest.mark.parametrize(("expr", "expected"), [
    ("decode.replicas=3", {"decode": {"replicas": 3}}),
    ("routing.proxy.enabled=false", {"routing": {"proxy": {"enabled": False}}}),
    ("a=x,b=y", {"a": "x", "b": "y"}),
    ("decode.containers[0].image=img:1", {"decode": {"containers": [{"image": "img:1"}]}}),
    ("modelArtifacts.labels.llm-d\\.ai/model=m",
     {"modelArtifacts": {"labels": {"llm-d.ai/model": "m"}}}),
    ("decode.args={--a,--b}", {"decode": {"args": ["--a", "--b"]}}),
    ("x=null", {"x": None}),
])
def test_set_expressions(expr: str, expected: dict) -> None:
    assert load_values_sources([], [expr]) == expected


def test_set_overrides_files_and_keeps_siblings(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"decode": {"containers": [{"name": "e", "image": "old",
                                                                "modelCommand": "vllmServe"}]}})
    tree = load_values_sources([a], ["decode.containers[0].image=new"])
    assert tree["decode"]["containers"][0] == {"name": "e", "image": "new",
                                               "modelCommand": "vllmServe"}
    # the file's own data is not modified through the merged tree
    assert yaml.safe_load(a.read_text())["decode"]["containers"][0]["image"] == "old"


def test_null_removes_a_chart_default(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.yaml", {"routing": {"proxy": {
        "image": "ghcr.io/llm-d/llm-d-routing-sidecar:v0.4.0", "zapLogLevel": None}}})
    result = render_files([path])
    proxy = result.objects[1]["spec"]["template"]["spec"]["initContainers"][0]
    # The Go sidecar image keeps the chart's flags; null dropped --zap-log-level.
    assert proxy["args"] == ["--port=8000", "--vllm-port=8200", "--connector=nixlv2",
                             "--zap-encoder=json", "--secure-proxy=false"]


@pytest.mark.parametrize("expr", ["novalue", "=x", "a[0].b=1,a.c=2"])
def test_bad_set(expr: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        load_values_sources([], [expr])


def test_parallelism_follows_the_fields_set(engine: str, tmp_path: Path) -> None:
    """v0.3-era `data`+`dataLocal` implies workers; DP env and GPU counts follow the chart."""
    command = {"vllm": "vllmServe", "sglang": "sglangServe"}[engine]
    path = _write(tmp_path / "v.yaml", {
        "multinode": True, "prefill": {"create": False},
        "decode": {"parallelism": {"tensor": 2, "data": 4, "dataLocal": 2},
                   "containers": [{"name": "e", "image": "i", "modelCommand": command}]}})
    lws = render_files([path]).objects[1]
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    c = template["leaderTemplate"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert (env["DP_SIZE"], env["TP_SIZE"], env["DP_SIZE_LOCAL"]) == ("4", "2", "2")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"
    args = c["args"] if "args" in c else c["command"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "4"


def test_user_maps_extend_the_chart_defaults(tmp_path: Path) -> None:
    """As with Helm, a values file's labels add to `llm-d.ai/inference-serving: "true"`."""
    path = _write(tmp_path / "v.yaml", {
        "modelArtifacts": {"labels": {"llm-d.ai/model": "m"}},
        "accelerator": {"resources": {"amd": "amd.com/gpu2"}},
        "decode": {"containers": [{"image": "img", "modelCommand": "vllmServe"}]}})
    objects = render_files([path], ["accelerator.type=amd"]).objects
    pod = objects[1]["spec"]["template"]
    assert pod["metadata"]["labels"]["llm-d.ai/inference-serving"] == "true"
    assert pod["metadata"]["labels"]["llm-d.ai/model"] == "m"
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"amd.com/gpu2": "1"}
    path = _write(tmp_path / "w.yaml",
                  {"modelArtifacts": {"labels": {"llm-d.ai/inference-serving": None, "x": "y"}}})
    labels = render_files([path]).objects[1]["spec"]["template"]["metadata"]["labels"]
    assert "llm-d.ai/inference-serving" not in labels and labels["x"] == "y"
