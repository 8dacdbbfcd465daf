"""Render an Envoy bootstrap for an InferencePool behind the llmd EPP.

The shape follows ../shared/reference/envoy-extproc.md (checked with Envoy 1.40):

- `header_mutation` first strips any client-sent `x-gateway-destination-endpoint` and
  `x-prefiller-host-port`, and the `x-envoy-*` headers that would let a client change retries
  or timeouts, so only the EPP can choose an endpoint or a prefill target (also on the FailOpen
  route, where the EPP never saw the request);
- `ext_proc` to the `epp` cluster (HTTP/2) with `request_body_mode: BUFFERED`; the response path
  is skipped (`response_header_mode: SKIP`, `response_body_mode: NONE`). `ext_proc_mode:
  full-duplex` uses GIE's `FULL_DUPLEX_STREAMED` both ways instead (what other Gateway API
  inference gateways send the EPP);
- route 1: requests carrying the EPP's header go to the `pool` cluster (`timeout: 0s`: no
  whole-request limit for long streams), and the response gets the headers the EPP named in
  `llmd.response_headers` dynamic metadata (the session token; ext_proc accepts that one
  namespace from the EPP). `%DYNAMIC_METADATA%`, not `%REQ%` of an internal request header:
  removing such a header before it goes upstream empties `%REQ%` too, and a header absent from
  the metadata is simply not added;
- the `pool` cluster: with the pool's `endpoints` known, a STATIC cluster of exactly those with
  Envoy's `override_host` load balancer reading the EPP's header, which may name several
  endpoints best first (GIE's multi-endpoint protocol, `llmd epp --fallback-endpoints`): an
  attempt whose connection is refused or reset before response headers, or that a P/D sidecar
  answers with `x-llmd-retriable` (its decode engine is gone), is retried on the next one, up
  to `retries` times, and when the list is used up the fallback balancer selects no host
  (a 503), so nothing the EPP did not name is ever reached. Without `endpoints`, an
  `ORIGINAL_DST` cluster connects to the one `ip:port` the EPP names, with no retry elsewhere;
- several EPP replicas (`epp` lists them; `_epp_cluster` has the details and what was
  measured): round robin per ext_proc stream, gRPC health checks every second, outlier
  detection, a refused or reset stream retried on another replica (`grpc_service.retry_policy`),
  and route 2 replaced by one failover pass: a request without the EPP's header re-enters the
  gateway through an internal listener, is decided by a live replica, and only there meets the
  failure mode. Killing one of two replicas under load (2,000 requests at concurrency 64)
  cost no request and took no FailOpen/FailClose route in BUFFERED mode (in full-duplex mode
  Envoy answers a broken stream with a 500 itself);
- route 2: requests without it (the EPP is down or timed out) follow the pool's failure mode:
  FailOpen sends them round-robin to the fallback endpoints (retrying another one on a refused
  connection), FailClose answers 503 with an OpenAI-style JSON body. ext_proc itself always
  "allows" failures so that route 2 decides;
- the listener bounds slow clients (`request_headers_timeout_s` for the header block,
  `request_timeout_s` for the whole request, `idle_timeout_s` between requests) and header size
  (`max_request_headers_kb`, Envoy's 60 KB default, which the simulators accept too), and every
  error Envoy generates itself is OpenAI-style JSON (`_local_reply`).

Without an EPP (`epp=()`) the gateway is plain round-robin over the fallback endpoints, the
baseline `bench/epp_overhead.py` compares against.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.epp import (
    DESTINATION_HEADER,
    LB_METADATA_NAMESPACE,
    RESPONSE_HEADERS,
    RESPONSE_METADATA_NAMESPACE,
    ROUTING_HEADERS,
)
from llmd.epp.extproc import STREAM_TIMEOUT
from llmd.errors import error_body
from llmd.gateway._epp_cluster import (
    FAILOVER_LISTENER,
    INTERNAL_LISTENERS,
    EppReplica,
    check_health_ports,
    epp_cluster,
    epp_entries,
    epp_grpc_retry,
    failover_cluster,
)
from llmd.gateway._local_reply import local_reply_config
from llmd.gateway._xds import TYPE as _T
from llmd.gateway._xds import addr as _addr
from llmd.gateway._xds import breakers as _breakers
from llmd.gateway._xds import check_host_port
from llmd.gateway._xds import dur as _dur
from llmd.gateway._xds import split as _split
from llmd.sidecar import RETRIABLE_HEADER

__all__ = ["EppReplica", "ExtProcMode", "FailureMode", "GatewaySpec", "render_bootstrap"]

FailureMode = Literal["FailOpen", "FailClose"]
ExtProcMode = Literal["buffered", "full-duplex"]


class GatewaySpec(LlmdModel):
    """What the gateway listens on and where it sends requests. Port 0: ephemeral."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, lt=65536)
    admin_port: int = Field(default=0, ge=0, lt=65536)
    epp: tuple[EppReplica, ...] = Field(
        default=(), description="the EPP replicas, each `host:port[,health=PORT]` (ext_proc, "
        "grpc.health.v1); empty = no EPP. Several: round robin per ext_proc stream, health "
        "checked, and a request whose stream broke is decided again on another replica")
    failure_mode: FailureMode = "FailClose"
    ext_proc_mode: ExtProcMode = Field(
        default="buffered",
        description="buffered: llmd's default, response path skipped; full-duplex: GIE's "
        "FULL_DUPLEX_STREAMED both ways, as Gateway API inference gateways configure it")
    endpoints: tuple[str, ...] = Field(
        (), description="the pool's ip:port endpoints, when known: the EPP's fallback list is "
        "retried in order on a refused connection, and nothing else is ever reached; empty: "
        "ORIGINAL_DST to the single ip:port the EPP names")
    fallback_endpoints: tuple[str, ...] = Field(
        (), description="ip:port endpoints for FailOpen (and round-robin without an EPP); "
        "empty: `endpoints`")
    retries: int = Field(default=3, ge=0, le=16, description="further attempts after a "
                         "refused or reset connection (each on the EPP's next endpoint)")
    ext_proc_message_timeout_s: float = Field(
        default=15.0, gt=0, description="Envoy's wait for each EPP answer; past it the "
        "request takes the failure mode (FailClose: 503). Above the EPP's --max-wait-s (8 s), "
        "so that a busy EPP sheds with its own 429 before this expires")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    stream_idle_timeout_s: float = Field(default=300.0, ge=0, description="no bytes either way "
                                         "on a request for this long ends it (0: never)")
    request_headers_timeout_s: float = Field(default=10.0, gt=0, description="time a client "
                                             "has to send its whole header block")
    request_timeout_s: float = Field(default=60.0, gt=0, description="time a client has to "
                                     "send its whole request (headers and body)")
    idle_timeout_s: float = Field(default=300.0, gt=0, description="an idle client "
                                  "connection is closed after this long")
    max_request_headers_kb: int = Field(default=60, gt=0, le=8192)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    @property
    def failopen_endpoints(self) -> tuple[str, ...]:
        return self.fallback_endpoints or self.endpoints

    @field_validator("epp", mode="before")
    @classmethod
    def _epp_entries(cls, value: object) -> object:
        return epp_entries(value)

    @field_validator("epp")
    @classmethod
    def _epp_health(cls, value: tuple[EppReplica, ...]) -> tuple[EppReplica, ...]:
        return check_health_ports(value)

    @field_validator("endpoints", "fallback_endpoints")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_host_port(item) for item in value)


def render_bootstrap(spec: GatewaySpec) -> dict[str, Any]:
    """The Envoy bootstrap as a dict (write it as JSON; Envoy reads JSON bootstraps)."""
    clusters: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = [_refuse_connect()]
    if spec.epp:
        clusters += [epp_cluster(spec.epp, spec.connect_timeout_s), _pool_cluster(spec)]
        routes.append(_epp_route(spec))
    use_fallback = spec.failopen_endpoints and (not spec.epp or spec.failure_mode == "FailOpen")
    if use_fallback:
        clusters.append(_fallback_cluster(spec))
        fallback: dict[str, Any] = {"cluster": "fallback", "timeout": "0s"}
        if spec.retries:
            fallback["retry_policy"] = {**_retry_policy(spec), "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": _T + "extensions.retry.host.previous_hosts.v3."
                                               "PreviousHostsPredicate"}}]}
        failure_route: dict[str, Any] = {"match": {"prefix": "/"}, "route": fallback}
    else:
        body = error_body(503, "the endpoint picker is unavailable and the pool fails closed")
        failure_route = {"match": {"prefix": "/"}, "direct_response": {
            "status": 503, "body": {"inline_string": json.dumps(body)}},
            "response_headers_to_add": [_JSON]}
    listener = {"name": "gateway", "address": _addr(spec.host, spec.port)}
    if len(spec.epp) < 2:
        listeners = [listener | _http(spec, "gateway", [*routes, failure_route])]
    else:  # no EPP header: a stream broke, decide once more on another replica
        clusters.append(failover_cluster(spec.connect_timeout_s))
        failover = {"match": {"prefix": "/"},
                    "route": {"cluster": "epp_failover", "timeout": "0s"}}
        listeners = [listener | _http(spec, "gateway", [*routes, failover]),
                     {"name": FAILOVER_LISTENER, "internal_listener": {}}
                     | _http(spec, "failover", [*routes, failure_route])]
    bootstrap: dict[str, Any] = {
        "admin": {"address": _addr(spec.host, spec.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    if len(spec.epp) > 1:
        bootstrap["bootstrap_extensions"] = [INTERNAL_LISTENERS]
    return bootstrap


def _http(spec: GatewaySpec, stat_prefix: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    """A listener's filter chain: the HTTP connection manager with `routes`."""
    http_filters: list[dict[str, Any]] = [_strip_destination_filter()]
    if spec.epp:
        http_filters.append(_ext_proc_filter(spec))
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": _T + "extensions.filters.http.router.v3.Router"}})
    hcm = {
        "@type": _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "stream_idle_timeout": _dur(spec.stream_idle_timeout_s),
        "request_headers_timeout": _dur(spec.request_headers_timeout_s),
        "request_timeout": _dur(spec.request_timeout_s),
        "common_http_protocol_options": {"idle_timeout": _dur(spec.idle_timeout_s)},
        "max_request_headers_kb": spec.max_request_headers_kb,
        "route_config": {"name": "pool", "virtual_hosts": [
            {"name": "pool", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
        "local_reply_config": local_reply_config(),
    }
    return {"per_connection_buffer_limit_bytes": spec.max_request_bytes,
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm}]}]}


def _epp_route(spec: GatewaySpec) -> dict[str, Any]:
    """Requests that carry the EPP's header go to the endpoint(s) it named."""
    route: dict[str, Any] = {"cluster": "pool", "timeout": "0s"}
    if spec.endpoints and spec.retries:
        route["retry_policy"] = _retry_policy(spec)
    return {
        "match": {"prefix": "/", "headers": [
            {"name": DESTINATION_HEADER, "present_match": True}]},
        "route": route,
        "response_headers_to_remove": [RETRIABLE_HEADER],
        "response_headers_to_add": [{
            "header": {"key": h,
                       "value": f"%DYNAMIC_METADATA({RESPONSE_METADATA_NAMESPACE}:{h})%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        } for h in RESPONSE_HEADERS],
    }


# Envoy obeys these request headers from any client (retries, timeouts, the ORIGINAL_DST
# target); only the gateway's own config may decide those.
_ENVOY_CONTROL_HEADERS = (
    "x-envoy-max-retries", "x-envoy-retry-on", "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes", "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout", "x-envoy-original-dst-host",
    "x-envoy-upstream-alt-stat-name", "x-envoy-expected-rq-timeout-ms",
)


def _refuse_connect() -> dict[str, Any]:
    """CONNECT (a tunnel request, no model server speaks it) is a 405 without asking the EPP:
    its stream never ends, so the EPP would wait for a body until the request timeout."""
    body = error_body(405, "CONNECT is not supported; use POST /v1/completions or "
                           "/v1/chat/completions")
    return {"match": {"connect_matcher": {}},
            "direct_response": {"status": 405, "body": {"inline_string": json.dumps(body)}},
            "response_headers_to_add": [_JSON],
            "typed_per_filter_config": {"envoy.filters.http.ext_proc": {
                "@type": _T + "extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "disabled": True}}}


_JSON = {"header": {"key": "content-type", "value": "application/json"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _strip_destination_filter() -> dict[str, Any]:
    removed = (*ROUTING_HEADERS, *_ENVOY_CONTROL_HEADERS)
    return {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": _T + "extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"remove": h} for h in removed]},
    }}


def _retry_policy(spec: GatewaySpec) -> dict[str, Any]:
    """Retry what cannot have reached a model server's output: a refused connection, a stream
    refused or reset before response headers (a process that died while taking the request),
    and a P/D sidecar's answer that its decode engine refused it (`RETRIABLE_HEADER`).
    Retries never happen once response headers went to the client."""
    return {
        "retry_on": "connect-failure,refused-stream,reset,retriable-headers",
        "retriable_headers": [{"name": RETRIABLE_HEADER, "present_match": True}],
        "num_retries": spec.retries,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
    }


def _ext_proc_filter(spec: GatewaySpec) -> dict[str, Any]:
    return {"name": "envoy.filters.http.ext_proc", "typed_config": {
        "@type": _T + "extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "epp"},
            "timeout": _dur(spec.ext_proc_message_timeout_s),
            # Not a deadline (about 3 years): from it the EPP learns how long each stream
            # waited in its gRPC backlog, and sheds with a 429 before this message timeout.
            "initial_metadata": [{"key": "grpc-timeout", "value": STREAM_TIMEOUT}],
            **({"retry_policy": epp_grpc_retry()} if len(spec.epp) > 1 else {}),
        },
        "failure_mode_allow": True,  # the no-header route applies FailOpen/FailClose
        "message_timeout": _dur(spec.ext_proc_message_timeout_s),
        "metadata_options": {"receiving_namespaces": {"untyped": [RESPONSE_METADATA_NAMESPACE]}},
        "processing_mode": _DUPLEX_MODE if spec.ext_proc_mode == "full-duplex" else _BUFFERED_MODE,
    }}


_BUFFERED_MODE = {
    "request_header_mode": "SEND",
    "request_body_mode": "BUFFERED",
    "request_trailer_mode": "SKIP",
    "response_header_mode": "SKIP",
    "response_body_mode": "NONE",
    "response_trailer_mode": "SKIP",
}
_DUPLEX_MODE = {
    "request_header_mode": "SEND",
    "request_body_mode": "FULL_DUPLEX_STREAMED",
    "request_trailer_mode": "SEND",
    "response_header_mode": "SEND",
    "response_body_mode": "FULL_DUPLEX_STREAMED",
    "response_trailer_mode": "SEND",
}


def _pool_cluster(spec: GatewaySpec) -> dict[str, Any]:
    if not spec.endpoints:
        return {
            "name": "pool",
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": _dur(spec.connect_timeout_s),
            "original_dst_lb_config": {"use_http_header": True,
                                       "http_header_name": DESTINATION_HEADER},
            "circuit_breakers": _breakers(),
        }
    return {
        "name": "pool",
        "type": "STATIC",
        "connect_timeout": _dur(spec.connect_timeout_s),
        "load_assignment": _assignment("pool", spec.endpoints),
        "load_balancing_policy": {"policies": [_policy(
            "override_host", "override_host.v3.OverrideHost", {
                # The header and the `envoy.lb` metadata carry the same list (GIE); the
                # header is read first because the EPP sets both and a client cannot.
                "override_host_sources": [
                    {"header": DESTINATION_HEADER},
                    {"metadata": {"key": LB_METADATA_NAMESPACE,
                                  "path": [{"key": DESTINATION_HEADER}]}}],
                "fallback_policy": {"policies": [_NO_HOST]},
            })]},
        "circuit_breakers": _breakers(),
    }


def _policy(name: str, proto: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"typed_extension_config": {
        "name": f"envoy.load_balancing_policies.{name}",
        "typed_config": {"@type": _T + f"extensions.load_balancing_policies.{proto}",
                         **config}}}


# override_host's fallback once the EPP's list is used up (or names no pool member): a subset
# balancer whose only subset needs a key no endpoint has, without fallback, selects no host.
_NO_HOST = _policy("subset", "subset.v3.Subset", {
    "subset_selectors": [{"keys": ["llmd-never-matches"]}],
    "fallback_policy": "NO_FALLBACK",
    "subset_lb_policy": {"policies": [_policy("round_robin", "round_robin.v3.RoundRobin", {})]},
})


def _fallback_cluster(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "name": "fallback",
        "type": "STATIC",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": _dur(spec.connect_timeout_s),
        "load_assignment": _assignment("fallback", spec.failopen_endpoints),
        "circuit_breakers": _breakers(),
    }


def _assignment(cluster: str, endpoints: tuple[str, ...]) -> dict[str, Any]:
    eps = [{"endpoint": {"address": _addr(*_split(e))}} for e in endpoints]
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": eps}]}
