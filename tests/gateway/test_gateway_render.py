"""The Envoy bootstrap's shape per failure mode, and the runner's errors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from llmd.gateway import EnvoyGateway, GatewayError, GatewaySpec, render_bootstrap


def _routes(spec: GatewaySpec) -> list[dict[str, object]]:
    """The routes after the first, which refuses CONNECT whatever the spec."""
    hcm = render_bootstrap(spec)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    connect, *routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert connect["match"] == {"connect_matcher": {}}
    assert connect["direct_response"]["status"] == 405
    return routes  # type: ignore[no-any-return]


def _filters(spec: GatewaySpec) -> list[str]:
    hcm = render_bootstrap(spec)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    return [f["name"] for f in hcm["http_filters"]]


@pytest.mark.parametrize(("spec", "fallback"), [
    pytest.param(GatewaySpec(epp="127.0.0.1:9002", failure_mode="FailOpen",
                             fallback_endpoints=("127.0.0.1:8000",)), "cluster", id="fail-open"),
    pytest.param(GatewaySpec(epp="127.0.0.1:9002", failure_mode="FailClose",
                             fallback_endpoints=("127.0.0.1:8000",)), "503", id="fail-close"),
    pytest.param(GatewaySpec(epp="127.0.0.1:9002", failure_mode="FailOpen"), "503",
                 id="fail-open-without-fallback"),
])
def test_epp_routes(spec: GatewaySpec, fallback: str) -> None:
    first, second = _routes(spec)
    assert first["route"] == {"cluster": "pool", "timeout": "0s"}
    assert first["match"]["headers"][0]["name"] == "x-gateway-destination-endpoint"  # type: ignore[index]
    if fallback == "cluster":
        assert second["route"]["cluster"] == "fallback"  # type: ignore[index]
        assert second["route"]["timeout"] == "0s"  # type: ignore[index]
    else:
        assert second["direct_response"]["status"] == 503  # type: ignore[index]
    assert _filters(spec) == ["envoy.filters.http.header_mutation",
                              "envoy.filters.http.ext_proc", "envoy.filters.http.router"]


@pytest.mark.parametrize("mode", ["buffered", "full-duplex"])
def test_routed_responses_get_the_epps_response_headers(mode: str) -> None:
    """The session token travels in dynamic metadata that ext_proc accepts from the EPP and
    the EPP route copies onto the response (no internal request header reaches upstream)."""
    spec = GatewaySpec(epp="127.0.0.1:9002", ext_proc_mode=mode)  # type: ignore[arg-type]
    routed, _ = _routes(spec)
    assert routed["response_headers_to_add"] == [{
        "header": {"key": "x-session-token",
                   "value": "%DYNAMIC_METADATA(llmd.response_headers:x-session-token)%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    hcm = render_bootstrap(spec)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    (ext_proc,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    assert ext_proc["typed_config"]["metadata_options"] == {
        "receiving_namespaces": {"untyped": ["llmd.response_headers"]}}


def test_without_epp_it_is_round_robin() -> None:
    spec = GatewaySpec(fallback_endpoints=("127.0.0.1:8000", "127.0.0.1:8001"))
    (route,) = _routes(spec)
    assert route["route"]["cluster"] == "fallback"  # type: ignore[index]
    assert "envoy.filters.http.ext_proc" not in _filters(spec)


def test_bad_addresses_are_rejected() -> None:
    with pytest.raises(ValidationError, match="'nohost' is not host:port"):
        GatewaySpec(fallback_endpoints=("nohost",))


async def test_port_taken_is_a_gateway_error_with_envoys_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GatewayError, match="(?s)envoy exited.*Address already in use"):
            async with EnvoyGateway(GatewaySpec(port=port, fallback_endpoints=("127.0.0.1:1",))):
                pass


async def test_llmd_gateway_command_prints_listening_and_stops_envoy() -> None:
    llmd = str(Path(sys.executable).parent / "llmd")
    proc = await asyncio.create_subprocess_exec(
        llmd, "gateway", "--port", "0", "--fallback", "127.0.0.1:1", "--log-level", "info",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening on 127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        err = (await proc.stderr.read()).decode()
        envoy_pid = int(err.split("envoy pid ")[1].split(",")[0])
        with pytest.raises(ProcessLookupError):
            os.kill(envoy_pid, 0)  # no orphan left behind
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


TWO_REPLICAS = "127.0.0.1:9002,health=9003,127.0.0.1:9012,health=9013"


def test_one_epp_replica_is_rendered_as_before() -> None:
    """One replica: no health checks, no failover pass (a broken stream has nowhere else to
    go), the failure mode right after the EPP route."""
    boot = render_bootstrap(GatewaySpec(epp="127.0.0.1:9002,health=9003"))
    assert [x["name"] for x in boot["static_resources"]["listeners"]] == ["gateway"]
    (epp,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "epp"]
    assert "health_checks" not in epp and "outlier_detection" not in epp
    assert "bootstrap_extensions" not in boot


def test_epp_replicas_are_health_checked_and_failed_over() -> None:
    spec = GatewaySpec(epp=TWO_REPLICAS, failure_mode="FailClose")
    boot = render_bootstrap(spec)
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    epp = clusters["epp"]
    hosts = [(e["endpoint"]["address"]["socket_address"]["port_value"],
              e["endpoint"]["health_check_config"]["port_value"])
             for e in epp["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert hosts == [(9002, 9003), (9012, 9013)]
    assert epp["lb_policy"] == "ROUND_ROBIN"
    (check,) = epp["health_checks"]
    assert "grpc_health_check" in check and check["unhealthy_threshold"] == 1
    assert check["interval"] == check["no_traffic_interval"] == "1.000s"
    assert epp["common_lb_config"] == {"healthy_panic_threshold": {"value": 0}}
    assert epp["outlier_detection"]["consecutive_local_origin_failure"] == 1
    # Outer listener: a request without the EPP's header re-enters once, through the
    # internal listener, whose last route is the failure mode.
    outer, inner = boot["static_resources"]["listeners"]
    assert inner["internal_listener"] == {} and "address" not in inner
    outer_hcm = outer["filter_chains"][0]["filters"][0]["typed_config"]
    inner_hcm = inner["filter_chains"][0]["filters"][0]["typed_config"]
    assert outer_hcm["route_config"]["virtual_hosts"][0]["routes"][-1]["route"] == {
        "cluster": "epp_failover", "timeout": "0s"}
    assert inner_hcm["route_config"]["virtual_hosts"][0]["routes"][-1]["direct_response"][
        "status"] == 503
    assert clusters["epp_failover"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
        "endpoint"]["address"] == {"envoy_internal_address": {"server_listener_name":
                                                              inner["name"]}}
    assert [e["name"] for e in boot["bootstrap_extensions"]] == [
        "envoy.bootstrap.internal_listener"]
    for hcm in (outer_hcm, inner_hcm):
        (ext_proc,) = [f for f in hcm["http_filters"] if f["name"].endswith("ext_proc")]
        retry = ext_proc["typed_config"]["grpc_service"]["retry_policy"]
        assert "connect-failure" in retry["retry_on"] and retry["retry_host_predicate"]


@pytest.mark.parametrize(("epp", "message"), [
    pytest.param("127.0.0.1:9002,weight=2", "'weight=2' is not host:port or health=PORT",
                 id="unknown-option"),
    pytest.param("health=9003", "'health=9003' is not host:port or health=PORT after one",
                 id="option-first"),
    pytest.param(["127.0.0.1:9002,health=9003", "127.0.0.1:9012"],
                 "every EPP replica a health port", id="some-health-ports"),
    pytest.param("127.0.0.1:9002,health=0", "epp.0.health_port", id="bad-health-port"),
    pytest.param("nohost", "epp.0.address", id="bad-address"),
])
def test_bad_epp_replicas_are_rejected(epp: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewaySpec(epp=epp)


async def test_llmd_gateway_takes_several_epp_replicas() -> None:
    """`--epp` repeated (and comma-separated): Envoy's `epp` cluster holds every replica; none
    answers here, so the health checks find them all down. A bad value is exit 2 naming it."""
    llmd = str(Path(sys.executable).parent / "llmd")
    proc = await asyncio.create_subprocess_exec(
        llmd, "gateway", "--port", "0", "--admin-port", "0", "--log-level", "info",
        "--epp", "127.0.0.1:1,health=2", "--epp", "127.0.0.1:3,health=4,127.0.0.1:5,health=6",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).startswith(b"listening on 127.0.0.1:")
            while b"(admin " not in (line := await proc.stderr.readline()):
                assert line, "llmd gateway ended before logging its admin address"
        text = line.decode()
        assert "ext_proc 127.0.0.1:1,health=2 127.0.0.1:3,health=4 127.0.0.1:5,health=6" in text
        admin = text.split("(admin ")[1].split(")")[0]
        async with aiohttp.ClientSession() as http, http.get(
                admin + "/clusters?format=json") as resp:
            clusters = (await resp.json())["cluster_statuses"]
        (epp,) = [c for c in clusters if c["name"] == "epp"]
        hosts = sorted(h["address"]["socket_address"]["port_value"] for h in epp["host_statuses"])
        assert hosts == [1, 3, 5]
        assert all(h["health_status"].get("failed_active_health_check")
                   for h in epp["host_statuses"])
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await proc.wait()
    bad = await asyncio.create_subprocess_exec(
        llmd, "gateway", "--port", "0", "--epp", "127.0.0.1:1,weight=2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(20):
        out = (await bad.communicate())[0].decode()
    assert bad.returncode == 2 and "llmd gateway: epp: " in out and "weight=2" in out, out
