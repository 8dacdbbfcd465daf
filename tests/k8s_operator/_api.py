"""An API server for the operator tests: kmock's KubernetesEmulator plus what the operator needs.

kmock's emulator stores objects and serves list, watch, get, create, merge-patch and delete
over HTTP, with no generation, no uid, no resourceVersion, no server-side apply, no garbage
collector and no label selectors. kmock also records every request and, to pick a reaction for
a new one, scans that whole record (`request in payload._source`): each request costs time in
proportion to all the requests served before it, and a module of operator tests (a pass is ~30
requests) slowed to timeouts. `ApiServer` keeps only the requests in flight in that record.

For writes only (serialized by one lock) it adds:

- `metadata.uid`, `creationTimestamp`, a growing `resourceVersion` on every write, `generation`
  1 at creation and +1 when a write changes `spec` (what `observedGeneration` is compared to);
- a merge patch carrying `metadata.resourceVersion` is a precondition: 409 when it differs
  (the Lease election relies on it);
- a server-side apply (`application/apply-patch+yaml`) of a missing object creates it; of an
  existing one it replaces the object with the applied one, keeping the server's metadata
  (uid, creationTimestamp, generation) and `status`: what real server-side apply does when one
  field manager declares the whole object (fields it stops declaring go; another manager's
  fields would stay in a real cluster, which no test relies on);
- `generateName` (kopf's Events) gets a unique name;
- `writes`: every write request as (method, path), to assert that a resync wrote nothing.

Label selectors stay unapplied: the operator checks labels itself. There is no garbage
collector: the operator's delete handler removes the owned objects itself.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import dicts, enums, rendering  # the emulator's own helpers

from llmd.operator._kinds import EVENT, GATEWAY, LEASE, OWNED, PARENT, Kind

APPLY = "application/apply-patch+yaml"
WRITES = (enums.action.CREATE, enums.action.UPDATE, enums.action.DELETE)
SERVER_META = ("uid", "creationTimestamp", "generation", "resourceVersion")


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    writes: list[tuple[str, str]] = attrs.field(factory=list, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def declare(self) -> None:
        """Serve discovery for every kind the operator uses (kopf finds kinds by discovery)."""
        verbs = {"get", "list", "watch", "create", "patch", "delete"}
        for kind in (PARENT, *OWNED, GATEWAY, LEASE, EVENT):
            self.resources[f"{kind.api_version}/{kind.plural}"] = kmock.ResourceInfo(
                kind=kind.kind, namespaced=True, verbs=verbs,
                subresources={"status"} if kind in (PARENT, *OWNED) else set())
        # kopf waits for these two kinds to be discoverable even with scanning disabled
        self.resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace", namespaced=False, verbs={"get", "list", "watch"})
        self.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = \
            kmock.ResourceInfo(kind="CustomResourceDefinition", namespaced=False,
                               verbs={"get", "list", "watch"})

    def stored(self, kind: Kind, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """Live objects of `kind` (in `namespace`) by name."""
        found = {}
        for (res, ns, name), obj in self.objects.items():
            if (res.group, res.version, res.plural) == (kind.group, kind.version, kind.plural) \
                    and (namespace is None or ns == namespace) and not obj.deleted:
                found[str(name)] = obj.raw
        return found

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        try:
            return await self._handle_write(request)
        finally:
            # the reaction was picked (a watch streams on): forget the request (module docstring)
            for index, seen in enumerate(self._requests):
                if seen is request:
                    del self._requests[index]
                    break

    async def _handle_write(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in WRITES:
            return await super()._handle(request)
        async with self._write_lock:
            self.writes.append((request.method, request.url.path))
            data = request.data if isinstance(request.data, dict) else None
            if data is None:
                return await super()._handle(request)
            meta = data.setdefault("metadata", {})
            version = str(next(self._versions))
            key = (request.resource, request.namespace or meta.get("namespace"),
                   request.name or meta.get("name") or "")
            exists = key in self.objects and not self.objects[key].deleted
            if request.action == enums.action.CREATE or (
                    request.action == enums.action.UPDATE and not exists
                    and request.headers.get("Content-Type") == APPLY):
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
                    key = (key[0], key[1], meta["name"])
                meta.update(uid=meta.get("uid") or str(uuid.uuid4()), resourceVersion=version,
                            generation=1, creationTimestamp=_now())
                if request.action == enums.action.UPDATE:  # apply creates
                    return await self._create(request, key, data)
            elif request.action == enums.action.UPDATE and exists:
                old = self.objects[key].raw
                wanted = meta.get("resourceVersion")
                if wanted is not None and wanted != old["metadata"].get("resourceVersion"):
                    return await self._render_error(kmock.KubernetesError(
                        status=409, reason="Conflict", message="the object has been modified"))
                applied = request.headers.get("Content-Type") == APPLY
                after = dict(data) if applied else dicts.patch_dict(copy.deepcopy(old), data)
                meta["resourceVersion"] = version
                generation = int(old["metadata"].get("generation", 1))
                if request.subresource != "status" and after.get("spec") != old.get("spec"):
                    generation += 1
                meta["generation"] = generation
                if applied:
                    return await self._replace(request, key, data, old)
            return await super()._handle(request)

    async def _create(self, request: rendering.Request, key: Any,
                      data: dict[str, Any]) -> aiohttp.web.StreamResponse:
        async with self._lock:
            if key in self.objects:
                self.objects[key].create(data)
            else:
                self.objects[key] = data
            raw = self.objects[key].raw
            await self._buses[request.resource].put({"type": "ADDED", "object": raw})
        return aiohttp.web.json_response(raw)


    async def _replace(self, request: rendering.Request, key: Any, data: dict[str, Any],
                       old: dict[str, Any]) -> aiohttp.web.StreamResponse:
        """An apply to an existing object: the applied object, with the server's metadata and
        the old `status` kept."""
        new = copy.deepcopy(data)
        new["metadata"] = {**{k: v for k, v in old["metadata"].items() if k in SERVER_META},
                           **new["metadata"]}
        if "status" in old:
            new["status"] = old["status"]
        async with self._lock:
            self.objects[key].create(new)  # a new version of the whole object
            raw = self.objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
