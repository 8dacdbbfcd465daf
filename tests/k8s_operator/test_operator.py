"""`llmd operator` end to end: the real kopf operator against kmock's emulator (`ApiServer`).

One emulator and one operator serve the whole module (each test has its own service name);
the Lease tests start their own. The plan function is the harness's STAND-IN (ModelService
values in `spec`) until `llmd.deploy.llmisvc.plan_service` lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
import yaml
from _operator_api import ApiServer
from _operator_harness import NS, eventually, operator_for, running

from llmd.operator import FIELD_MANAGER, OWNER_LABEL, LeaseConfig, Operator
from llmd.operator._kinds import EVENT, LEASE, OWNED, PARENT, Kind

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEPLOYMENTS = Kind("apps/v1", "Deployment", "deployments")
CONFIGMAPS = Kind("v1", "ConfigMap", "configmaps")
RESYNC_S = 1.0


def values() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / "values-sglang-pd.yaml").read_text())


def resource(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": PARENT.api_version, "kind": PARENT.kind,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[ApiServer]:
    async with ApiServer() as api, kmock.Server(api):
        api.declare()
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(server: ApiServer) -> AsyncIterator[Operator]:
    async with running(operator_for(str(server.url), resync_s=RESYNC_S)) as op:
        await eventually(lambda: op.leading, what="the operator to start")
        yield op


async def _send(server: ApiServer, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with getattr(server, method.lower())(path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


def _status(server: ApiServer, name: str) -> dict[str, Any]:
    return dict(server.stored(PARENT, NS).get(name, {}).get("status") or {})


def _condition(server: ApiServer, name: str, type_: str) -> dict[str, Any]:
    for cond in _status(server, name).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _owned(server: ApiServer, name: str) -> dict[str, dict[str, Any]]:
    found = {}
    for kind in OWNED:
        for obj_name, obj in server.stored(kind, NS).items():
            if (obj["metadata"].get("labels") or {}).get(OWNER_LABEL) == name:
                found[f"{kind.kind}/{obj_name}"] = obj
    return found


async def _create(server: ApiServer, name: str, spec: dict[str, Any]) -> None:
    await _send(server, "POST", PARENT.path(NS), resource(name, spec))


async def test_create_applies_every_object_owned_by_the_service(
        server: ApiServer, operator: Operator) -> None:
    await _create(server, "created", values())
    owned = await eventually(lambda: len(_owned(server, "created")) >= 14 and
                             _owned(server, "created"), what="the stack")
    uid = server.stored(PARENT, NS)["created"]["metadata"]["uid"]
    assert "Deployment/created-llm-d-modelservice-prefill" in owned
    for obj in owned.values():
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": PARENT.api_version, "kind": PARENT.kind, "name": "created",
            "uid": uid, "controller": True, "blockOwnerDeletion": True}]
    applies = [w for w in server.writes if "created-llm-d" in w[1] and w[0] == "PATCH"]
    assert applies, "objects are written with PATCH (server-side apply)"
    ready = await eventually(lambda: _condition(server, "created", "WorkloadsReady"))
    assert ready["status"] == "False" and ready["reason"] == "ReplicasNotReady"
    status = _status(server, "created")
    assert status["observedGeneration"] == 1
    assert status["workloads"]["decode"]["replicas"] == 1
    assert status["workloads"]["prefill"]["readyReplicas"] == 0
    assert _condition(server, "created", "Ready")["reason"] == "WorkloadsNotReady"


async def test_a_resync_without_changes_writes_nothing(server: ApiServer,
                                                       operator: Operator) -> None:
    await _create(server, "quiet", values())
    await eventually(lambda: _condition(server, "quiet", "Ready"), what="status")
    assert operator.reconciler is not None
    passes = operator.reconciler.passes
    await asyncio.sleep(0.5)  # let the burst of events from creation settle
    before = len(server.writes)
    await eventually(lambda: operator.reconciler.passes >= passes + 3,  # type: ignore[union-attr]
                     timeout_s=3 * RESYNC_S + 5, what="resync passes")
    assert server.writes[before:] == []


async def test_status_follows_the_workloads(server: ApiServer, operator: Operator) -> None:
    await _create(server, "ready", values())
    deployments = await eventually(lambda: {
        n: d for n, d in server.stored(DEPLOYMENTS, NS).items() if n.startswith("ready-")
        and len(_owned(server, "ready")) >= 14})
    for name, dep in deployments.items():
        replicas = dep["spec"].get("replicas", 1)
        await _send(server, "PATCH", DEPLOYMENTS.path(NS, name) + "/status",
                    {"status": {"readyReplicas": replicas}})
    await eventually(lambda: _condition(server, "ready", "WorkloadsReady").get("status")
                     == "True", what="WorkloadsReady=True")
    router = _condition(server, "ready", "RouterReady")
    assert router["status"] == "False" and router["reason"] == "RouteNotAccepted"
    route = next(n for n in _owned(server, "ready") if n.startswith("HTTPRoute/"))
    await _send(server, "PATCH", Kind("gateway.networking.k8s.io/v1", "HTTPRoute",
                                      "httproutes").path(NS, route.split("/")[1]) + "/status",
                {"status": {"parents": [{"parentRef": {"name": "llm-d-gateway"},
                                         "controllerName": "x",
                                         "conditions": [{"type": "Accepted",
                                                         "status": "True"}]}]}})
    await _send(server, "POST", Kind("gateway.networking.k8s.io/v1", "Gateway",
                                     "gateways").path(NS),
                {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                 "metadata": {"name": "llm-d-gateway", "namespace": NS},
                 "spec": {"listeners": [{"name": "http", "protocol": "HTTP", "port": 8080}]},
                 "status": {"addresses": [{"type": "IPAddress", "value": "10.1.2.3"}]}})
    await eventually(lambda: _condition(server, "ready", "Ready").get("status") == "True",
                     timeout_s=3 * RESYNC_S + 5, what="Ready=True")
    assert _status(server, "ready")["url"] == "http://10.1.2.3:8080"
    assert _status(server, "ready")["workloads"]["prefill"]["readyReplicas"] == 4


async def test_a_spec_change_is_applied_and_a_removed_role_deleted(
        server: ApiServer, operator: Operator) -> None:
    await _create(server, "changed", values())
    prefill = "changed-llm-d-modelservice-prefill"
    await eventually(lambda: prefill in server.stored(DEPLOYMENTS, NS))
    spec = values()
    spec["decode"]["replicas"] = 3
    # (the stand-in plan's values: the chart's defaults have a prefill role unless disabled)
    await _send(server, "PATCH", PARENT.path(NS, "changed"),
                {"spec": {"prefill": {"create": False}, "decode": spec["decode"]}})
    decode = "changed-llm-d-modelservice-decode"
    await eventually(lambda: server.stored(DEPLOYMENTS, NS)[decode]["spec"]["replicas"] == 3,
                     what="decode scaled to 3")
    await eventually(lambda: prefill not in server.stored(DEPLOYMENTS, NS),
                     what="the prefill Deployment deleted")
    await eventually(lambda: _status(server, "changed").get("observedGeneration") == 2)
    assert "prefill" not in _status(server, "changed")["workloads"]


async def test_hand_edits_and_deletions_are_repaired(server: ApiServer,
                                                    operator: Operator) -> None:
    await _create(server, "drift", values())
    decode, epp = "drift-llm-d-modelservice-decode", "drift-llm-d-modelservice-epp"
    await eventually(lambda: epp in server.stored(CONFIGMAPS, NS)
                     and decode in server.stored(DEPLOYMENTS, NS))
    await _send(server, "PATCH", DEPLOYMENTS.path(NS, decode), {"spec": {"replicas": 7}})
    await eventually(lambda: server.stored(DEPLOYMENTS, NS)[decode]["spec"]["replicas"] == 1,
                     what="replicas restored")
    await _send(server, "DELETE", CONFIGMAPS.path(NS, epp))
    await eventually(lambda: epp in server.stored(CONFIGMAPS, NS), what="ConfigMap recreated")
    repaired = [w for w in server.writes if w == ("PATCH", CONFIGMAPS.path(NS, epp))]
    assert repaired, f"the ConfigMap comes back by server-side apply as {FIELD_MANAGER}"


async def test_an_invalid_spec_is_a_condition_and_an_event(server: ApiServer,
                                                          operator: Operator) -> None:
    spec = values()
    spec["prefill"]["replicas"] = "many"
    await _create(server, "invalid", spec)
    ready = await eventually(lambda: _condition(server, "invalid", "Ready"))
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "prefill.replicas" in ready["message"]
    assert _owned(server, "invalid") == {}
    events = await eventually(lambda: [
        e for e in server.stored(EVENT, NS).values()
        if e.get("reason") == "InvalidSpec" and e["involvedObject"]["name"] == "invalid"])
    assert events[0]["type"] == "Warning" and "prefill.replicas" in events[0]["message"]


async def test_deleting_the_service_leaves_nothing(server: ApiServer,
                                                   operator: Operator) -> None:
    await _create(server, "deleted", values())
    await eventually(lambda: len(_owned(server, "deleted")) >= 14)
    await _send(server, "DELETE", PARENT.path(NS, "deleted"))
    await eventually(lambda: "deleted" not in server.stored(PARENT, NS), what="service gone")
    await asyncio.sleep(2 * RESYNC_S)  # no pass brings anything back
    assert _owned(server, "deleted") == {}


async def test_only_the_lease_holder_reconciles() -> None:
    lease: dict[str, Any] = dict(namespace=NS, duration_s=2.0, renew_s=0.3, retry_s=0.2)
    async with ApiServer() as api, kmock.Server(api):
        api.declare()
        first = operator_for(str(api.url), lease=LeaseConfig(identity="a", **lease))
        second = operator_for(str(api.url), lease=LeaseConfig(identity="b", **lease))
        async with AsyncExitStack() as first_run:
            await first_run.enter_async_context(running(first))
            await eventually(lambda: first.leading, what="a leads")
            async with running(second):
                await _create(api, "elected", values())
                await eventually(lambda: len(_owned(api, "elected")) >= 14)
                await asyncio.sleep(0.5)
                assert not second.leading and second.reconciler is not None
                assert second.reconciler.passes == 0
                assert api.stored(LEASE, NS)["llmd-operator"]["spec"]["holderIdentity"] == "a"
                await first_run.aclose()  # a stops and releases the Lease: b takes over
                spec = values()
                spec["decode"]["replicas"] = 2
                await _send(api, "PATCH", PARENT.path(NS, "elected"),
                            {"spec": {"decode": spec["decode"]}})
                await eventually(lambda: second.leading, what="b leads")
                await eventually(lambda: api.stored(DEPLOYMENTS, NS)[
                    "elected-llm-d-modelservice-decode"]["spec"]["replicas"] == 2)
                assert api.stored(LEASE, NS)["llmd-operator"]["spec"]["holderIdentity"] == "b"
