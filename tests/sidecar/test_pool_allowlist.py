"""The sidecar's SSRF allowlist follows an InferencePool's pods (llm-d's `allowlist.go`).

Test double: no Kubernetes API server can run on this machine (none is packaged for PyPI or
Debian), so the InferencePool and its pods live in kmock's KubernetesEmulator, an in-memory API
server on 127.0.0.1 that serves get, list and watch over real HTTP. It applies no label
selectors and no resourceVersion semantics; the watcher checks the selector itself and relists
whenever a watch ends. Everything else is real: the `llmd sidecar` process (pointed at kmock
with `--kube-api-server`), and prefill and decode simulators of each engine's dialect.

Prefill simulator A listens on 127.0.0.1, B on 127.0.0.2 (Linux routes 127.0.0.0/8 to `lo`);
for SGLang both use one bootstrap port number, since the sidecar sends one. Their ports are
ephemeral, so the pools name them as their target ports.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from _cli import LLMD

from llmd._proc import stop_process
from llmd.engines import get_adapter
from llmd.sidecar import PREFILLER_HEADER, Allowlist, parse_host_port
from llmd.sidecar.pool import pod_hosts
from llmd.sim import RunningSim, SimConfig, running_sim

NS = "llm"
SELECTOR = {"llm-d.ai/inference-serving": "true", "llm-d.ai/model": "qwen"}
PODS = f"/api/v1/namespaces/{NS}/pods"
V1_POOLS = f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools"
V1ALPHA2_POOLS = f"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/{NS}/inferencepools"
MODEL = "llmd-sim"


def _pod(name: str, ip: str | None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS,
                         "labels": labels if labels is not None else dict(SELECTOR)},
            "status": status}


async def _create(kmock: Any, url: str, obj: dict[str, Any]) -> None:
    async with kmock.post(url, json=obj) as resp:
        assert resp.status == 200, await resp.text()


async def _delete(kmock: Any, url: str) -> None:
    async with kmock.delete(url) as resp:
        assert resp.status == 200, await resp.text()


@dataclass
class Stack:
    """Two prefill sims, a decode sim and the sidecar process in front of the decode sim."""

    a: RunningSim
    b: RunningSim
    sidecar_url: str
    output: list[str] = field(default_factory=list)

    def target(self, sim: RunningSim, host: str | None = None) -> str:
        return f"{host or sim.host}:{sim.port}"

    async def ask(self, target: str) -> tuple[int, Any]:
        """One P/D completion with `target` as the prefill host: (status, error body or None)."""
        async with openai.AsyncOpenAI(base_url=self.sidecar_url + "/v1", api_key="x",
                                      max_retries=0,
                                      default_headers={PREFILLER_HEADER: target}) as client:
            try:
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt="hello pool", max_tokens=2)
            except openai.APIStatusError as exc:
                return exc.status_code, (exc.body, exc.response.headers)
            assert raw.headers["x-llmd-kv-source"] == "transfer"  # prefill really ran there
            return raw.status_code, None

    async def status(self, target: str) -> int:
        return (await self.ask(target))[0]

    async def eventually(self, target: str, want: int, timeout_s: float = 10.0) -> None:
        """Poll until a request to `target` is answered `want` (the watch is asynchronous)."""
        await _until(lambda: self._is(target, want), timeout_s,
                     f"{target} to be answered {want}")

    async def _is(self, target: str, want: int) -> bool:
        return await self.status(target) == want


async def _until(pred: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


SimsHook = Callable[[RunningSim, RunningSim], Awaitable[None]]


@asynccontextmanager
async def _stack(kmock: Any, engine: str, *sidecar_args: str,
                 before: SimsHook | None = None,
                 args: Callable[[RunningSim, RunningSim], tuple[str, ...]] | None = None
                 ) -> AsyncIterator[Stack]:
    """The stack; `before(a, b)` runs once the prefill sims listen and before the sidecar
    starts (to create a pool with their ports), `args(a, b)` adds sidecar flags."""
    base: dict[str, Any] = {"engine": engine, "port": 0, "time_scale": 0.0}
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_sim(SimConfig(
            **base, role="prefill", host="127.0.0.1", bootstrap_port=0)))
        bootstrap = a.side_ports.get("bootstrap", 0)
        b = await stack.enter_async_context(running_sim(SimConfig(
            **base, role="prefill", host="127.0.0.2", bootstrap_port=bootstrap)))
        d = await stack.enter_async_context(running_sim(SimConfig(
            **base, role="decode", host="127.0.0.1")))
        if before is not None:
            await before(a, b)
        proc = await asyncio.create_subprocess_exec(
            *LLMD, "sidecar", "--host", "127.0.0.1", "--port", "0",
            "--model-server-port", str(d.port),
            "--kv-connector", get_adapter(engine).sidecar_connector,
            "--sglang-bootstrap-port", str(bootstrap or 8998),
            "--enable-ssrf-protection", "--inference-pool", f"{NS}/qwen",
            "--kube-api-server", str(kmock.url), *sidecar_args, *(args(a, b) if args else ()),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        stack.push_async_callback(stop_process, proc, 10)
        assert proc.stdout is not None
        output: list[str] = []
        async with asyncio.timeout(30):
            while not (m := re.search(r"listening on ([\d.]+):(\d+)", "".join(output))):
                line = (await proc.stdout.readline()).decode()
                assert line, "llmd sidecar exited early:\n" + "".join(output)
                output.append(line)
        # Keep reading, so the sidecar never blocks on a full pipe; the lines stay inspectable.
        drain = asyncio.create_task(_drain(proc.stdout, output), name="sidecar-output")
        try:
            yield Stack(a, b, f"http://{m.group(1)}:{m.group(2)}", output)
        finally:
            drain.cancel()
            with suppress(asyncio.CancelledError):
                await drain


async def _drain(stream: asyncio.StreamReader, output: list[str]) -> None:
    while line := await stream.readline():
        output.append(line.decode())


async def test_allowlist_follows_the_pool(kmock: Any, engine: str) -> None:
    async def pool(a: RunningSim, b: RunningSim) -> None:
        await _create(kmock, V1_POOLS, {
            "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": "qwen", "namespace": NS},
            "spec": {"selector": {"matchLabels": SELECTOR},
                     "targetPorts": [{"number": a.port}, {"number": b.port}]}})

    await _create(kmock, PODS, _pod("prefill-a", "127.0.0.1"))
    await _create(kmock, PODS, _pod("other-model", "127.0.0.3",
                                    labels={**SELECTOR, "llm-d.ai/model": "other"}))
    async with _stack(kmock, engine, before=pool) as s:
        # A pool pod's IP is allowed on the pool's target ports ...
        await s.eventually(s.target(s.a), 200)
        # ... and on no other port (say, an Envoy admin page on the same pod).
        status, (body, _) = await s.ask("127.0.0.1:15000")
        assert status == 403
        assert body["message"] == "prefill target 127.0.0.1:15000 is not allowed"
        # B is no pool pod: refused before any connection is made.
        status, (body, _) = await s.ask(s.target(s.b))
        assert status == 403
        assert body["message"] == f"prefill target {s.target(s.b)} is not allowed"
        # A pod added later becomes allowed ...
        await _create(kmock, PODS, _pod("prefill-b", "127.0.0.2"))
        await s.eventually(s.target(s.b), 200)
        # ... one the selector does not match never is ...
        assert await s.status(s.target(s.b, "127.0.0.3")) == 403
        # ... and a deleted one is refused again.
        await _delete(kmock, f"{PODS}/prefill-b")
        await s.eventually(s.target(s.b), 403)
        assert await s.status(s.target(s.a)) == 200
        assert "target ports" in "".join(s.output)


async def test_unsynced_allowlist_fails_closed_with_503(kmock: Any, engine: str) -> None:
    """Until the pool is listed, a target outside the static list is 503 (not 403: it may be a
    pool pod); the static `--prefill-allow HOST:PORT` entry works all along. The pool here is
    of the v1alpha2 group, whose selector is a plain label map and which has one target
    port."""
    await _create(kmock, PODS, _pod("prefill-a", "127.0.0.1"))
    async with _stack(kmock, engine, "--pool-group", "inference.networking.x-k8s.io",
                      args=lambda a, b: ("--prefill-allow", f"127.0.0.2:{b.port}")) as s:
        status, (body, headers) = await s.ask(s.target(s.a))
        assert status == 503 and headers["retry-after"] == "1"
        assert "has not synced with InferencePool llm/qwen" in body["message"]
        assert await s.status(s.target(s.b)) == 200  # static entry
        await _create(kmock, V1ALPHA2_POOLS, {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
            "metadata": {"name": "qwen", "namespace": NS},
            "spec": {"selector": SELECTOR, "targetPortNumber": s.a.port}})
        await s.eventually(s.target(s.a), 200)  # retried after the backoff, then synced
        assert await s.status(s.target(s.b)) == 200  # union: still allowed
        log = "".join(s.output)
        assert "inferencepools/qwen: 404" in log and "Traceback" not in log


def test_allowlist_verdicts() -> None:
    a, b, c = (parse_host_port(t) for t in ("10.0.0.1:8000", "10.0.0.2:1", "[fd00::1]:9"))
    static = Allowlist(["10.0.0.1:8000"])
    assert static.synced and static.check(a) == "allow" and static.check(b) == "deny"
    pool = Allowlist(["10.0.0.1:8000"], pool="llm/qwen")
    assert not pool.synced
    assert pool.check(a) == "allow" and pool.check(b) == "unsynced"
    pool.set_pool(["10.0.0.2", "fd00::1"], [1, 9])
    assert [pool.check(t) for t in (a, b, c)] == ["allow", "allow", "allow"]
    pool.pool_failed("API down")  # a failed relist keeps the targets it knew
    assert pool.check(b) == "allow" and pool.last_error == "API down"
    pool.set_pool(["10.0.0.2"], [2])
    assert pool.check(b) == "deny" and pool.check(a) == "allow" and pool.last_error is None


@pytest.mark.parametrize(("pod", "hosts"), [
    pytest.param(_pod("a", "10.0.0.1"), {"a", "10.0.0.1"}, id="ip-and-name"),
    pytest.param(_pod("a", None), set(), id="no-ip-yet"),
    pytest.param({**_pod("a", "10.0.0.1"),
                  "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"},
                                                             {"ip": "fd00::1"}]}},
                 {"a", "10.0.0.1", "fd00::1"}, id="dual-stack"),
])
def test_pod_hosts(pod: dict[str, Any], hosts: set[str]) -> None:
    assert pod_hosts([pod]) == hosts


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--inference-pool", "llm/qwen"), "KUBERNETES_SERVICE_HOST is not set",
                 id="not-in-a-pod"),
    pytest.param(("--inference-pool", "qwen"), "'qwen' is not namespace/name", id="no-namespace"),
    pytest.param(("--inference-pool", "llm/qwen", "--pool-group", "x.k8s.io"),
                 "pool_group: 'x.k8s.io' is not one of", id="bad-group"),
])
async def test_bad_pool_flags_exit_2(args: tuple[str, ...], message: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "sidecar", "--port", "0", "--enable-ssrf-protection", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(30):
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert message in out and "Traceback" not in out
