"""Golden renders for vLLM and SGLang: aggregated, P/D, multinode, and one file for both engines.

Regenerate after a deliberate change with `LLMD_UPDATE_GOLDEN=1 pytest tests/deploy` and review
the diff.
"""

from __future__ import annotations

import os

import pytest
import yaml

from llmd.deploy import dump_yaml, render_files
from llmd.engines import ENGINE_TYPE_LABEL, get_adapter

from ._cases import EXAMPLES, GOLDEN, GOLDEN_CASES, NAMESPACE

UPDATE = os.environ.get("LLMD_UPDATE_GOLDEN") == "1"


def _render(name: str) -> str:
    _, files, sets = GOLDEN_CASES[name]
    result = render_files([EXAMPLES / f for f in files], sets, release="demo",
                          namespace=NAMESPACE)
    assert result.warnings == []
    return dump_yaml(result.objects)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = _render(name)
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with LLMD_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from {path.name} (LLMD_UPDATE_GOLDEN=1)"


def test_every_engine_has_every_shape(engine: str) -> None:
    shapes = {n.split("-", 1)[1] for n, (e, _, _) in GOLDEN_CASES.items() if e == engine}
    assert {"aggregated", "pd", "multinode"} <= shapes
    assert f"both-as-{engine}" in GOLDEN_CASES


def _pods(objects: list[dict]) -> list[dict]:
    pods = []
    for obj in objects:
        if obj["kind"] == "Deployment" and "template" in obj["spec"]:
            pods.append(obj["spec"]["template"])
        elif obj["kind"] == "LeaderWorkerSet":
            lwt = obj["spec"]["leaderWorkerTemplate"]
            pods += [lwt[k] for k in ("leaderTemplate", "workerTemplate") if k in lwt]
    return [p for p in pods if ENGINE_TYPE_LABEL in p["metadata"]["labels"]]


@pytest.mark.parametrize("shape", ["aggregated", "pd", "multinode", "precise"])
def test_engine_specifics_follow_the_engine(engine: str, shape: str) -> None:
    adapter = get_adapter(engine)
    objects = list(yaml.safe_load_all(_render(f"{engine}-{shape}")))
    pods = _pods(objects)
    assert pods
    for pod in pods:
        assert pod["metadata"]["labels"][ENGINE_TYPE_LABEL] == adapter.engine_type_label
        engine_container = pod["spec"]["containers"][0]
        assert engine_container["command"][: len(adapter.serve_command())] == \
            adapter.serve_command() or engine_container["command"][0] == "/bin/sh"
        if "readinessProbe" in engine_container:
            assert engine_container["readinessProbe"]["httpGet"]["path"] == \
                adapter.probes.readiness.path
        for init in pod["spec"].get("initContainers", []):
            if init["name"] == "routing-proxy":
                assert f"--kv-connector={adapter.sidecar_connector}" in init["args"]


def test_sglang_multinode_uses_lws_env() -> None:
    objects = list(yaml.safe_load_all(_render("sglang-multinode")))
    lws = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    for key in ("leaderTemplate", "workerTemplate"):
        args = template[key]["spec"]["containers"][0]["args"]
        i = args.index("--dist-init-addr")
        assert args[i:i + 6] == ["--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000", "--nnodes",
                                 "$(LWS_GROUP_SIZE)", "--node-rank", "$(LWS_WORKER_INDEX)"]
        # One tensor-parallel group over both pods: 8 GPUs each, TP 16.
        assert args[args.index("--tensor-parallel-size") + 1] == "16"
    leader, worker = template["leaderTemplate"]["spec"], template["workerTemplate"]["spec"]
    assert [c["name"] for c in leader["initContainers"]] == ["routing-proxy"]
    assert "initContainers" not in worker
    assert "readinessProbe" not in worker["containers"][0]
    # Workers serve no HTTP: the pool's selector must not match them.
    pool = next(o for o in objects if o["kind"] == "InferencePool")
    selector = pool["spec"]["selector"]["matchLabels"]
    worker_labels = template["workerTemplate"]["metadata"]["labels"]
    assert not selector.items() <= worker_labels.items()
    assert selector.items() <= template["leaderTemplate"]["metadata"]["labels"].items()


def test_vllm_multinode_headless_workers() -> None:
    objects = list(yaml.safe_load_all(_render("vllm-multinode")))
    lws = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    leader = template["leaderTemplate"]["spec"]["containers"][0]
    assert leader["command"] == ["vllm", "serve"]
    assert "--headless" not in leader["args"]
    i = leader["args"].index("--data-parallel-address")
    assert leader["args"][i + 1] == "$(LWS_LEADER_ADDRESS)"
    worker = template["workerTemplate"]["spec"]["containers"][0]
    assert worker["command"][:2] == ["/bin/sh", "-c"]
    script = worker["command"][2]
    assert script.startswith("exec vllm serve ")
    assert "--headless --data-parallel-start-rank $$(($(LWS_WORKER_INDEX) * 4))" in script


def test_pd_prefill_gets_bootstrap_and_decode_sits_behind_sidecar() -> None:
    objects = list(yaml.safe_load_all(_render("sglang-pd")))
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    decode = deployments["demo-llm-d-modelservice-decode"]["spec"]["template"]["spec"]
    prefill = deployments["demo-llm-d-modelservice-prefill"]["spec"]["template"]["spec"]
    d_args, p_args = decode["containers"][0]["args"], prefill["containers"][0]["args"]
    assert d_args[d_args.index("--port") + 1] == "8200"
    assert p_args[p_args.index("--port") + 1] == "8000"
    assert d_args[d_args.index("--disaggregation-mode") + 1] == "decode"
    assert p_args[p_args.index("--disaggregation-mode") + 1] == "prefill"
    assert "--disaggregation-bootstrap-port" in p_args
    assert "initContainers" not in prefill
    proxy = decode["initContainers"][0]
    assert proxy["command"] == ["llmd", "sidecar"]
    assert proxy["args"][:3] == ["--port=8000", "--model-server-port=8200", "--kv-connector=sglang"]
    assert proxy["restartPolicy"] == "Always"
