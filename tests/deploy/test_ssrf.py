"""`routing.proxy.ssrfProtection`: the routing sidecar's flags and env name the InferencePool it
follows, and its service account gets get/list/watch on the pool and on pods."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from llmd.deploy import render_files
from llmd.errors import ConfigError

from ._cases import EXAMPLES, NAMESPACE

ON = "routing.proxy.ssrfProtection.enabled=true"
POOL = "demo-llm-d-modelservice"  # the rendered InferencePool of release "demo"


def _render(engine: str, *sets: str) -> list[dict[str, Any]]:
    result = render_files([EXAMPLES / f"values-{engine}-pd.yaml"], sets, release="demo",
                          namespace=NAMESPACE)
    assert result.warnings == []
    return result.objects


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _proxy(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The decode pods' routing-proxy container and their service account."""
    pod = _find(objects, "Deployment", f"{POOL}-decode")["spec"]["template"]["spec"]
    proxy = next(c for c in pod["initContainers"] if c["name"] == "routing-proxy")
    return proxy, pod["serviceAccountName"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


OFF = "routing.proxy.ssrfProtection.enabled=false"
NO_POOL = ("routing.inferencePool.enabled=false", "routing.epp.enabled=false",
           "routing.httpRoute.enabled=false")


def _unprotected(objects: list[dict[str, Any]]) -> bool:
    proxy, _ = _proxy(objects)
    return not any("ssrf" in a for a in proxy["args"]) and "INFERENCE_POOL" not in _env(proxy) \
        and not [o for o in objects if o["metadata"]["name"].endswith("-routing-proxy")]


@pytest.mark.parametrize("shape", ["pd", "aggregated"])
def test_on_by_default_following_the_rendered_pool(engine: str, shape: str) -> None:
    values = EXAMPLES / f"values-{engine}{'-pd' if shape == 'pd' else ''}.yaml"
    result = render_files([values], release="demo", namespace=NAMESPACE)
    assert result.warnings == []
    proxy, _ = _proxy(result.objects)
    assert proxy["args"][-1] == "--enable-ssrf-protection"
    assert _env(proxy)["INFERENCE_POOL"] == f"$(POD_NAMESPACE)/{POOL}"
    _find(result.objects, "RoleBinding", f"{POOL}-routing-proxy")


def test_enabled_false_turns_it_off(engine: str) -> None:
    assert _unprotected(_render(engine, OFF))
    assert _unprotected(_render(engine, OFF, *NO_POOL))  # and no warning (asserted in _render)


def test_no_pool_known_is_off_with_a_warning(engine: str) -> None:
    result = render_files([EXAMPLES / f"values-{engine}-pd.yaml"], NO_POOL, release="demo",
                          namespace=NAMESPACE)
    assert _unprotected(result.objects)
    assert result.warnings == [
        "--set routing.inferencePool.enabled=false: "
        "routing.proxy.ssrfProtection: off: no InferencePool to follow "
        "(routing.inferencePool.enabled is false and routing.proxy.ssrfProtection.inferencePool "
        "unset), so the routing sidecar calls any prefill host a request names; name the pool "
        "(routing.proxy.ssrfProtection.inferencePool: NAME or NAMESPACE/NAME), or set "
        "routing.proxy.ssrfProtection.enabled: false"]


def test_a_named_pool_is_followed_without_the_rendered_one(engine: str) -> None:
    proxy, _ = _proxy(_render(engine, *NO_POOL,
                              "routing.proxy.ssrfProtection.inferencePool=gaie/pool"))
    assert _env(proxy) == {"INFERENCE_POOL": "gaie/pool"}


@pytest.mark.parametrize("sets", [
    pytest.param(("routing.proxy.enabled=false", "prefill.replicas=0"), id="no-sidecar"),
    pytest.param(("decode.create=false",), id="no-decode-pods"),
])
def test_default_without_a_sidecar_is_silently_off(engine: str, sets: tuple[str, ...]) -> None:
    objects = _render(engine, *sets)
    assert not [o for o in objects if o["metadata"]["name"].endswith("-routing-proxy")]


@pytest.mark.parametrize(("sets", "message"), [
    pytest.param(("routing.proxy.enabled=false", "prefill.replicas=0"),
                 "routing.proxy.ssrfProtection.enabled: the routing sidecar is off",
                 id="no-sidecar"),
    pytest.param(("decode.create=false",),
                 "routing.proxy.ssrfProtection.enabled: no decode pods run the routing sidecar",
                 id="no-decode-pods"),
])
def test_enabled_true_without_a_sidecar_is_an_error(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _render("vllm", ON, *sets)


def test_follows_the_rendered_pool_with_rbac(engine: str) -> None:
    objects = _render(engine, ON)
    proxy, account = _proxy(objects)
    assert proxy["args"][-1] == "--enable-ssrf-protection"
    env = _env(proxy)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["INFERENCE_POOL"] == f"$(POD_NAMESPACE)/{POOL}"
    _find(objects, "InferencePool", POOL)
    role = _find(objects, "Role", f"{POOL}-routing-proxy")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
         "verbs": ["get", "list", "watch"]}]
    binding = _find(objects, "RoleBinding", f"{POOL}-routing-proxy")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": NAMESPACE}]


def test_an_external_v1alpha2_pool_and_an_account_override() -> None:
    objects = _render("sglang", ON, "routing.inferencePool.enabled=false",
                      "routing.epp.enabled=false", "routing.httpRoute.enabled=false",
                      "routing.proxy.ssrfProtection.inferencePool=gaie/qwen-pool",
                      "routing.proxy.ssrfProtection.poolGroup=inference.networking.x-k8s.io",
                      "serviceAccountOverride=model-sa")
    proxy, account = _proxy(objects)
    assert account == "model-sa"
    assert proxy["args"][-2:] == ["--enable-ssrf-protection",
                                  "--pool-group=inference.networking.x-k8s.io"]
    assert _env(proxy) == {"INFERENCE_POOL": "gaie/qwen-pool"}
    role = _find(objects, "Role", f"{POOL}-routing-proxy")
    assert role["metadata"]["namespace"] == "gaie"  # where the pool and its pods are
    assert role["rules"][1]["apiGroups"] == ["inference.networking.x-k8s.io"]
    binding = _find(objects, "RoleBinding", f"{POOL}-routing-proxy")
    assert binding["metadata"]["namespace"] == "gaie"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "model-sa",
                                    "namespace": NAMESPACE}]


def test_llm_d_sidecar_image_gets_its_flag_and_both_env_forms() -> None:
    objects = _render("vllm", ON,
                      "routing.proxy.image=ghcr.io/llm-d/llm-d-routing-sidecar:v0.4.0")
    proxy, _ = _proxy(objects)
    assert "--enable-ssrf-protection=true" in proxy["args"]
    env = _env(proxy)
    assert env["INFERENCE_POOL_NAMESPACE"] == "$(POD_NAMESPACE)"
    assert env["INFERENCE_POOL_NAME"] == POOL
    assert env["INFERENCE_POOL"] == f"$(POD_NAMESPACE)/{POOL}"


@pytest.mark.parametrize(("sets", "message"), [
    pytest.param(("routing.inferencePool.enabled=false", "routing.epp.enabled=false",
                  "routing.httpRoute.enabled=false"),
                 "routing.proxy.ssrfProtection.inferencePool: required unless "
                 "routing.inferencePool is enabled", id="no-pool"),
    pytest.param(("routing.proxy.ssrfProtection.inferencePool=a/b/c",),
                 "routing.proxy.ssrfProtection.inferencePool: 'a/b/c' is not name or "
                 "namespace/name", id="bad-pool"),
    pytest.param(("routing.proxy.ssrfProtection.poolGroup=x.k8s.io",),
                 "routing.proxy.ssrfProtection.poolGroup: 'x.k8s.io' is not one of",
                 id="bad-group"),
])
def test_bad_values(sets: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _render("vllm", ON, *sets)
    assert message in str(info.value)


async def test_rendered_flags_and_env_are_what_llmd_sidecar_reads() -> None:
    """The rendered args and env, given to `llmd sidecar` outside a pod: it parses them, reads
    INFERENCE_POOL, and stops only because there is no in-cluster API to watch the pool with."""
    from _cli import LLMD

    proxy, _ = _proxy(_render("vllm", ON))
    assert proxy["command"] == ["llmd", "sidecar"]
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["INFERENCE_POOL"] = f"{NAMESPACE}/{POOL}"  # what the kubelet makes of $(POD_NAMESPACE)
    args = [a for a in proxy["args"] if not a.startswith("--port=")]
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "sidecar", "--port=0", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert "KUBERNETES_SERVICE_HOST is not set" in out and "Traceback" not in out
