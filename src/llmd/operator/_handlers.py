"""The kopf handlers of one operator, registered on a registry of its own (no global state).

- create / update / resume of a service, and a timer every `resync_s`: a reconcile pass (a
  timer's pass still running when kopf stops the timer, because the service is being deleted
  or the operator stops, is cancelled: kopf holds the deletion until its timers exit, and a
  pass is safe to cut short, the next one redoes it);
- an event on any owned object (selected by `OWNER_LABEL`; a hand edit, a deletion, a status
  change of a workload): a pass of the service the label names;
- delete: the owned objects are deleted before kopf removes its finalizer, so nothing is
  orphaned even where no garbage collector follows the owner references.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, cast

import aiohttp
import kopf

from llmd._kube import KubeApi, KubeError
from llmd.operator._desired import OWNER_LABEL
from llmd.operator._kinds import OWNED, PARENT
from llmd.operator.reconcile import Reconciler

__all__ = ["build_registry", "kopf_settings", "post_warning"]

log = logging.getLogger(__name__)

RETRY_S = 5.0
FINALIZER = "llm-d.ai/operator-cleanup"
ANNOTATIONS = "operator.llm-d.ai"


def post_warning(body: Mapping[str, Any], reason: str, message: str) -> None:
    """A Warning Event on `body` (through kopf's poster; only inside the operator)."""
    log.warning("%s/%s: %s: %s", body["metadata"].get("namespace"), body["metadata"]["name"],
                reason, message)
    kopf.warn(kopf.Body(cast(kopf.RawBody, dict(body))), reason=reason, message=message[:1024])


def kopf_settings() -> kopf.OperatorSettings:
    """kopf's settings for llmd: no cluster scans (no RBAC on namespaces or CRDs: the kinds
    are found once at start), its own finalizer, progress kept in annotations (not status),
    and Events only for warnings."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    # a timer that does not exit at once (the resync cancels its pass, module docstring) is
    # re-checked after `cancellation_polling`, 60 s by default: the deletion waits for it
    settings.background.instant_exit_timeout = 0.1
    settings.background.cancellation_polling = 2.0
    return settings


async def _unless_stopped(work: Coroutine[Any, Any, None], stopped: kopf.DaemonStopped) -> None:
    """Run `work`; cancel it when `stopped` is set first. Its error, if any, is raised."""
    task = asyncio.ensure_future(work)

    async def halt() -> None:
        await stopped

    halting = asyncio.ensure_future(halt())
    try:
        await asyncio.wait({task, halting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (task, halting):
            future.cancel()
        await asyncio.gather(task, halting, return_exceptions=True)
    if not task.cancelled():
        task.result()


def build_registry(reconciler: Reconciler, api: KubeApi, resync_s: float) -> kopf.OperatorRegistry:
    """The handlers (see the module docstring) over `reconciler`, logging in with `api`."""
    registry = kopf.OperatorRegistry()
    group, version, plural = PARENT.group, PARENT.version, PARENT.plural

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=api.base_url, token=api.token, ca_path=api.ca_file,
                                   scheme="Bearer" if api.token else None)

    async def reconcile(namespace: str | None, name: str) -> None:
        assert namespace, "LLMInferenceService is namespaced"
        try:
            await reconciler.trigger(namespace, name)
        except (aiohttp.ClientError, TimeoutError, KubeError) as err:
            raise kopf.TemporaryError(f"reconcile failed: {err}", delay=RETRY_S) from err

    @kopf.on.resume(group, version, plural, registry=registry)
    @kopf.on.create(group, version, plural, registry=registry)
    @kopf.on.update(group, version, plural, registry=registry)
    async def changed(namespace: str | None, name: str, **_: Any) -> None:
        await reconcile(namespace, name)

    @kopf.timer(group, version, plural, interval=resync_s, initial_delay=resync_s,
                registry=registry)
    async def resync(namespace: str | None, name: str, **kwargs: Any) -> None:
        stopped: kopf.DaemonStopped = kwargs["stopped"]  # kopf gives timers their stop flag
        await _unless_stopped(reconcile(namespace, name), stopped)

    @kopf.on.delete(group, version, plural, registry=registry)
    async def deleted(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        try:
            gone = await reconciler.delete_owned(body)
        except (aiohttp.ClientError, TimeoutError, KubeError) as err:
            post_warning(body, "CleanupFailed", str(err))
            raise kopf.TemporaryError(f"cleanup failed: {err}", delay=RETRY_S) from err
        reconciler.forget(namespace or "", name)
        log.info("%s/%s deleted with %s", namespace, name, ", ".join(gone) or "nothing")

    async def owned_event(namespace: str | None, labels: Mapping[str, str], **_: Any) -> None:
        owner = labels.get(OWNER_LABEL)
        if not namespace or not owner:
            return
        try:
            await reconciler.trigger(namespace, owner)
        except (aiohttp.ClientError, TimeoutError, KubeError) as err:
            log.warning("%s/%s: reconcile after an owned object's event failed: %s "
                        "(the resync repeats it)", namespace, owner, err)

    for kind in OWNED:
        kopf.on.event(kind.group, kind.version, kind.plural, registry=registry,
                      id=f"owned-{kind.plural}", labels={OWNER_LABEL: kopf.PRESENT})(owned_event)
    return registry
