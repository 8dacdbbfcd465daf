"""`Operator`: the kopf operator for LLMInferenceService, behind an optional Lease election.

kopf runs only while this replica leads (or always, without a Lease): a standby replica holds
no watches and writes nothing. Scope: the namespaces listed, or the whole cluster when none is.
kopf takes over its event loop's task accounting (when it stops it waits for, then cancels,
every task created after it started), so it should own its loop: the CLI gives it one, and
tests run each operator in a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from llmd._kube import KubeApi
from llmd.deploy import plan_service
from llmd.operator._client import KubeClient
from llmd.operator._handlers import build_registry, kopf_settings, post_warning
from llmd.operator.lease import LeaseConfig, LeaseElector
from llmd.operator.reconcile import PlanFn, PlanResult, Reconciler

__all__ = ["Operator", "OperatorConfig", "default_plan"]

log = logging.getLogger(__name__)


def default_plan(body: Mapping[str, Any]) -> PlanResult:
    """`llmd.deploy.plan_service`: the objects `llmd render` makes for the resource."""
    return plan_service(body)


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """What `llmd operator` runs with; `namespaces=()` is cluster scope."""

    api: KubeApi
    namespaces: tuple[str, ...] = ()
    resync_s: float = 60.0
    lease: LeaseConfig | None = None
    request_timeout_s: float = 10.0


class Operator:
    """Run with `await operator.run(stop)`; `leading` and `reconciler.passes` are for
    observers (tests, logs)."""

    def __init__(self, config: OperatorConfig, plan: PlanFn = default_plan) -> None:
        if config.resync_s <= 0:
            raise ValueError("resync_s must be > 0")
        self.config, self.plan = config, plan
        self.leading = False
        self.reconciler: Reconciler | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; the Lease (if any) is released on the way out."""
        cfg = self.config
        async with KubeClient(cfg.api, timeout_s=cfg.request_timeout_s) as client:
            self.reconciler = Reconciler(client, self.plan, post_warning)
            if cfg.lease is None:
                await self._lead(stop)
            else:
                await LeaseElector(client, cfg.lease).run(stop, self._lead)

    async def _lead(self, term: asyncio.Event) -> None:
        cfg = self.config
        assert self.reconciler is not None
        registry = build_registry(self.reconciler, cfg.api, cfg.resync_s)
        scope = ", ".join(cfg.namespaces) or "all namespaces"
        log.info("reconciling LLMInferenceServices in %s (resync every %gs)", scope,
                 cfg.resync_s)
        self.leading = True
        try:
            await kopf.operator(registry=registry, settings=kopf_settings(), standalone=True,
                                clusterwide=not cfg.namespaces, namespaces=list(cfg.namespaces),
                                stop_flag=term)
        finally:
            self.leading = False
