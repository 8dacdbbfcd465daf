"""One reconcile pass of an LLMInferenceService: plan, apply what differs, prune, report.

A pass reads the service fresh, so passes triggered by its create/update handlers, the resync
timer and events on its owned objects are interchangeable; `Reconciler.trigger()` serializes
them per service and coalesces a burst into one waiting pass. A service being deleted (or gone)
is left alone: its owned objects are the delete handler's.

An invalid spec (`ConfigError` from the plan function) writes `Ready=False, reason=InvalidSpec`
naming the fields and changes no owned object. An object the API refuses is reported in
`Ready=False, reason=ApplyFailed`; the others are still applied. Every failure also goes to
`warn` (the operator posts it as a Kubernetes Event on the service).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmd.errors import ConfigError
from llmd.operator._client import ApiError, KubeClient
from llmd.operator._desired import OWNER_LABEL, matches, owned_by, owned_objects
from llmd.operator._kinds import GATEWAY, OWNED, PARENT, Kind, kind_of
from llmd.operator._status import condition, conditions_with, gateway_ref, service_status

__all__ = ["Outcome", "PlanFn", "PlanResult", "Reconciler", "WarnFn", "utc_now"]

log = logging.getLogger(__name__)

STATUS_KEYS = ("observedGeneration", "conditions", "workloads", "url")


class PlanResult(Protocol):
    """What a plan function returns (`llmd.deploy.Rendered` fits)."""

    @property
    def objects(self) -> list[dict[str, Any]]: ...

    @property
    def warnings(self) -> list[str]: ...


PlanFn = Callable[[Mapping[str, Any]], PlanResult]
"""The whole LLMInferenceService resource → every object of its stack; raises ConfigError."""
WarnFn = Callable[[Mapping[str, Any], str, str], None]
"""(service body, reason, message) → post a Warning Event on the service."""


def utc_now() -> str:
    """RFC 3339 UTC, second precision, as condition timestamps are."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Outcome:
    """What one pass did (for logs and tests)."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    invalid: bool = False
    status_written: bool = False


class Reconciler:
    """Reconcile passes over one API client; see the module docstring."""

    def __init__(self, client: KubeClient, plan: PlanFn, warn: WarnFn, *,
                 clock: Callable[[], str] = utc_now, parent: Kind = PARENT) -> None:
        self.client, self.plan, self.warn, self.clock, self.parent = \
            client, plan, warn, clock, parent
        self.passes = 0
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: set[tuple[str, str]] = set()

    async def trigger(self, namespace: str, name: str) -> Outcome | None:
        """Run a pass for the service, after the one in progress; None when a pass that has
        not started yet is already waiting (it will read the service as it is then)."""
        key = (namespace, name)
        if key in self._pending:
            return None
        self._pending.add(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                self._pending.discard(key)
                return await self.reconcile(namespace, name)
        finally:
            self._pending.discard(key)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-service lock of a deleted service."""
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del self._locks[(namespace, name)]

    async def reconcile(self, namespace: str, name: str) -> Outcome:
        """One pass (see the module docstring); transport errors propagate."""
        self.passes += 1
        outcome = Outcome()
        body = await self.client.get(self.parent, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return outcome
        try:
            planned = self.plan(body)
        except ConfigError as err:
            outcome.invalid = True
            await self._invalid(body, err, outcome)
            return outcome
        desired = owned_objects(planned.objects, body)
        live = await self._apply(body, desired, outcome)
        if not outcome.failures:
            await self._prune(body, {_key(o) for o in desired}, outcome)
        gateways = await self._gateways(live)
        status = service_status(body, live, outcome.failures, gateways, self.clock())
        outcome.status_written = await self._write_status(body, status)
        if outcome.applied or outcome.deleted:
            log.info("%s/%s: applied %s; deleted %s", namespace, name,
                     ", ".join(outcome.applied) or "nothing", ", ".join(outcome.deleted) or
                     "nothing")
        return outcome

    async def delete_owned(self, body: Mapping[str, Any]) -> list[str]:
        """Delete every object the service owns (the delete handler; GC would too), after the
        pass in progress: a pass that read the service before its deletion would otherwise
        apply objects behind the cleanup. Passes after it see the deletion and do nothing."""
        meta = body["metadata"]
        async with self._locks.setdefault((meta["namespace"], meta["name"]), asyncio.Lock()):
            deleted = []
            for kind, obj in await self._owned_live(body):
                obj_meta = obj["metadata"]
                if await self.client.delete(kind, obj_meta["namespace"], obj_meta["name"]):
                    deleted.append(f"{kind.kind}/{obj_meta['name']}")
            return deleted

    async def _invalid(self, body: Mapping[str, Any], err: ConfigError,
                       outcome: Outcome) -> None:
        message = "\n".join(err.problems)
        self.warn(body, "InvalidSpec", message)
        generation = body["metadata"].get("generation")
        previous = (body.get("status") or {}).get("conditions") or []
        ready = condition("Ready", False, "InvalidSpec", message, generation, previous,
                          self.clock())
        status: dict[str, Any] = {"conditions": conditions_with(previous, [ready])}
        if generation is not None:
            status["observedGeneration"] = generation
        outcome.status_written = await self._write_status(body, status)

    async def _apply(self, body: Mapping[str, Any], desired: list[dict[str, Any]],
                     outcome: Outcome) -> list[dict[str, Any]]:
        """Apply each desired object unless the live one already matches; the live objects."""
        live = []
        for obj in desired:
            kind, label = kind_of(obj), f"{obj.get('kind')}/{obj['metadata'].get('name')}"
            if kind is None:
                outcome.failures.append(f"{label}: {obj.get('apiVersion')} {obj.get('kind')} "
                                        "is not a kind the operator manages")
                self.warn(body, "UnsupportedKind", outcome.failures[-1])
                continue
            try:
                current = await self.client.get(kind, obj["metadata"]["namespace"],
                                                obj["metadata"]["name"])
                if current is None or not matches(obj, current):
                    current = await self.client.apply(obj)
                    outcome.applied.append(label)
            except ApiError as err:
                outcome.failures.append(f"{label}: {err}")
                self.warn(body, "ApplyFailed", outcome.failures[-1])
                continue
            live.append(current)
        return live

    async def _owned_live(self, body: Mapping[str, Any]) -> list[tuple[Kind, dict[str, Any]]]:
        meta = body["metadata"]
        found = []
        for kind in OWNED:
            items = await self.client.list(kind, meta["namespace"], {OWNER_LABEL: meta["name"]})
            found += [(kind, o) for o in items or [] if owned_by(o, meta["uid"])]
        return found

    async def _prune(self, body: Mapping[str, Any], keep: set[tuple[str, str, str]],
                     outcome: Outcome) -> None:
        try:
            owned = await self._owned_live(body)
        except ApiError as err:
            outcome.failures.append(f"listing owned objects: {err}")
            self.warn(body, "PruneFailed", outcome.failures[-1])
            return
        for kind, obj in owned:
            if _key(obj) in keep:
                continue
            meta = obj["metadata"]
            try:
                if await self.client.delete(kind, meta["namespace"], meta["name"]):
                    outcome.deleted.append(f"{kind.kind}/{meta['name']}")
            except ApiError as err:
                outcome.failures.append(f"{kind.kind}/{meta['name']}: {err}")
                self.warn(body, "PruneFailed", outcome.failures[-1])

    async def _gateways(self, live: list[dict[str, Any]]
                        ) -> dict[tuple[str, str], dict[str, Any]]:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for route in (o for o in live if o.get("kind") == "HTTPRoute"):
            ref = gateway_ref(route)
            if ref is None or ref[:2] in found:
                continue
            try:
                gateway = await self.client.get(GATEWAY, ref[0], ref[1])
            except ApiError as err:  # no read access to that namespace: no url, not a failure
                log.debug("gateway %s/%s: %s", ref[0], ref[1], err)
                continue
            if gateway is not None:
                found[ref[:2]] = gateway
        return found

    async def _write_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> bool:
        old = body.get("status") or {}
        new = {k: v for k, v in status.items() if v is not None}
        stale = [k for k, v in status.items() if v is None and k in old]
        if all(new.get(k) == old.get(k) for k in STATUS_KEYS if k in new) and not stale:
            return False
        meta = body["metadata"]
        patch = dict(status)
        if isinstance(old.get("workloads"), dict) and "workloads" in patch:
            # a merge patch merges maps: a role no longer there is removed by name
            gone = {role: None for role in old["workloads"] if role not in patch["workloads"]}
            patch["workloads"] = {**gone, **patch["workloads"]}
        await self.client.patch(self.parent, meta["namespace"], meta["name"],
                                {"status": patch}, subresource="status")
        return True


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(obj["metadata"]["name"]))
