"""Kubernetes discovery: the ready pods an InferencePool selects, one endpoint per pod × port.

`KubernetesDiscovery.updates()` follows the pool through `llmd._kube.PodWatch` (the pool's
`selector.matchLabels` and `targetPorts`, a pod list, then a watch that is renewed every
`watch_timeout_s`, after a 410 Gone or a dropped connection) and yields the endpoint set
whenever it changes. A changed selector or port list takes effect within one watch period.

Without a pool, a fixed label selector and target ports do the same (llm-d's standalone mode:
`--endpoint-selector`, `--endpoint-target-ports`).

A pod counts when it is Ready, has an IP, is not being deleted and carries every selector label.
The annotation `llm-d.ai/active-ports: "8000,8001"` narrows the target ports for that pod, as in
llm-d.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from llmd._kube import KubeApi, KubeError, PodWatch, pod_selected
from llmd.epp.datastore import EndpointSpec

__all__ = ["DiscoveryError", "KubeApi", "KubernetesDiscovery", "pod_endpoints"]

ACTIVE_PORTS = "llm-d.ai/active-ports"

DiscoveryError = KubeError
"""The EPP's name for a Kubernetes API failure (denied, missing pool, repeated failures)."""


class KubernetesDiscovery:
    """A `Discovery` over the Kubernetes API (see the module docstring)."""

    def __init__(self, api: KubeApi, namespace: str, *, pool_name: str | None = None,
                 selector: Mapping[str, str] | None = None, target_ports: Sequence[int] = (),
                 watch_timeout_s: float = 300.0, request_timeout_s: float = 10.0,
                 retry_backoff_s: float = 1.0) -> None:
        self.watch = PodWatch(api, namespace, pool_name=pool_name, selector=selector,
                              target_ports=target_ports, watch_timeout_s=watch_timeout_s,
                              request_timeout_s=request_timeout_s,
                              retry_backoff_s=retry_backoff_s, client="the EPP")

    async def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        last: tuple[EndpointSpec, ...] | None = None
        async for pool in self.watch.snapshots(stop):
            endpoints = _endpoints(pool.pods, pool.selector, pool.ports)
            if endpoints != last:
                last = endpoints
                yield endpoints


def pod_endpoints(pod: Mapping[str, Any], selector: Mapping[str, str],
                  ports: Sequence[int]) -> list[EndpointSpec]:
    """The endpoints one pod contributes: none unless it is selected, Ready, addressed and not
    terminating; one per target port (narrowed by `llm-d.ai/active-ports`).

    Each is named as llm-d names it (what session tokens carry): `namespace/pod` with one
    target port, `namespace/pod-rank-<i>` with several (i: the port's index in `ports`).
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or meta.get("deletionTimestamp") or not _ready(status):
        return []
    if not pod_selected(pod, selector):
        return []
    active = (meta.get("annotations") or {}).get(ACTIVE_PORTS)
    allowed = ({int(p) for p in active.split(",") if p.strip().isdigit()} if active
               else set(ports))
    frozen = MappingProxyType(dict(meta.get("labels") or {}))
    pod_name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    return [EndpointSpec(ip, port, frozen,
                         pod_name if len(ports) == 1 else f"{pod_name}-rank-{rank}")
            for rank, port in enumerate(ports) if port in allowed]


def _endpoints(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, str],
               ports: Sequence[int]) -> tuple[EndpointSpec, ...]:
    found = [ep for pod in pods for ep in pod_endpoints(pod, selector, ports)]
    return tuple(sorted(found, key=lambda ep: (ep.address, ep.port)))


def _ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])
