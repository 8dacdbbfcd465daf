"""Envoy over several EPP replicas: the `epp` cluster ext_proc opens its streams on, and the one
failover pass a request whose stream broke gets on another replica.

With several replicas (`GatewaySpec.epp`):

- the `epp` cluster lists them all, round robin per ext_proc stream (one stream per request),
  HTTP/2; each is health-checked on its grpc.health.v1 port every second (unhealthy after one
  failure, healthy after one success; `no_traffic_interval` too, Envoy's default is 60 s), a
  refused or reset connection ejects it at once (outlier detection on local-origin failures,
  1 s base ejection), and panic routing is off, so with every replica down ext_proc fails at
  once rather than trying dead hosts;
- ext_proc's `grpc_service.retry_policy` retries a stream that was refused or reset, or that
  failed to connect, on another replica (`previous_hosts`), up to twice. Envoy 1.40 does retry
  an ext_proc stream this way: its async client buffers what it sent, and a stream the dead
  replica had not answered yet is replayed on a live one;
- a request whose stream failed anyway (one a retry cannot replay: the replica had already
  answered a message, e.g. the headers message in BUFFERED mode, and died before the decision)
  reaches the gateway's last route without the EPP's header. With several replicas that route
  is not the failure mode but a second pass: the request re-enters the gateway once through an
  internal listener (`FAILOVER_LISTENER`, no socket; bootstrap extension
  `envoy.bootstrap.internal_listener`), whose ext_proc opens a new stream, on a live replica,
  and whose last route is the pool's FailOpen/FailClose. The buffered body goes along.

Measured with `bench/epp_failover.py` (2 replicas, 4 zero-latency simulators, FailClose, 2,000
completions at concurrency 64, replica 0 SIGKILLed after 600; errors per kill over 6 runs,
BUFFERED): the cluster alone 8-34 FailClose 503s (the streams the dead replica held, and those
opened on it in the 12-108 ms before Envoy counted it unhealthy); with the gRPC retry 0-11
(a stream the replica had answered cannot be replayed); with the failover pass alone 0-6 (a
second pass opened in the same instant can land on the dead replica); both, what is rendered
here: 0 in every run, and no failure-mode route. In FULL_DUPLEX_STREAMED mode a broken stream
is Envoy's own 500 (the body was in the EPP's hands; `failure_mode_allow` does not apply),
6-43 per kill with any of these. See docs/architecture.md, "Faults".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.gateway._xds import TYPE, addr, breakers, check_host_port, dur, split

__all__ = ["FAILOVER_LISTENER", "INTERNAL_LISTENERS", "EppReplica", "check_health_ports",
           "epp_cluster", "epp_entries", "epp_grpc_retry", "failover_cluster"]

FAILOVER_LISTENER = "epp-failover"
"""The internal listener a request re-enters once when its ext_proc stream failed."""

HEALTH_INTERVAL_S = 1.0
"""Envoy's gRPC health check of each replica: every second, unhealthy after one failure."""


class EppReplica(LlmdModel):
    """One `llmd epp`: its ext_proc address and the port of its grpc.health.v1 service."""

    address: str = Field(description="ext_proc host:port")
    health_port: int | None = Field(
        None, gt=0, lt=65536, description="`llmd epp --grpc-health-port`: Envoy health-checks "
        "the replica there (every replica has one or none does)")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_host_port(value)

    def flag(self) -> str:
        """As `llmd gateway --epp` takes it."""
        return self.address + (f",health={self.health_port}" if self.health_port else "")


def epp_entries(value: object) -> object:
    """`GatewaySpec.epp` before validation: None, `host:port[,health=PORT]` strings (several
    replicas in one string too, comma-separated), dicts or `EppReplica`s → a tuple pydantic
    validates entry by entry."""
    if value is None:
        return ()
    items: Iterable[object] = (value,) if isinstance(value, str | EppReplica | dict) else (
        value if isinstance(value, Iterable) else (value,))
    out: list[object] = []
    for item in items:
        out += _parse(item) if isinstance(item, str) else [item]
    return tuple(out)


def _parse(text: str) -> list[dict[str, str]]:
    """`a:1,health=2,b:3,health=4` → two replicas: an option belongs to the address before it."""
    out: list[dict[str, str]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, val = part.partition("=")
        if not sep:
            out.append({"address": part})
        elif key != "health" or not out:
            raise ValueError(f"{text!r}: {part!r} is not host:port or health=PORT after one")
        else:
            out[-1]["health_port"] = val
    return out


def check_health_ports(replicas: tuple[EppReplica, ...]) -> tuple[EppReplica, ...]:
    """Envoy health-checks every host of a cluster or none: so every replica names its health
    port, or none does (then only outlier detection takes a dead one out)."""
    given = {r.health_port is not None for r in replicas}
    if len(given) > 1:
        raise ValueError("give every EPP replica a health port (host:port,health=PORT) or none")
    return replicas


def epp_cluster(replicas: tuple[EppReplica, ...], connect_timeout_s: float) -> dict[str, Any]:
    """The replicas, round-robin per ext_proc stream, over HTTP/2."""
    checked = replicas[0].health_port is not None
    endpoints = []
    for replica in replicas:
        endpoint: dict[str, Any] = {"address": addr(*split(replica.address))}
        if checked:
            endpoint["health_check_config"] = {"port_value": replica.health_port}
        endpoints.append({"endpoint": endpoint})
    cluster: dict[str, Any] = {
        "name": "epp",
        "type": "STATIC",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": dur(connect_timeout_s),
        "load_assignment": {"cluster_name": "epp", "endpoints": [{"lb_endpoints": endpoints}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": TYPE + "extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }},
        "circuit_breakers": breakers(),
    }
    if len(replicas) > 1:
        cluster |= {
            # No panic routing: with every replica down ext_proc fails at once and the pool's
            # failure mode applies, instead of streams spread over dead hosts.
            "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
            "outlier_detection": _OUTLIER_DETECTION,
        }
        if checked:
            cluster["health_checks"] = [_HEALTH_CHECK]
    return cluster


_HEALTH_CHECK = {
    "timeout": "0.5s",
    "interval": dur(HEALTH_INTERVAL_S),
    "no_traffic_interval": dur(HEALTH_INTERVAL_S),  # Envoy's default is 60 s
    "unhealthy_threshold": 1,
    "healthy_threshold": 1,
    "grpc_health_check": {},
}
# A refused or reset connection ejects the replica at once, before the next health check.
_OUTLIER_DETECTION = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 1,
    "enforcing_consecutive_local_origin_failure": 100,
    "consecutive_5xx": 1_000_000,
    "consecutive_gateway_failure": 1_000_000,
    "interval": "1s",
    "base_ejection_time": "1s",
    "max_ejection_time": "5s",
    "max_ejection_percent": 100,
}


def epp_grpc_retry() -> dict[str, Any]:
    """ext_proc's `grpc_service.retry_policy` with several replicas: a stream refused, reset
    or not connected is replayed on another replica (see the module docstring)."""
    return {
        "retry_on": "connect-failure,refused-stream,reset,unavailable",
        "num_retries": 2,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": TYPE + "extensions.retry.host.previous_hosts.v3."
                                            "PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3,
    }


INTERNAL_LISTENERS = {
    "name": "envoy.bootstrap.internal_listener",
    "typed_config": {"@type": TYPE + "extensions.bootstrap.internal_listener.v3."
                                     "InternalListener"},
}


def failover_cluster(connect_timeout_s: float) -> dict[str, Any]:
    """The gateway itself, through the internal listener (no socket, no port)."""
    return {
        "name": "epp_failover",
        "type": "STATIC",
        "connect_timeout": dur(connect_timeout_s),
        "load_assignment": {"cluster_name": "epp_failover", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"envoy_internal_address": {
                "server_listener_name": FAILOVER_LISTENER}}}}]}]},
        "circuit_breakers": breakers(),
    }
