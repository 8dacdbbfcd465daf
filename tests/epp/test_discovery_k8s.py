"""Kubernetes discovery of an InferencePool's pods.

No Kubernetes API server can run on this machine (none is packaged for PyPI or Debian), so these
tests run the discovery against kmock's KubernetesEmulator: an in-memory API server on
127.0.0.1 that stores objects and serves list, watch, get, create, patch and delete over real
HTTP. It applies no label selectors and no resourceVersion semantics, which the discovery
does not rely on (it checks the selector itself and relists on every watch end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from llmd.engines import ENGINE_TYPE_LABEL, ROLE_LABEL
from llmd.epp.datastore import EndpointSpec
from llmd.epp.discovery_k8s import DiscoveryError, KubeApi, KubernetesDiscovery, pod_endpoints
from llmd.errors import ConfigError

NS = "llm"
SELECTOR = {"llm-d.ai/inference-serving": "true", "llm-d.ai/model": "qwen"}
PODS = f"/api/v1/namespaces/{NS}/pods"
POOLS = f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools"


def _pod(name: str, ip: str | None, *, ready: bool = True, labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip:
        status["podIP"] = ip
    meta: dict[str, Any] = {"name": name, "namespace": NS,
                            "labels": labels if labels is not None else {**SELECTOR}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}


def _pool(ports: Sequence[int]) -> dict[str, Any]:
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "qwen", "namespace": NS},
            "spec": {"selector": {"matchLabels": SELECTOR},
                     "targetPorts": [{"number": p} for p in ports]}}


async def _create(kmock: Any, url: str, obj: dict[str, Any]) -> None:
    async with kmock.post(url, json=obj) as resp:
        assert resp.status == 200, await resp.text()


async def _patch(kmock: Any, name: str, patch: dict[str, Any]) -> None:
    async with kmock.patch(f"{PODS}/{name}", json=patch) as resp:
        assert resp.status == 200, await resp.text()


def _ids(endpoints: Sequence[EndpointSpec]) -> list[str]:
    return [ep.id for ep in endpoints]


async def _next(updates: AsyncIterator[Sequence[EndpointSpec]]) -> list[str]:
    async with asyncio.timeout(5):
        return _ids(await anext(updates))


def _discovery(kmock: Any, **kwargs: Any) -> KubernetesDiscovery:
    kwargs.setdefault("pool_name", "qwen")
    return KubernetesDiscovery(KubeApi(str(kmock.url)), NS, **kwargs)


async def test_pool_pods_become_endpoints_and_follow_changes(kmock: Any) -> None:
    await _create(kmock, POOLS, _pool([8000, 8001]))
    labels = {**SELECTOR, ROLE_LABEL: "decode", ENGINE_TYPE_LABEL: "sglang"}
    await _create(kmock, PODS, _pod("ready", "10.0.0.1", labels=labels))
    await _create(kmock, PODS, _pod("starting", "10.0.0.2", ready=False))
    await _create(kmock, PODS, _pod("no-ip", None))
    await _create(kmock, PODS, _pod("other-model", "10.0.0.4",
                                    labels={**SELECTOR, "llm-d.ai/model": "other"}))
    stop = asyncio.Event()
    updates = _discovery(kmock).updates(stop)
    try:
        first = await anext(updates)
        assert _ids(first) == ["10.0.0.1:8000", "10.0.0.1:8001"]  # one per pod x target port
        assert first[0].engine == "sglang" and first[0].role == "decode"
        await _patch(kmock, "starting",
                     {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        assert await _next(updates) == ["10.0.0.1:8000", "10.0.0.1:8001", "10.0.0.2:8000",
                                        "10.0.0.2:8001"]
        async with kmock.delete(f"{PODS}/ready") as resp:
            assert resp.status == 200
        assert await _next(updates) == ["10.0.0.2:8000", "10.0.0.2:8001"]
        await _patch(kmock, "starting", {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        assert await _next(updates) == []
    finally:
        stop.set()
        await updates.aclose()


async def test_selector_mode_and_active_ports(kmock: Any) -> None:
    await _create(kmock, PODS, _pod("a", "10.0.0.1", annotations={"llm-d.ai/active-ports": "8001"}))
    await _create(kmock, PODS, _pod("b", "10.0.0.2"))
    stop = asyncio.Event()
    updates = _discovery(kmock, pool_name=None, selector=SELECTOR,
                         target_ports=(8000, 8001)).updates(stop)
    try:
        assert await _next(updates) == ["10.0.0.1:8001", "10.0.0.2:8000", "10.0.0.2:8001"]
    finally:
        stop.set()
        await updates.aclose()


async def test_stop_ends_the_watch(kmock: Any) -> None:
    await _create(kmock, POOLS, _pool([8000]))
    stop, found = asyncio.Event(), asyncio.Event()
    seen = []

    async def consume() -> None:
        async for endpoints in _discovery(kmock).updates(stop):
            seen.append(_ids(endpoints))
            if seen[-1] == ["10.0.0.1:8000"]:
                found.set()

    async with asyncio.timeout(5):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(consume(), name="discovery")
            await _create(kmock, PODS, _pod("a", "10.0.0.1"))
            await found.wait()
            stop.set()  # the TaskGroup exits only if the generator ends on stop


async def test_missing_pool_is_an_error_not_an_empty_pool(kmock: Any) -> None:
    stop = asyncio.Event()
    updates = _discovery(kmock, pool_name="nope").updates(stop)
    with pytest.raises(DiscoveryError, match="404"):
        async with asyncio.timeout(5):
            await anext(updates)
    await updates.aclose()


def test_needs_a_pool_or_a_selector() -> None:
    with pytest.raises(ConfigError, match="InferencePool name"):
        KubernetesDiscovery(KubeApi("http://127.0.0.1:1"), NS)


def test_in_cluster_needs_the_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        KubeApi.in_cluster()


@pytest.mark.parametrize(("pod", "expected"), [
    pytest.param(_pod("a", "10.0.0.1"), ["10.0.0.1:8000"], id="ready"),
    pytest.param(_pod("a", "10.0.0.1", ready=False), [], id="not-ready"),
    pytest.param(_pod("a", None), [], id="no-ip"),
    pytest.param(_pod("a", "10.0.0.1", labels={"llm-d.ai/model": "qwen"}), [],
                 id="missing-label"),
    pytest.param(_pod("a", "fd00::1"), ["[fd00::1]:8000"], id="ipv6"),
])
def test_pod_endpoints(pod: dict[str, Any], expected: list[str]) -> None:
    assert _ids(pod_endpoints(pod, SELECTOR, [8000])) == expected


@pytest.mark.parametrize(("ports", "annotations", "expected"), [
    pytest.param([8000], None, [("10.0.0.1:8000", f"{NS}/a")], id="one-port-pod-name"),
    pytest.param([8000, 8001], None,
                 [("10.0.0.1:8000", f"{NS}/a-rank-0"), ("10.0.0.1:8001", f"{NS}/a-rank-1")],
                 id="several-ports-ranked"),
    pytest.param([8000, 8001], {"llm-d.ai/active-ports": "8001"},
                 [("10.0.0.1:8001", f"{NS}/a-rank-1")], id="rank-is-the-pool-port-index"),
])
def test_pod_endpoints_are_named_as_llm_d_names_them(
        ports: list[int], annotations: dict[str, str] | None,
        expected: list[tuple[str, str]]) -> None:
    """The names session tokens carry (llm-d: namespace/pod, `-rank-<i>` per target port)."""
    pod = _pod("a", "10.0.0.1", annotations=annotations)
    assert [(ep.id, ep.name) for ep in pod_endpoints(pod, SELECTOR, ports)] == expected


def test_epp_cli_kubernetes_outside_a_pod_exits_2() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    proc = subprocess.run(
        [sys.executable, "-c", "from llmd.cli import main; main()", "epp", "--kubernetes",
         "--pool-name", "qwen", "--pool-namespace", NS, "--grpc-port", "0",
         "--grpc-health-port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "KUBERNETES_SERVICE_HOST is not set" in proc.stderr and "Traceback" not in proc.stderr


async def _pool_endpoints_gauge(url: str) -> float | None:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(
            url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("llmd_epp_pool_endpoints "):
                return float(line.split()[1])
    return None


async def _wait_for_gauge(url: str, value: float) -> None:
    for _ in range(250):  # up to ~5 s
        if await _pool_endpoints_gauge(url) == value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"llmd_epp_pool_endpoints never became {value}")


async def test_epp_serves_the_pool_it_discovers(kmock: Any, engine: str) -> None:
    """The EPP wired to Kubernetes discovery keeps its pool in step with the pods."""
    from llmd.epp import EppSettings, Listening, serve

    await _create(kmock, POOLS, _pool([8000]))
    # kmock answers 404 for a resource it has never stored (a real API server lists it empty):
    # a pod elsewhere makes `pods` known.
    other = _pod("elsewhere", "10.9.9.9")
    other["metadata"]["namespace"] = "other"
    await _create(kmock, "/api/v1/namespaces/other/pods", other)
    settings = EppSettings(grpc_port=0, health_port=0, metrics_port=0, pool_name="qwen",
                           pool_namespace=NS)
    stop = asyncio.Event()
    ports: list[Listening] = []
    async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
        tg.create_task(serve(settings, stop, discovery=_discovery(kmock),
                             on_listening=ports.append), name="epp")
        try:
            for _ in range(250):
                if ports:
                    break
                await asyncio.sleep(0.02)
            metrics = f"http://127.0.0.1:{ports[0].metrics_port}/metrics"
            await _wait_for_gauge(metrics, 0)
            labels = {**SELECTOR, ENGINE_TYPE_LABEL: engine}
            await _create(kmock, PODS, _pod("a", "127.0.0.1", labels=labels))
            await _wait_for_gauge(metrics, 1)
            async with kmock.delete(f"{PODS}/a") as resp:
                assert resp.status == 200
            await _wait_for_gauge(metrics, 0)
        finally:
            stop.set()
