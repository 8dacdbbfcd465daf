"""Kubernetes discovery: the ready pods an InferencePool selects, one endpoint per pod × port.

`KubernetesDiscovery.updates()` reads the pool (`inference.networking.k8s.io/v1`: its
`selector.matchLabels` and `targetPorts`), lists the pods matching the selector, yields the
endpoint set, then watches the pods and yields the new set after every change that alters it.
A watch ends after `watch_timeout_s` (the server's `timeoutSeconds`, and a read timeout for
servers that ignore it), a 410 Gone or a dropped connection; the pool is then read again and the
pods relisted, so a changed selector or port list takes effect within one watch period.

Without a pool, a fixed label selector and target ports do the same (llm-d's standalone mode:
`--endpoint-selector`, `--endpoint-target-ports`).

A pod counts when it is Ready, has an IP, is not being deleted and carries every selector label
(checked here too, not only by the API's `labelSelector`). The annotation
`llm-d.ai/active-ports: "8000,8001"` narrows the target ports for that pod, as in llm-d.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiohttp

from llmd.epp.datastore import EndpointSpec
from llmd.errors import ConfigError, LlmdError

__all__ = ["DiscoveryError", "KubeApi", "KubernetesDiscovery", "pod_endpoints"]

log = logging.getLogger(__name__)

POOL_API = "/apis/inference.networking.k8s.io/v1"
ACTIVE_PORTS = "llm-d.ai/active-ports"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_FAILURES = 5


class DiscoveryError(LlmdError):
    """The Kubernetes API cannot be read (denied, missing pool, repeated failures)."""


@dataclass(frozen=True, slots=True)
class KubeApi:
    """Where the API server is and how to authenticate."""

    base_url: str
    token: str | None = None
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls, account_dir: Path = SERVICE_ACCOUNT) -> KubeApi:
        """The pod's own API access: `KUBERNETES_SERVICE_HOST`/`_PORT` and its service account."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("Kubernetes discovery: KUBERNETES_SERVICE_HOST is not set "
                              "(not running in a pod?)")
        token_file, ca = account_dir / "token", account_dir / "ca.crt"
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"Kubernetes discovery: cannot read {token_file}: {exc}") from None
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token, str(ca) if ca.exists() else None)


class KubernetesDiscovery:
    """A `Discovery` over the Kubernetes API (see the module docstring)."""

    def __init__(self, api: KubeApi, namespace: str, *, pool_name: str | None = None,
                 selector: Mapping[str, str] | None = None, target_ports: Sequence[int] = (),
                 watch_timeout_s: float = 300.0, request_timeout_s: float = 10.0,
                 retry_backoff_s: float = 1.0) -> None:
        if pool_name is None and not (selector and target_ports):
            raise ConfigError("Kubernetes discovery needs an InferencePool name, or a label "
                              "selector and target ports")
        self.api = api
        self.namespace = namespace
        self.pool_name = pool_name
        self.selector = dict(selector or {})
        self.target_ports = tuple(target_ports)
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.retry_backoff_s = retry_backoff_s

    async def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        headers = {"Accept": "application/json"}
        if self.api.token:
            headers["Authorization"] = f"Bearer {self.api.token}"
        ssl_ctx: ssl.SSLContext | bool = True
        if self.api.ca_file:
            ssl_ctx = ssl.create_default_context(cafile=self.api.ca_file)
        connector = aiohttp.TCPConnector(limit=4, ssl=ssl_ctx)
        async with aiohttp.ClientSession(self.api.base_url, headers=headers,
                                         connector=connector) as http:
            last: tuple[EndpointSpec, ...] | None = None
            failures = 0
            while not stop.is_set():
                try:
                    async for endpoints in self._list_and_watch(http, stop):
                        failures = 0
                        if endpoints != last:
                            last = endpoints
                            yield endpoints
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    failures += 1
                    if failures >= MAX_FAILURES:
                        raise DiscoveryError(
                            f"Kubernetes discovery failed {failures} times in a row: {exc!r}"
                        ) from exc
                    log.warning("Kubernetes discovery: %r; relisting (%d)", exc, failures)
                    await _wait(stop, self.retry_backoff_s * failures)

    async def _list_and_watch(self, http: aiohttp.ClientSession,
                              stop: asyncio.Event) -> AsyncIterator[tuple[EndpointSpec, ...]]:
        selector, ports = await self._pool(http)
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))}
        pods_url = f"/api/v1/namespaces/{quote(self.namespace)}/pods"
        listing = await self._get_json(http, pods_url, params)
        pods = {_key(p): p for p in listing.get("items") or []}
        version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        yield _endpoints(pods.values(), selector, ports)
        watch = {**params, "watch": "true", "timeoutSeconds": str(int(self.watch_timeout_s)),
                 "allowWatchBookmarks": "true"}
        if version:
            watch["resourceVersion"] = version
        timeout = aiohttp.ClientTimeout(total=None, connect=self.request_timeout_s,
                                        sock_read=self.watch_timeout_s + 5)
        async with http.get(pods_url, params=watch, timeout=timeout) as resp:
            _check(resp, pods_url)
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
                    raise DiscoveryError(f"watch of {pods_url}: {obj.get('message', obj)}")
                if kind in ("ADDED", "MODIFIED"):
                    pods[_key(obj)] = obj
                elif kind == "DELETED":
                    pods.pop(_key(obj), None)
                else:
                    continue  # BOOKMARK
                yield _endpoints(pods.values(), selector, ports)

    async def _pool(self, http: aiohttp.ClientSession) -> tuple[dict[str, str], tuple[int, ...]]:
        if self.pool_name is None:
            return self.selector, self.target_ports
        url = (f"{POOL_API}/namespaces/{quote(self.namespace)}/inferencepools/"
               f"{quote(self.pool_name)}")
        spec = (await self._get_json(http, url, {})).get("spec") or {}
        selector = dict((spec.get("selector") or {}).get("matchLabels") or {})
        ports = tuple(int(p["number"]) for p in spec.get("targetPorts") or [])
        if not selector or not ports:
            raise DiscoveryError(f"InferencePool {self.namespace}/{self.pool_name} has no "
                                 "selector.matchLabels or no targetPorts")
        return selector, ports

    async def _get_json(self, http: aiohttp.ClientSession, url: str,
                        params: Mapping[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s)
        async with http.get(url, params=params, timeout=timeout) as resp:
            _check(resp, url)
            body: dict[str, Any] = await resp.json(content_type=None)
            return body


def pod_endpoints(pod: Mapping[str, Any], selector: Mapping[str, str],
                  ports: Sequence[int]) -> list[EndpointSpec]:
    """The endpoints one pod contributes: none unless it is selected, Ready, addressed and not
    terminating; one per target port (narrowed by `llm-d.ai/active-ports`)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels = dict(meta.get("labels") or {})
    ip = status.get("podIP")
    if not ip or meta.get("deletionTimestamp") or not _ready(status):
        return []
    if any(labels.get(k) != v for k, v in selector.items()):
        return []
    active = (meta.get("annotations") or {}).get(ACTIVE_PORTS)
    if active:
        allowed = {int(p) for p in active.split(",") if p.strip().isdigit()}
        ports = [p for p in ports if p in allowed]
    frozen = MappingProxyType(labels)
    return [EndpointSpec(ip, port, frozen) for port in ports]


def _endpoints(pods: Any, selector: Mapping[str, str],
               ports: Sequence[int]) -> tuple[EndpointSpec, ...]:
    found = [ep for pod in pods for ep in pod_endpoints(pod, selector, ports)]
    return tuple(sorted(found, key=lambda ep: (ep.address, ep.port)))


def _ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _check(resp: aiohttp.ClientResponse, url: str) -> None:
    if resp.status in (401, 403):
        raise DiscoveryError(f"GET {url}: {resp.status} (the EPP's service account needs "
                             "get/list/watch on pods and inferencepools)")
    if resp.status == 404:
        raise DiscoveryError(f"GET {url}: 404 (no such InferencePool or namespace)")
    resp.raise_for_status()


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


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
