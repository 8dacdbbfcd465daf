"""The SSRF allowlist follows an InferencePool's pods, as llm-d's `allowlist.go` does.

The pool is read in `--pool-group` (v1 or v1alpha2), its pods listed and watched through
`llmd._kube.PodWatch`; every pod the pool's selector matches and that has an IP contributes its
IPs (`status.podIP` and `status.podIPs`) and its name, on the pool's target ports only
(`spec.targetPorts[].number`, v1alpha2 `spec.targetPortNumber`), whatever its readiness (a
prefill target the EPP picked a moment ago stays valid while its pod winds down).

Failure behaviour: a failed listing or watch (API server down, RBAC refusal, no such pool) is
logged and retried with a backoff that doubles from `pool_retry_backoff_s` up to 30 s; the
sidecar keeps serving. Before the first listing succeeds, P/D requests to targets outside the
static allowlist are answered 503; after it, the last known pods stay allowed until a listing
succeeds again (as an informer's cache does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from llmd._kube import KubeApi, KubeError, PodWatch, wait_or_stop
from llmd.sidecar.allowlist import Allowlist
from llmd.sidecar.config import SidecarConfig

__all__ = ["follow_pool", "pod_hosts", "pool_watch"]

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


def pool_watch(cfg: SidecarConfig) -> PodWatch | None:
    """The watch of the pool the allowlist follows, or None when it follows none.

    Raises ConfigError when no API server is given and the process is not in a pod.
    """
    ref = cfg.pool_ref
    if ref is None:
        return None
    api = KubeApi(cfg.kube_api_server) if cfg.kube_api_server else KubeApi.in_cluster()
    namespace, name = ref
    # One failure ends `snapshots()`: follow_pool records it and applies its own backoff.
    return PodWatch(api, namespace, pool_name=name, pool_group=cfg.pool_group, max_failures=1,
                    client="the sidecar")


def pod_hosts(pods: Iterable[Mapping[str, Any]]) -> set[str]:
    """IPs and names of the pods that have an IP (llm-d allows both forms)."""
    hosts: set[str] = set()
    for pod in pods:
        status = pod.get("status") or {}
        ips = {status.get("podIP")} | {p.get("ip") for p in status.get("podIPs") or []}
        ips.discard(None)
        ips.discard("")
        if not ips:
            continue
        hosts |= {str(ip) for ip in ips}
        if name := (pod.get("metadata") or {}).get("name"):
            hosts.add(str(name))
    return hosts


async def follow_pool(watch: PodWatch, allow: Allowlist, stop: asyncio.Event,
                      backoff_s: float = 1.0) -> None:
    """Keep `allow`'s pool targets in step with the pool until `stop` is set (never raises
    KubeError: see the module docstring)."""
    failures = 0
    while not stop.is_set():
        try:
            async for pool in watch.snapshots(stop):
                hosts = pod_hosts(pool.pods)
                if failures or not allow.synced:
                    log.info("SSRF allowlist: following InferencePool %s (%d pods, target "
                             "ports %s)", watch.pool, len(pool.pods),
                             ",".join(map(str, pool.ports)))
                allow.set_pool(hosts, pool.ports)
                failures = 0
        except KubeError as exc:
            failures += 1
            delay = min(backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S)
            allow.pool_failed(str(exc))
            # Unsynced, every P/D request to a pool pod fails: a human must look.
            level = logging.WARNING if allow.synced else logging.ERROR
            log.log(level, "SSRF allowlist: InferencePool %s: %s; retrying in %.1f s",
                    watch.pool, exc, delay)
            await wait_or_stop(stop, delay)
