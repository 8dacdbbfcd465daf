"""v0.3.8-era values files still render: old label name, top-level `dra`, Go sidecar image."""

from __future__ import annotations

from pathlib import Path

from llmd.deploy import render_files

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "values-v0.3.8.yaml"


def test_v038_file_renders_as_it_did() -> None:
    result = render_files([FIXTURE], release="old")
    # It names no InferencePool, so the sidecar's SSRF protection cannot follow one.
    assert result.warnings == [
        f"{FIXTURE}: routing.proxy.ssrfProtection: off: no InferencePool to follow "
        "(routing.inferencePool.enabled is false and routing.proxy.ssrfProtection.inferencePool "
        "unset), so the routing sidecar calls any prefill host a request names; name the pool "
        "(routing.proxy.ssrfProtection.inferencePool: NAME or NAMESPACE/NAME), or set "
        "routing.proxy.ssrfProtection.enabled: false"]
    deployment = next(o for o in result.objects if o["kind"] == "Deployment")
    # The selector keeps the old label only: no new default label sneaks in.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "llm-d.ai/inferenceServing": "true", "llm-d.ai/model": "Qwen-Qwen3-0-6B",
        "llm-d.ai/role": "decode"}
    pod = deployment["spec"]["template"]["spec"]
    proxy = pod["initContainers"][0]
    assert proxy["image"].endswith("v0.4.0-rc.1")
    assert proxy["args"][:3] == ["--port=8000", "--vllm-port=8200", "--connector=nixlv2"]
    engine = pod["containers"][0]
    # v0.3-era `data: 2` alone: two local data-parallel ranks, two GPUs.
    assert engine["args"][engine["args"].index("--data-parallel-size-local") + 1] == "2"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_pool_selects_by_the_old_label() -> None:
    objects = render_files([FIXTURE], ["routing.inferencePool.enabled=true"],
                           release="old").objects
    pool = next(o for o in objects if o["kind"] == "InferencePool")
    assert pool["spec"]["selector"]["matchLabels"] == {
        "llm-d.ai/inferenceServing": "true", "llm-d.ai/model": "Qwen-Qwen3-0-6B"}
