"""Kubernetes API access shared by the EPP's discovery and the sidecar's SSRF allowlist.

`PodWatch.snapshots()` reads an InferencePool (its pod selector and target ports), lists the pods
the selector matches, yields a `PoolPods` snapshot, then watches the pods and yields a new
snapshot after every event. A watch ends after `watch_timeout_s` (the server's `timeoutSeconds`,
and a read timeout for servers that ignore it), a 410 Gone (our resourceVersion is too old) or a
closed stream; the pool is then read again and the pods relisted, so a changed selector takes
effect within one watch period. A transport failure is retried with a growing backoff; after
`max_failures` in a row, or at once on a refusal (401/403), a missing object (404) or a watch
ERROR event, `snapshots()` raises `KubeError`.

Pool API groups: `inference.networking.k8s.io/v1` (`spec.selector.matchLabels`,
`spec.targetPorts[].number`) and the older `inference.networking.x-k8s.io/v1alpha2`
(`spec.selector` as a plain map, `spec.targetPortNumber`), as llm-d's `--pool-group` accepts.
Without a pool, a fixed label selector and target ports do the same (llm-d's standalone mode).

A snapshot holds only pods that carry every selector label: the labels are checked here too,
not only by the API's `labelSelector`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from llmd.errors import ConfigError, LlmdError

__all__ = ["POOL_GROUP", "POOL_GROUPS", "KubeApi", "KubeError", "PodWatch", "PoolPods",
           "pod_selected", "wait_or_stop"]

log = logging.getLogger(__name__)

POOL_GROUP: Final = "inference.networking.k8s.io"
POOL_GROUPS: Final = {POOL_GROUP: "v1", "inference.networking.x-k8s.io": "v1alpha2"}
"""InferencePool API group → the version read."""
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(LlmdError):
    """The Kubernetes API cannot be read (denied, missing pool, repeated failures)."""


@dataclass(frozen=True, slots=True)
class KubeApi:
    """Where the API server is and how to authenticate (no token: none sent)."""

    base_url: str
    token: str | None = None
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls, account_dir: Path = SERVICE_ACCOUNT) -> KubeApi:
        """The pod's own API access: `KUBERNETES_SERVICE_HOST`/`_PORT` and its service account."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("Kubernetes API: KUBERNETES_SERVICE_HOST is not set "
                              "(not running in a pod?)")
        token_file, ca = account_dir / "token", account_dir / "ca.crt"
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"Kubernetes API: cannot read {token_file}: {exc}") from None
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token, str(ca) if ca.exists() else None)

    def session(self) -> aiohttp.ClientSession:
        """One small session for one watcher (its requests set their own timeouts)."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        ssl_ctx: ssl.SSLContext | bool = True
        if self.ca_file:
            ssl_ctx = ssl.create_default_context(cafile=self.ca_file)
        return aiohttp.ClientSession(self.base_url, headers=headers,
                                     connector=aiohttp.TCPConnector(limit=4, ssl=ssl_ctx))


@dataclass(frozen=True, slots=True)
class PoolPods:
    """One view of the pool: its selector and target ports, and the pods it selects."""

    selector: Mapping[str, str]
    ports: tuple[int, ...]
    pods: tuple[Mapping[str, Any], ...] = field(default=())


class PodWatch:
    """List and watch the pods of an InferencePool (or of a fixed selector); see the module
    docstring. `client` names the API user in permission errors ("the EPP")."""

    def __init__(self, api: KubeApi, namespace: str, *, pool_name: str | None = None,
                 pool_group: str = POOL_GROUP, selector: Mapping[str, str] | None = None,
                 target_ports: Sequence[int] = (), watch_timeout_s: float = 300.0,
                 request_timeout_s: float = 10.0, retry_backoff_s: float = 1.0,
                 max_failures: int = 5, client: str = "this component") -> None:
        if pool_name is None and not (selector and target_ports):
            raise ConfigError("Kubernetes watch needs an InferencePool name, or a label "
                              "selector and target ports")
        if pool_group not in POOL_GROUPS:
            raise ConfigError(f"pool group {pool_group!r} is not one of "
                              f"{', '.join(POOL_GROUPS)}")
        self.api = api
        self.namespace = namespace
        self.pool_name = pool_name
        self.pool_group = pool_group
        self.selector = dict(selector or {})
        self.target_ports = tuple(target_ports)
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.retry_backoff_s = retry_backoff_s
        self.max_failures = max_failures
        self.client = client

    @property
    def pool(self) -> str:
        """`namespace/name` of the pool (or of the selector) for messages."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))
        return f"{self.namespace}/{self.pool_name or selector}"

    async def snapshots(self, stop: asyncio.Event) -> AsyncIterator[PoolPods]:
        """Snapshots until `stop` is set; raises `KubeError` as the module docstring says."""
        async with self.api.session() as http:
            failures = 0
            while not stop.is_set():
                try:
                    async for snapshot in self._list_and_watch(http, stop):
                        failures = 0
                        yield snapshot
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    failures += 1
                    reason = f"Kubernetes API {self.api.base_url}: {type(exc).__name__}: {exc}"
                    if failures >= self.max_failures:
                        times = f" ({failures} failures in a row)" if failures > 1 else ""
                        raise KubeError(reason + times) from exc
                    log.warning("watch of %s: %s; relisting (%d)", self.pool, reason, failures)
                    await wait_or_stop(stop, self.retry_backoff_s * failures)

    async def _list_and_watch(self, http: aiohttp.ClientSession,
                              stop: asyncio.Event) -> AsyncIterator[PoolPods]:
        selector, ports = await self._pool(http)
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        pods_url = f"/api/v1/namespaces/{quote(self.namespace)}/pods"
        listing = await self._get_json(http, pods_url, params)
        pods = {_key(p): p for p in listing.get("items") or []}
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")

        def snapshot() -> PoolPods:
            return PoolPods(selector, ports,
                            tuple(p for p in pods.values() if pod_selected(p, selector)))

        yield snapshot()
        watch = {**params, "watch": "true", "timeoutSeconds": str(int(self.watch_timeout_s)),
                 "allowWatchBookmarks": "true"}
        if version:
            watch["resourceVersion"] = version
        # No total: a watch is open for the whole period; sock_read bounds every silence.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.request_timeout_s,
                                        sock_read=self.watch_timeout_s + 5)
        async with http.get(pods_url, params=watch, timeout=timeout) as resp:
            self._check(resp, pods_url)
            while not stop.is_set():
                try:
                    line = await _until_stop(resp.content.readline(), stop)
                except TimeoutError:
                    return  # the watch period is over: relist
                if not line:
                    return  # the server closed the watch
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return  # our resourceVersion is too old: relist
                    raise KubeError(f"watch of {pods_url}: {obj.get('message', obj)}")
                if kind in ("ADDED", "MODIFIED"):
                    pods[_key(obj)] = obj
                elif kind == "DELETED":
                    pods.pop(_key(obj), None)
                else:
                    continue  # BOOKMARK
                yield snapshot()

    async def _pool(self, http: aiohttp.ClientSession) -> tuple[dict[str, str], tuple[int, ...]]:
        if self.pool_name is None:
            return self.selector, self.target_ports
        version = POOL_GROUPS[self.pool_group]
        url = (f"/apis/{self.pool_group}/{version}/namespaces/{quote(self.namespace)}/"
               f"inferencepools/{quote(self.pool_name)}")
        spec = (await self._get_json(http, url, {})).get("spec") or {}
        if version == "v1":
            selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
            ports = tuple(int(p["number"]) for p in spec.get("targetPorts") or [])
        else:  # v1alpha2: the selector is the label map itself, one target port
            selector = dict(spec.get("selector") or {})
            number = spec.get("targetPortNumber")
            ports = (int(number),) if number else ()
        if not selector or not ports:
            raise KubeError(f"InferencePool {self.namespace}/{self.pool_name} "
                            f"({self.pool_group}/{version}) has no pod selector or no target "
                            "ports")
        return selector, ports

    async def _get_json(self, http: aiohttp.ClientSession, url: str,
                        params: Mapping[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        async with http.get(url, params=params, timeout=timeout) as resp:
            self._check(resp, url)
            body: dict[str, Any] = await resp.json(content_type=None)
            return body

    def _check(self, resp: aiohttp.ClientResponse, url: str) -> None:
        if resp.status in (401, 403):
            raise KubeError(f"GET {url}: {resp.status} ({self.client}'s service account needs "
                            f"get/list/watch on pods and on inferencepools.{self.pool_group})")
        if resp.status == 404:
            raise KubeError(f"GET {url}: 404 (no such InferencePool or namespace)")
        resp.raise_for_status()


def pod_selected(pod: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    """Whether the pod carries every selector label."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


async def _until_stop(read: Any, stop: asyncio.Event) -> bytes:
    """`await read`, or `b""` as soon as `stop` is set."""
    reader = asyncio.ensure_future(read)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, stopper):
            if not task.done():
                task.cancel()
        await asyncio.gather(reader, stopper, return_exceptions=True)
    if reader.done() and not reader.cancelled():
        data: bytes = reader.result()
        return data
    return b""


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
