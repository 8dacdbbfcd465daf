"""A small JSON client for the few API calls the operator makes (aiohttp, one session).

Writes of owned objects are server-side applies under one field manager, so a field a user
(or an HPA) set and the operator does not declare stays theirs, and a conflict on a field the
operator declares is resolved in its favour (`force=true`): drift repair.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from llmd._kube import KubeApi, KubeError
from llmd.operator._kinds import Kind, kind_of, object_path

__all__ = ["FIELD_MANAGER", "ApiError", "KubeClient"]

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "llmd-operator"
APPLY_TYPE: Final = "application/apply-patch+yaml"  # JSON is YAML: the body is JSON
MERGE_TYPE: Final = "application/merge-patch+json"


class ApiError(KubeError):
    """The API server answered an error; `status` is its HTTP status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method, self.path, self.status = method, path, status
        super().__init__(f"{method} {path}: {status} {message}".rstrip())


class KubeClient:
    """Typed calls on one aiohttp session; every call is bounded by `timeout_s`."""

    def __init__(self, api: KubeApi, *, timeout_s: float = 10.0) -> None:
        self.api = api
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        self._http = self.api.session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        return await self._call("GET", kind.path(namespace, name), missing_ok=True)

    async def list(self, kind: Kind, namespace: str,
                   labels: Mapping[str, str]) -> list[dict[str, Any]] | None:
        """Objects in `namespace` carrying every label in `labels` (checked here too, not
        only by the server's selector); None when the server does not serve the kind."""
        path = kind.path(namespace)
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        body = await self._call("GET", path, params={"labelSelector": selector},
                                missing_ok=True)
        if body is None:
            return None
        return [item for item in body.get("items") or []
                if all(((item.get("metadata") or {}).get("labels") or {}).get(k) == v
                       for k, v in labels.items())]

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` (an owned kind) as `FIELD_MANAGER`, forcing conflicts."""
        kind = kind_of(obj)
        if kind is None:
            raise KubeError(f"{obj.get('apiVersion')} {obj.get('kind')} is not a kind the "
                            "operator manages")
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        body = await self._call("PATCH", object_path(kind, obj), params=params,
                                data=json.dumps(obj), content_type=APPLY_TYPE)
        assert body is not None
        return body

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any], *,
                    subresource: str | None = None) -> dict[str, Any]:
        """A JSON merge patch (of `subresource`, e.g. `status`, when given)."""
        path = kind.path(namespace, name) + (f"/{subresource}" if subresource else "")
        body = await self._call("PATCH", path, data=json.dumps(patch), content_type=MERGE_TYPE)
        assert body is not None
        return body

    async def create(self, kind: Kind, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        body = await self._call("POST", kind.path(namespace), data=json.dumps(obj),
                                content_type="application/json")
        assert body is not None
        return body

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete in the background (Kubernetes' GC takes the dependents); False if gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        found = await self._call("DELETE", kind.path(namespace, name), data=json.dumps(body),
                                 content_type="application/json", missing_ok=True)
        return found is not None

    async def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                    data: str | None = None, content_type: str | None = None,
                    missing_ok: bool = False) -> dict[str, Any] | None:
        if self._http is None:
            raise RuntimeError("KubeClient used outside `async with`")
        headers = {"Content-Type": content_type} if content_type else None
        async with self._http.request(method, path, params=params, data=data, headers=headers,
                                      timeout=self.timeout) as resp:
            if resp.status == 404 and missing_ok:
                return None
            if resp.status >= 400:
                raise ApiError(method, path, resp.status, _message(await resp.text()))
            body: dict[str, Any] = await resp.json(content_type=None)
            return body


def _message(text: str) -> str:
    """The `message` of a Kubernetes Status body, else the text (shortened)."""
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    return str(status.get("message", text[:200])) if isinstance(status, dict) else text[:200]
