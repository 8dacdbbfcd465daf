"""Engine containers carry only their own engine's names: the OpenTelemetry service name follows
the engine, and env only another engine reads (`VLLM_*`) stays off them."""

from __future__ import annotations

from typing import Any

import pytest

from llmd.deploy import render_files
from llmd.engines import ENGINES, get_adapter
from llmd.errors import ConfigError

from ._cases import EXAMPLES

TRACING = "tracing.enabled=true"


def _other(engine: str) -> str:
    return next(e for e in ENGINES if e != engine)


def _render(engine: str, *sets: str) -> tuple[list[dict[str, Any]], list[str]]:
    result = render_files([EXAMPLES / f"values-{engine}-pd.yaml"], sets, release="demo")
    return result.objects, result.warnings


def _containers(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """role → every container (sidecar included) of the role's pods."""
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        if obj["kind"] == "Deployment" and "llm-d.ai/role" in obj["spec"]["selector"].get(
                "matchLabels", {}):
            spec = obj["spec"]["template"]["spec"]
            role = obj["spec"]["selector"]["matchLabels"]["llm-d.ai/role"]
            out[role] = [*spec.get("initContainers", []), *spec["containers"]]
    return out


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("accelerator", ["nvidia", "intel-i915", "intel-xe"])
def test_a_pd_render_with_tracing_names_no_other_engine(engine: str, accelerator: str) -> None:
    """The leak a review found: SGLang pods with OTEL_SERVICE_NAME=vllm-decode and the chart's
    VLLM_* accelerator env."""
    objects, warnings = _render(engine, TRACING, f"accelerator.type={accelerator}")
    assert warnings == []
    other = _other(engine)
    roles = _containers(objects)
    assert set(roles) == {"decode", "prefill"}
    for role, containers in roles.items():
        for c in containers:
            for e in c.get("env", []):
                assert other not in f"{e['name']} {e.get('value', '')}".lower(), (role, e)
            assert other not in c["name"]
        engine_env = _env(containers[-1])
        assert engine_env["OTEL_SERVICE_NAME"] == f"{engine}-{role}"
        if engine == "vllm" and accelerator != "nvidia":
            assert engine_env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"  # the chart's default
        if accelerator == "intel-i915":
            assert engine_env["TORCH_LLM_ALLREDUCE"] == "1"  # no engine's prefix: kept
    assert _env(roles["decode"][0])["OTEL_SERVICE_NAME"] == "routing-proxy"


def test_the_charts_vllm_names_apply_to_vllm() -> None:
    objects, warnings = _render("vllm", TRACING, "tracing.serviceNames.vllmDecode=qwen-d",
                                "tracing.serviceNames.vllmPrefill=qwen-p")
    assert warnings == []
    roles = _containers(objects)
    assert _env(roles["decode"][-1])["OTEL_SERVICE_NAME"] == "qwen-d"
    assert _env(roles["prefill"][-1])["OTEL_SERVICE_NAME"] == "qwen-p"


def test_sglang_has_its_own_names_and_a_vllm_name_is_not_taken() -> None:
    objects, warnings = _render("sglang", TRACING, "tracing.serviceNames.vllmDecode=qwen-d",
                                "tracing.serviceNames.sglangPrefill=qwen-p")
    roles = _containers(objects)
    assert _env(roles["decode"][-1])["OTEL_SERVICE_NAME"] == "sglang-decode"
    assert _env(roles["prefill"][-1])["OTEL_SERVICE_NAME"] == "qwen-p"
    assert warnings == [
        "--set tracing.serviceNames.vllmDecode=qwen-d: tracing.serviceNames.vllmDecode: names "
        "vllm pods only; decode runs sglang, named 'sglang-decode' (set "
        "tracing.serviceNames.sglangDecode)"]


def test_user_env_of_the_other_engine_is_dropped_with_a_warning(engine: str) -> None:
    theirs = get_adapter(_other(engine)).env_prefixes[0] + "FOO"
    ours = get_adapter(engine).env_prefixes[0] + "BAR"
    entry = f"accelerator.env.amd[0].name={theirs},accelerator.env.amd[0].value=1"
    objects, warnings = _render(
        engine, "accelerator.type=amd", entry,
        f"accelerator.env.amd[1].name={ours},accelerator.env.amd[1].value=2")
    env = _env(_containers(objects)["prefill"][0])
    assert theirs not in env and env[ours] == "2"
    assert warnings == [f"--set {entry}: accelerator.env.amd[0]: {theirs} is "
                        f"{_other(engine)}'s; not set on {engine} containers"]


def test_accelerator_env_needs_a_name(engine: str) -> None:
    with pytest.raises(ConfigError, match=r"accelerator.env.amd\[0\].name: required"):
        _render(engine, "accelerator.type=amd", "accelerator.env.amd[0].value=1")


def test_an_unnamed_container_is_named_after_its_engine(engine: str) -> None:
    objects, _ = _render(engine, "decode.containers[0].name=null")
    assert _containers(objects)["decode"][-1]["name"] == engine
