"""Desired objects: the plan's objects, owned by the service, and whether the live ones match.

Each object gets the service's namespace, the `OWNER_LABEL` naming the service (the watches and
the pruning select by it) and a controller owner reference to it (Kubernetes' garbage collector
deletes the objects with the service). `matches()` is what keeps a no-change resync from writing:
every field the operator declares must already hold its value in the live object; fields the
API server defaulted or another manager set are not compared.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["OWNER_LABEL", "matches", "owned_by", "owned_objects", "owner_reference"]

OWNER_LABEL: Final = "llm-d.ai/llminferenceservice"
"""Label on every object the operator writes; its value is the owning service's name."""


def owner_reference(parent: Mapping[str, Any]) -> dict[str, Any]:
    meta = parent["metadata"]
    return {"apiVersion": parent["apiVersion"], "kind": parent["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_objects(objects: list[dict[str, Any]], parent: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copies of `objects` in the parent's namespace, labelled and owned by it."""
    meta = parent["metadata"]
    ref = owner_reference(parent)
    owned = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        obj_meta = obj.setdefault("metadata", {})
        obj_meta["namespace"] = meta["namespace"]
        obj_meta["labels"] = {**(obj_meta.get("labels") or {}), OWNER_LABEL: meta["name"]}
        obj_meta["ownerReferences"] = [ref]
        owned.append(obj)
    return owned


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj`'s controller owner reference names the object with `uid`."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def matches(desired: Any, live: Any) -> bool:
    """Whether every field of `desired` holds the same value in `live`: maps are compared on
    the desired keys only, lists item by item (same length), scalars by equality (an int and
    the same number as a float match, as the API server may round-trip either)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and matches(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(
            matches(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    return bool(desired == live)
