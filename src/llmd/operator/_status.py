"""`status` of a service, computed from its owned objects as the API server last returned them.

Conditions (Kubernetes' shape: type, status, reason, message, lastTransitionTime,
observedGeneration):

- `WorkloadsReady`: every decode/prefill workload (Deployment or LeaderWorkerSet, told apart by
  the pod template's `llm-d.ai/role` label) has as many ready replicas as it asks for (for a
  LeaderWorkerSet: ready groups), and has observed its latest spec when it reports that.
- `RouterReady`: the EPP Deployment (`app.kubernetes.io/component: epp`, or a name ending in
  `-epp`) is ready and, when the service has an HTTPRoute, a gateway has accepted it
  (`status.parents[].conditions` Accepted=True).
- `Ready`: the spec is valid, every object was applied, and both of the above hold.

`url` is `http://<address>[:port]` of the HTTPRoute's first parent Gateway once that Gateway
reports `status.addresses`; until then it is absent (the EPP Service speaks ext_proc gRPC, not
HTTP, and the name of a Gateway's own Service depends on its implementation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmd.engines import ROLE_LABEL

__all__ = ["condition", "conditions_with", "gateway_ref", "service_status", "url_of"]

EPP_COMPONENT = "epp"


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None,
              previous: Sequence[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """One condition; `lastTransitionTime` is kept from `previous` when the status is the same."""
    status = "Unknown" if ok is None else "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason,
                            "message": message, "lastTransitionTime": since or now}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def conditions_with(previous: Sequence[Mapping[str, Any]],
                    new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`previous` with the conditions of `new` replaced (or added), in a stable order."""
    by_type = {str(c.get("type")): dict(c) for c in previous}
    by_type.update({c["type"]: c for c in new})
    order = ["Ready", "WorkloadsReady", "RouterReady"]
    return sorted(by_type.values(),
                  key=lambda c: (order.index(c["type"]) if c["type"] in order else 99,
                                 c["type"]))


def service_status(parent: Mapping[str, Any], live: Sequence[Mapping[str, Any]],
                   failures: Sequence[str], gateways: Mapping[tuple[str, str], Mapping[str, Any]],
                   now: str) -> dict[str, Any]:
    """The whole `status` from the live owned objects, the apply failures of this pass and the
    Gateways the HTTPRoutes name (keyed by namespace and name; missing ones are not ready)."""
    generation = (parent.get("metadata") or {}).get("generation")
    previous = (parent.get("status") or {}).get("conditions") or []
    workloads, waiting = _workloads(live)
    router_ok, router_reason, router_msg = _router(live)
    work = condition("WorkloadsReady", not waiting,
                     "AllReplicasReady" if not waiting else "ReplicasNotReady",
                     "; ".join(waiting) or _summary(workloads), generation, previous, now)
    router = condition("RouterReady", router_ok, router_reason, router_msg, generation,
                       previous, now)
    if failures:
        ready = condition("Ready", False, "ApplyFailed", "; ".join(failures), generation,
                          previous, now)
    elif waiting or not router_ok:
        reason = "WorkloadsNotReady" if waiting else "RouterNotReady"
        ready = condition("Ready", False, reason, work["message"] if waiting else router_msg,
                          generation, previous, now)
    else:
        ready = condition("Ready", True, "Ready", "every workload and the router are ready",
                          generation, previous, now)
    status: dict[str, Any] = {"conditions": conditions_with(previous, [ready, work, router]),
                              "workloads": workloads}
    if generation is not None:
        status["observedGeneration"] = generation
    url = url_of(live, gateways)
    status["url"] = url  # None removes a stale url in the merge patch
    return status


def _workloads(live: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    roles: dict[str, dict[str, Any]] = {}
    waiting = []
    for obj in live:
        role = _role(obj)
        if role is None:
            continue
        wanted, ready, current = _replicas(obj)
        entry = roles.setdefault(role, {"replicas": 0, "readyReplicas": 0, "objects": []})
        entry["replicas"] += wanted
        entry["readyReplicas"] += ready
        entry["objects"].append(f"{obj['kind']}/{obj['metadata']['name']}")
        if ready < wanted or not current:
            state = f"{ready}/{wanted} ready" if current else "rolling out"
            waiting.append(f"{role} {obj['kind']} {obj['metadata']['name']}: {state}")
    return roles, waiting


def _summary(workloads: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{role} {w['readyReplicas']}/{w['replicas']}"
                     for role, w in sorted(workloads.items())) or "no workloads"


def _role(obj: Mapping[str, Any]) -> str | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Deployment":
        templates = [spec.get("template") or {}]
    elif obj.get("kind") == "LeaderWorkerSet":
        lwt = spec.get("leaderWorkerTemplate") or {}
        templates = [lwt.get("leaderTemplate") or {}, lwt.get("workerTemplate") or {}]
    else:
        return None
    for template in templates:
        role = ((template.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL)
        if role:
            return str(role)
    return None


def _replicas(obj: Mapping[str, Any]) -> tuple[int, int, bool]:
    """(replicas asked for, ready, whether the controller has seen the latest spec)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    seen = status.get("observedGeneration")
    generation = (obj.get("metadata") or {}).get("generation")
    current = seen is None or generation is None or int(seen) >= int(generation)
    return wanted, ready, current


def _is_epp(obj: Mapping[str, Any]) -> bool:
    if obj.get("kind") != "Deployment":
        return False
    labels = ((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {})
              .get("labels") or {})
    return bool(labels.get("app.kubernetes.io/component") == EPP_COMPONENT
                or str(obj["metadata"]["name"]).endswith("-epp"))


def _router(live: Sequence[Mapping[str, Any]]) -> tuple[bool, str, str]:
    epps = [o for o in live if _is_epp(o)]
    routes = [o for o in live if o.get("kind") == "HTTPRoute"]
    if not epps and not routes:
        return True, "NoRouter", "the service has no EPP and no HTTPRoute"
    for epp in epps:
        wanted, ready, current = _replicas(epp)
        if ready < max(wanted, 1) or not current:
            return (False, "SchedulerNotReady",
                    f"EPP Deployment {epp['metadata']['name']}: {ready}/{wanted} ready")
    for route in routes:
        parents = (route.get("status") or {}).get("parents") or []
        accepted = any(c.get("type") == "Accepted" and c.get("status") == "True"
                       for p in parents for c in p.get("conditions") or [])
        if not accepted:
            return (False, "RouteNotAccepted",
                    f"HTTPRoute {route['metadata']['name']}: no gateway has accepted it yet")
    return True, "RouterReady", "the EPP is ready and the HTTPRoute is accepted"


def gateway_ref(route: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]] | None:
    """(namespace, name, parentRef) of the route's first Gateway parent, if any."""
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if ref.get("kind", "Gateway") == "Gateway" and \
                ref.get("group", "gateway.networking.k8s.io") == "gateway.networking.k8s.io":
            return str(ref.get("namespace") or route["metadata"]["namespace"]), \
                str(ref["name"]), ref
    return None


def url_of(live: Sequence[Mapping[str, Any]],
           gateways: Mapping[tuple[str, str], Mapping[str, Any]]) -> str | None:
    """See the module docstring."""
    for route in (o for o in live if o.get("kind") == "HTTPRoute"):
        found = gateway_ref(route)
        if found is None:
            continue
        gateway = gateways.get(found[:2])
        addresses = ((gateway or {}).get("status") or {}).get("addresses") or []
        if not addresses:
            continue
        host = str(addresses[0].get("value"))
        host = f"[{host}]" if ":" in host else host
        port = found[2].get("port") or _listener_port(gateway or {}, found[2].get("sectionName"))
        return f"http://{host}" + (f":{port}" if port and int(port) != 80 else "")
    return None


def _listener_port(gateway: Mapping[str, Any], section: str | None) -> int | None:
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        if (section and listener.get("name") == section) or \
                (not section and listener.get("protocol") == "HTTP"):
            return int(listener["port"])
    return None
