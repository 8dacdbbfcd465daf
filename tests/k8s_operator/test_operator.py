"""`llmd operator` end to end: the real kopf operator against kmock's emulator (`ApiServer`).

The services are the repository's examples (`examples/llmisvc-*.yaml`) in the test namespace,
planned by the operator's default plan, `llmd.deploy.plan_service` (what `llmd render` uses).
One emulator and one operator serve the whole module; every test deletes its services. The
whole life of a service (create, status, a pass with no change, update, drift, delete) runs for
each of the six shapes, vLLM and SGLang, aggregated, P/D and multinode; the rest on one or two.
The Lease election and an outage of the API server get an emulator and operators of their own.
The emulator does not apply the CRD's schema or CEL rules, so an object the planner refuses
reaches the operator as it would when only the planner can see the problem.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import kmock
import pytest
import pytest_asyncio
import yaml
from deploy._k8s import validate_object

from llmd.deploy import plan_service
from llmd.engines import ROLE_LABEL
from llmd.operator import FIELD_MANAGER, OWNER_LABEL, LeaseConfig
from llmd.operator._kinds import EVENT, GATEWAY, LEASE, OWNED, PARENT, Kind, kind_of

from ._api import SERVER_META, ApiServer
from ._harness import NS, Running, eventually, operator_for, running

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHAPES = ("vllm", "sglang", "vllm-pd", "sglang-pd", "vllm-multinode", "sglang-multinode")
DEPLOYMENTS = Kind("apps/v1", "Deployment", "deployments")
HTTPROUTES = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
RESYNC_S = 1.0
# engine -> (example, a change the planner refuses, the field its problem names, the fix as a
# merge patch of the spec)
INVALID = {
    "vllm": ("vllm-multinode", {"parallelism": {"tensor": 8}}, "spec.parallelism",
             {"parallelism": {"tensor": 1, "data": 8, "dataLocal": 4}}),
    "sglang": ("sglang-pd", {"prefill": {"replicas": 4, "inferenceServer": {"type": "vllm"}}},
               "spec.prefill.inferenceServer.type", {"prefill": {"inferenceServer": None}}),
}


def example(shape: str, name: str) -> dict[str, Any]:
    """`examples/llmisvc-<shape>.yaml` as `name` in the test namespace."""
    body = dict(yaml.safe_load((EXAMPLES / f"llmisvc-{shape}.yaml").read_text()))
    body["metadata"] = {"name": name, "namespace": NS}
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[ApiServer]:
    async with ApiServer() as api, kmock.Server(api):
        api.declare()
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def operator(server: ApiServer) -> AsyncIterator[Running]:
    async with running(operator_for(str(server.url), resync_s=RESYNC_S)) as op:
        await eventually(lambda: op.operator.leading, what="the operator to start")
        yield op


async def _send(server: ApiServer, method: str, path: str, body: Any = None) -> dict[str, Any]:
    async with getattr(server, method.lower())(path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


def _service(server: ApiServer, name: str) -> dict[str, Any] | None:
    return server.stored(PARENT, NS).get(name)


def _status(server: ApiServer, name: str) -> dict[str, Any]:
    return dict((_service(server, name) or {}).get("status") or {})


def _condition(server: ApiServer, name: str, type_: str) -> dict[str, Any]:
    for cond in _status(server, name).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _owned(server: ApiServer, name: str) -> dict[str, dict[str, Any]]:
    """`Kind/name` -> the stored object, for every object labelled as `name`'s."""
    found = {}
    for kind in OWNED:
        for obj_name, obj in server.stored(kind, NS).items():
            if (obj["metadata"].get("labels") or {}).get(OWNER_LABEL) == name:
                found[f"{kind.kind}/{obj_name}"] = obj
    return found


def _written(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the operator wrote it: without what the server (or a test) added."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for key in SERVER_META:
        obj["metadata"].pop(key, None)
    return obj


def _expected(server: ApiServer, name: str) -> dict[str, dict[str, Any]]:
    """`plan_service` of the stored service (the objects `llmd render` makes for it), each with
    the owner reference and label the operator adds."""
    body = _service(server, name)
    assert body is not None, f"{name} is not stored"
    ref = {"apiVersion": PARENT.api_version, "kind": PARENT.kind, "name": name,
           "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    expected = {}
    for obj in plan_service(body).objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        meta["labels"] = {**(meta.get("labels") or {}), OWNER_LABEL: name}
        meta["ownerReferences"] = [ref]
        expected[f"{obj['kind']}/{meta['name']}"] = obj
    return expected


def _as_planned(server: ApiServer, name: str) -> dict[str, dict[str, Any]] | None:
    """The stored objects when they are exactly the plan's (see `_expected`), else None."""
    owned, expected = _owned(server, name), _expected(server, name)
    if owned.keys() != expected.keys():
        return None
    if any(_written(owned[key]) != obj for key, obj in expected.items()):
        return None
    return owned


def _differences(server: ApiServer, name: str) -> str:
    owned, expected = _owned(server, name), _expected(server, name)
    lines = [f"missing: {sorted(expected.keys() - owned.keys())}",
             f"extra: {sorted(owned.keys() - expected.keys())}"]
    lines += [f"differs: {key}" for key in expected.keys() & owned.keys()
              if _written(owned[key]) != expected[key]]
    return "; ".join(lines)


async def _planned(server: ApiServer, name: str, what: str) -> dict[str, dict[str, Any]]:
    try:
        found: dict[str, dict[str, Any]] = await eventually(
            lambda: _as_planned(server, name), what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}: {_differences(server, name)}") from None
    return found


def _workloads(owned: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The role workloads (Deployment or LeaderWorkerSet with a role label) by role."""
    found = {}
    for obj in owned.values():
        spec = obj.get("spec") or {}
        if obj["kind"] == "Deployment":
            template = spec["template"]
        elif obj["kind"] == "LeaderWorkerSet":
            template = spec["leaderWorkerTemplate"]["workerTemplate"]
        else:
            continue
        role = (template["metadata"].get("labels") or {}).get(ROLE_LABEL)
        if role:
            found[str(role)] = obj
    return found


async def _set_ready(server: ApiServer, owned: dict[str, dict[str, Any]]) -> None:
    """What the workload controllers would report: every Deployment and LWS ready."""
    for obj in owned.values():
        kind = kind_of(obj)
        if obj["kind"] in ("Deployment", "LeaderWorkerSet") and kind is not None:
            await _send(server, "PATCH", kind.path(NS, obj["metadata"]["name"]) + "/status",
                        {"status": {"readyReplicas": obj["spec"].get("replicas", 1)}})


async def _delete(server: ApiServer, name: str) -> None:
    """Delete the service; return once it and every object it owned are gone."""
    await _send(server, "DELETE", PARENT.path(NS, name))
    await eventually(lambda: _service(server, name) is None and not _owned(server, name),
                     what=f"{name} and its objects gone")


@asynccontextmanager
async def _created(server: ApiServer, body: dict[str, Any]) -> AsyncIterator[str]:
    """The service exists for the block (once the operator has seen it: its finalizer is on);
    deleted with its objects afterwards."""
    name = body["metadata"]["name"]
    await _send(server, "POST", PARENT.path(NS), body)
    try:
        await eventually(lambda: _status(server, name).get("conditions"),
                         what=f"{name}'s status")
        yield name
    finally:
        if _service(server, name) is not None:
            await _delete(server, name)


@pytest.mark.parametrize("shape", SHAPES)
async def test_the_life_of_a_service(server: ApiServer, operator: Running, shared_dir: Path,
                                     shape: str) -> None:
    name = f"life-{shape}"
    body = example(shape, name)
    pd, multinode = "prefill" in body["spec"], "worker" in body["spec"]
    await _send(server, "POST", PARENT.path(NS), body)

    # create: exactly the planned objects, each valid as render's are, owned by the service
    owned = await _planned(server, name, "the planned objects")
    for obj in owned.values():
        validate_object(_written(obj), shared_dir)
    roles = _workloads(owned)
    assert set(roles) == ({"decode", "prefill"} if pd else {"decode"})
    assert roles["decode"]["kind"] == ("LeaderWorkerSet" if multinode else "Deployment")
    applies = [w for w in server.writes if w[0] == "PATCH" and f"/{name}-" in w[1]]
    assert applies, "objects are written with PATCH (server-side apply)"

    # status from the workloads
    work = await eventually(lambda: _condition(server, name, "WorkloadsReady"))
    assert work["status"] == "False" and work["reason"] == "ReplicasNotReady"
    status = _status(server, name)
    assert status["observedGeneration"] == 1
    assert set(status["workloads"]) == set(roles)
    assert status["workloads"]["decode"]["readyReplicas"] == 0
    assert _condition(server, name, "Ready")["reason"] == "WorkloadsNotReady"
    await _set_ready(server, owned)
    await eventually(lambda: _condition(server, name, "WorkloadsReady").get("status") == "True",
                     what="WorkloadsReady=True")

    # a pass with nothing changed writes nothing
    await asyncio.sleep(0.3)  # the passes the status events triggered finish
    before = len(server.writes)
    assert operator.operator.reconciler is not None
    reconciler = operator.operator.reconciler
    # (None: a pass was already waiting, e.g. the timer's, and took this trigger along)
    while (outcome := await operator.call(reconciler.trigger(NS, name))) is None:
        pass
    assert outcome.applied == outcome.deleted == []
    assert not outcome.status_written and server.writes[before:] == []

    # update: more replicas; a P/D service loses its prefill pool
    replicas = body["spec"].get("replicas", 1) + 1
    change: dict[str, Any] = {"replicas": replicas}
    if pd:
        change["prefill"] = None
    await _send(server, "PATCH", PARENT.path(NS, name), {"spec": change})
    await eventually(lambda: _status(server, name).get("observedGeneration") == 2,
                     what="generation 2 observed")
    owned = await _planned(server, name, "the objects of the new spec")
    roles = _workloads(owned)
    assert set(roles) == {"decode"} and roles["decode"]["spec"]["replicas"] == replicas
    assert not [k for k in owned if "prefill" in k], "the prefill objects are pruned"
    assert set(_status(server, name)["workloads"]) == {"decode"}

    # drift: a hand edit is undone, a deleted object comes back
    decode = roles["decode"]
    decode_kind = kind_of(decode)
    assert decode_kind is not None
    await _send(server, "PATCH", decode_kind.path(NS, decode["metadata"]["name"]),
                {"spec": {"replicas": 7}})
    pool = next(o for o in owned.values() if o["kind"] == "InferencePool")
    pool_kind = kind_of(pool)
    assert pool_kind is not None
    await _send(server, "DELETE", pool_kind.path(NS, pool["metadata"]["name"]))
    await _planned(server, name, "drift repaired")
    repaired = ("PATCH", pool_kind.path(NS, pool["metadata"]["name"]))
    assert repaired in server.writes, f"recreated by server-side apply as {FIELD_MANAGER}"

    # delete: the service goes with everything it owned, and nothing comes back
    await _delete(server, name)
    await asyncio.sleep(0.3)
    assert _owned(server, name) == {}


@pytest.mark.parametrize("engine", sorted(INVALID))
async def test_an_invalid_spec_is_a_condition_naming_the_field_and_an_event(
        server: ApiServer, operator: Running, engine: str) -> None:
    shape, change, field, fix = INVALID[engine]
    name = f"invalid-{engine}"
    body = example(shape, name)
    body["spec"].update(change)
    async with _created(server, body):
        ready = await eventually(lambda: _condition(server, name, "Ready"))
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert field in ready["message"]
        assert _owned(server, name) == {}
        events = await eventually(lambda: [
            e for e in server.stored(EVENT, NS).values()
            if e.get("reason") == "InvalidSpec" and e["involvedObject"]["name"] == name])
        assert events[0]["type"] == "Warning" and field in events[0]["message"]
        # fixed: the objects come, the condition goes
        await _send(server, "PATCH", PARENT.path(NS, name), {"spec": fix})
        await _planned(server, name, "the objects of the fixed spec")
        await eventually(lambda: _condition(server, name, "Ready").get("reason")
                         == "WorkloadsNotReady", what="InvalidSpec cleared")


async def test_ready_with_a_url_once_the_gateway_accepts_the_route(
        server: ApiServer, operator: Running) -> None:
    async with _created(server, example("sglang-pd", "ready")) as name:
        owned = await _planned(server, name, "the planned objects")
        await _set_ready(server, owned)
        await eventually(lambda: _condition(server, name, "WorkloadsReady").get("status")
                         == "True", what="WorkloadsReady=True")
        router = _condition(server, name, "RouterReady")
        assert router["status"] == "False" and router["reason"] == "RouteNotAccepted"
        route = next(o for o in owned.values() if o["kind"] == "HTTPRoute")
        await _send(server, "PATCH", HTTPROUTES.path(NS, route["metadata"]["name"]) + "/status",
                    {"status": {"parents": [{"parentRef": {"name": "llm-d-gateway"},
                                             "controllerName": "x",
                                             "conditions": [{"type": "Accepted",
                                                             "status": "True"}]}]}})
        await _send(server, "POST", GATEWAY.path(NS),
                    {"apiVersion": GATEWAY.api_version, "kind": GATEWAY.kind,
                     "metadata": {"name": "llm-d-gateway", "namespace": NS},
                     "spec": {"listeners": [{"name": "http", "protocol": "HTTP",
                                             "port": 8080}]},
                     "status": {"addresses": [{"type": "IPAddress", "value": "10.1.2.3"}]}})
        # the Gateway is not owned: its address is picked up by the next resync
        await eventually(lambda: _condition(server, name, "Ready").get("status") == "True",
                         timeout_s=3 * RESYNC_S + 5, what="Ready=True")
        status = _status(server, name)
        assert status["url"] == "http://10.1.2.3:8080"
        assert status["workloads"]["prefill"] == {
            "replicas": 4, "readyReplicas": 4, "objects": [f"Deployment/{name}-prefill"]}


async def test_the_resync_timer_repeats_passes_that_write_nothing(
        server: ApiServer, operator: Running) -> None:
    async with _created(server, example("vllm", "quiet")) as name:
        await _planned(server, name, "the planned objects")
        await asyncio.sleep(0.5)  # the burst of events from the creation settles
        reconciler = operator.operator.reconciler
        assert reconciler is not None
        passes, before = reconciler.passes, len(server.writes)
        await eventually(lambda: reconciler.passes >= passes + 2,
                         timeout_s=2 * RESYNC_S + 5, what="resync passes")
        assert server.writes[before:] == []


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
                await _send(api, "POST", PARENT.path(NS), example("sglang-pd", "elected"))
                await _planned(api, "elected", "the planned objects")
                await asyncio.sleep(0.3)
                assert not second.leading and second.reconciler is not None
                assert second.reconciler.passes == 0
                assert api.stored(LEASE, NS)["llmd-operator"]["spec"]["holderIdentity"] == "a"
                await first_run.aclose()  # a stops and releases the Lease: b takes over
                await _send(api, "PATCH", PARENT.path(NS, "elected"), {"spec": {"replicas": 2}})
                await eventually(lambda: second.leading, what="b leads")
                await eventually(lambda: api.stored(DEPLOYMENTS, NS)[
                    "elected-decode"]["spec"]["replicas"] == 2, what="b applies the change")
                assert api.stored(LEASE, NS)["llmd-operator"]["spec"]["holderIdentity"] == "b"


class _QuickToClose(aiohttp.test_utils.RawTestServer):
    """kmock's server, closing its open watches after 0.5 s instead of aiohttp's 60 s."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
        server = aiohttp.web.Server(self._handler, loop=self._loop, debug=debug, **kwargs)
        return aiohttp.web.ServerRunner(server, debug=debug, shutdown_timeout=0.5, **kwargs)


@pytest.mark.parametrize("shape", ["vllm-pd", "sglang-pd"])
async def test_the_operator_rides_out_an_api_server_outage(shape: str) -> None:
    """The API server goes away under a running operator (its watches break, its passes fail)
    and comes back on the same address with the same objects: the operator is still running,
    and what changed while it was gone or after is reconciled. No resync timer here: the
    watches themselves come back (kopf lists again) and see both changes."""
    name = "outage"
    async with ApiServer() as api, AsyncExitStack() as back, AsyncExitStack() as first:
        api.declare()
        serving = await first.enter_async_context(kmock.Server(api, server_cls=_QuickToClose))
        port = serving.port
        async with running(operator_for(str(serving.url), resync_s=3600)) as op:
            await eventually(lambda: op.operator.leading, what="the operator to start")
            await _send(api, "POST", PARENT.path(NS), example(shape, name))
            await _planned(api, name, "the planned objects")

            await first.aclose()  # the API server is gone...
            # ...while the service changes on its side (an edit served by another API server
            # replica, say) and the operator's watches fail and retry for a while
            stored = api.objects[(kmock.resource(PARENT.group, PARENT.version, PARENT.plural),
                                  NS, name)]
            stored.patch({"spec": {"replicas": 3}})
            await asyncio.sleep(1.5)  # an outage: the watches fail and retry meanwhile
            assert op.operator.reconciler is not None

            await back.enter_async_context(  # it is back, on the same address
                kmock.Server(api, port=port, server_cls=_QuickToClose))
            owned = await eventually(
                lambda: (found := _as_planned(api, name)) and
                _workloads(found)["decode"]["spec"]["replicas"] == 3 and found,
                timeout_s=30, what="the change made during the outage applied")
            # and the operator watches again: drift is repaired at once
            decode = _workloads(owned)["decode"]
            await _send(api, "DELETE", DEPLOYMENTS.path(NS, decode["metadata"]["name"]))
            await _planned(api, name, "the deleted Deployment recreated")
            await _delete(api, name)
