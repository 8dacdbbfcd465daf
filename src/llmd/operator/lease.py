"""Leader election over a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does.

Only the holder reconciles: `LeaseElector.run(stop, lead)` tries to take the Lease every
`retry_s` (free, expired, or already ours), then runs `lead(term)` while renewing it every
`renew_s`. `term` is set when `stop` is set or the Lease is lost (another holder, or no
successful renewal for `duration_s`); `lead` must return then, and the elector goes back to
trying. On `stop` the Lease is released (holder cleared) so a standby takes over at once
instead of after `duration_s`.

Writes carry the resourceVersion they read (a merge patch with `metadata.resourceVersion` is
a precondition), so two candidates that both see an expired Lease cannot both take it.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmd._kube import KubeError, wait_or_stop
from llmd.operator._client import ApiError, KubeClient
from llmd.operator._kinds import LEASE

__all__ = ["LeaseConfig", "LeaseElector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    """Where the Lease is, who we are, and its timing (seconds; renew < duration)."""

    namespace: str
    identity: str
    name: str = "llmd-operator"
    duration_s: float = 15.0
    renew_s: float = 5.0
    retry_s: float = 2.0


async def _either(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> None:
    """Wait until `a` or `b` is set, at most `timeout_s`."""
    waiters = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _micro(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class LeaseElector:
    """See the module docstring; `clock` is wall time (the Lease is shared across hosts)."""

    def __init__(self, client: KubeClient, config: LeaseConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.config, self.clock = client, config, clock

    async def run(self, stop: asyncio.Event,
                  lead: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        cfg = self.config
        while not stop.is_set():
            if not await self._try_acquire():
                await wait_or_stop(stop, cfg.retry_s)
                continue
            log.info("lease %s/%s acquired by %s", cfg.namespace, cfg.name, cfg.identity)
            term = asyncio.Event()
            # Created before `lead` starts, so a kopf operator inside counts it as not its own.
            renewer = asyncio.create_task(self._renew_until(stop, term), name="lease-renew")
            try:
                await lead(term)
            finally:
                term.set()
                await renewer
            if stop.is_set():
                await self._release()
            else:
                log.warning("lease %s/%s lost by %s; standing by", cfg.namespace, cfg.name,
                            cfg.identity)

    async def _renew_until(self, stop: asyncio.Event, term: asyncio.Event) -> None:
        """Renew until `term` or `stop` is set; set `term` when the Lease is lost."""
        cfg = self.config
        last_ok = self.clock()
        while not term.is_set():
            await _either(stop, term, cfg.renew_s)
            if stop.is_set() or term.is_set():
                term.set()
                return
            try:
                held = await self._try_acquire(renew=True)
            except (aiohttp.ClientError, TimeoutError, KubeError) as err:
                log.warning("lease renewal failed: %s", err)
                held = self.clock() - last_ok < cfg.duration_s
            else:
                last_ok = self.clock() if held else last_ok
            if not held:
                term.set()

    async def _try_acquire(self, *, renew: bool = False) -> bool:
        cfg, now = self.config, self.clock()
        try:
            lease = await self.client.get(LEASE, cfg.namespace, cfg.name)
            if lease is None:
                if renew:
                    return False
                await self.client.create(LEASE, cfg.namespace, {
                    "apiVersion": LEASE.api_version, "kind": LEASE.kind,
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                    "spec": self._spec(now, now, 0)})
                return True
            spec: Mapping[str, Any] = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            ours = holder == cfg.identity
            if renew and not ours:
                return False
            renewed = _seconds(spec.get("renewTime")) or 0.0
            duration = float(spec.get("leaseDurationSeconds") or cfg.duration_s)
            if not ours and holder and renewed + duration > now:
                return False  # held by another candidate that is still renewing
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
            acquired = _seconds(spec.get("acquireTime")) if ours else now
            await self.client.patch(LEASE, cfg.namespace, cfg.name, {
                "metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                "spec": self._spec(acquired or now, now, transitions)})
            return True
        except ApiError as err:
            if err.status == 409:  # another candidate wrote first
                return False
            raise

    def _spec(self, acquired: float, renewed: float, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.config.identity,
                "leaseDurationSeconds": max(1, round(self.config.duration_s)),
                "acquireTime": _micro(acquired), "renewTime": _micro(renewed),
                "leaseTransitions": transitions}

    async def _release(self) -> None:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.renew_s):
                lease = await self.client.get(LEASE, cfg.namespace, cfg.name)
                if lease and (lease.get("spec") or {}).get("holderIdentity") == cfg.identity:
                    await self.client.patch(LEASE, cfg.namespace, cfg.name, {
                        "metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")},
                        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})
        except (aiohttp.ClientError, TimeoutError, KubeError) as err:
            log.warning("lease %s/%s not released: %s", cfg.namespace, cfg.name, err)
