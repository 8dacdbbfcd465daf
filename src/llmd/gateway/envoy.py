"""Render an Envoy bootstrap for an InferencePool behind the llmd EPP.

The shape follows ../shared/reference/envoy-extproc.md (checked with Envoy 1.40):

- `header_mutation` first strips any client-sent `x-gateway-destination-endpoint` and
  `x-prefiller-host-port`, so only the EPP can choose an endpoint or a prefill target (also on
  the FailOpen route, where the EPP never saw the request);
- `ext_proc` to the EPP cluster (HTTP/2) with `request_body_mode: BUFFERED`; the response path
  is skipped (`response_header_mode: SKIP`, `response_body_mode: NONE`). `ext_proc_mode:
  full-duplex` uses GIE's `FULL_DUPLEX_STREAMED` both ways instead (what other Gateway API
  inference gateways send the EPP);
- route 1: requests carrying the EPP's header go to the `ORIGINAL_DST` cluster keyed on it
  (`timeout: 0s`: no whole-request limit for long streams), and the response gets the headers
  the EPP named in `llmd.response_headers` dynamic metadata (the session token; ext_proc
  accepts that one namespace from the EPP). `%DYNAMIC_METADATA%`, not `%REQ%` of an internal
  request header: removing such a header before it goes upstream empties `%REQ%` too, and a
  header absent from the metadata is simply not added;
- route 2: requests without it (the EPP is down or timed out) follow the pool's failure mode:
  FailOpen sends them round-robin to the fallback endpoints, FailClose answers 503 with an
  OpenAI-style JSON body. ext_proc itself always "allows" failures so that route 2 decides.

Without an EPP (`epp=None`) the gateway is plain round-robin over the fallback endpoints, the
baseline `bench/epp_overhead.py` compares against.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.epp import (
    DESTINATION_HEADER,
    RESPONSE_HEADERS,
    RESPONSE_METADATA_NAMESPACE,
    ROUTING_HEADERS,
)
from llmd.errors import error_body

__all__ = ["ExtProcMode", "FailureMode", "GatewaySpec", "render_bootstrap"]

FailureMode = Literal["FailOpen", "FailClose"]
ExtProcMode = Literal["buffered", "full-duplex"]

_T = "type.googleapis.com/envoy."
_BIG = 1_000_000  # circuit-breaker limits: llmd's admission is the EPP, not Envoy's defaults


class GatewaySpec(LlmdModel):
    """What the gateway listens on and where it sends requests. Port 0: ephemeral."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, lt=65536)
    admin_port: int = Field(default=0, ge=0, lt=65536)
    epp: str | None = Field(default=None, description="EPP ext_proc host:port; None = no EPP")
    failure_mode: FailureMode = "FailClose"
    ext_proc_mode: ExtProcMode = Field(
        default="buffered",
        description="buffered: llmd's default, response path skipped; full-duplex: GIE's "
        "FULL_DUPLEX_STREAMED both ways, as Gateway API inference gateways configure it")
    fallback_endpoints: tuple[str, ...] = Field(
        (), description="ip:port endpoints for FailOpen (and round-robin without an EPP)"
    )
    ext_proc_message_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    stream_idle_timeout_s: float = Field(default=3600.0, ge=0)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    @field_validator("epp", "fallback_endpoints")
    @classmethod
    def _host_ports(cls, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        for item in (value,) if isinstance(value, str) else value or ():
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r} is not host:port")
        return value


def render_bootstrap(spec: GatewaySpec) -> dict[str, Any]:
    """The Envoy bootstrap as a dict (write it as JSON; Envoy reads JSON bootstraps)."""
    clusters: list[dict[str, Any]] = []
    http_filters: list[dict[str, Any]] = [_strip_destination_filter()]
    routes: list[dict[str, Any]] = []
    if spec.epp is not None:
        clusters += [_epp_cluster(spec), _pool_cluster(spec)]
        http_filters.append(_ext_proc_filter(spec))
        routes.append({
            "match": {"prefix": "/", "headers": [
                {"name": DESTINATION_HEADER, "present_match": True}]},
            "route": {"cluster": "pool", "timeout": "0s"},
            "response_headers_to_add": [{
                "header": {"key": h,
                           "value": f"%DYNAMIC_METADATA({RESPONSE_METADATA_NAMESPACE}:{h})%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            } for h in RESPONSE_HEADERS],
        })
    use_fallback = spec.fallback_endpoints and (spec.epp is None or spec.failure_mode == "FailOpen")
    if use_fallback:
        clusters.append(_fallback_cluster(spec))
        routes.append({"match": {"prefix": "/"}, "route": {"cluster": "fallback", "timeout": "0s"}})
    else:
        body = error_body(503, "the endpoint picker is unavailable and the pool fails closed")
        routes.append({"match": {"prefix": "/"}, "direct_response": {
            "status": 503, "body": {"inline_string": json.dumps(body)}}})
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": _T + "extensions.filters.http.router.v3.Router"}})
    hcm = {
        "@type": _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "stream_idle_timeout": _dur(spec.stream_idle_timeout_s),
        "request_timeout": "0s",
        "route_config": {"name": "pool", "virtual_hosts": [
            {"name": "pool", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
    }
    return {
        "admin": {"address": _addr(spec.host, spec.admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": _addr(spec.host, spec.port),
                "per_connection_buffer_limit_bytes": spec.max_request_bytes,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": clusters,
        },
    }


def _strip_destination_filter() -> dict[str, Any]:
    return {"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": _T + "extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": [{"remove": h} for h in ROUTING_HEADERS]},
    }}


def _ext_proc_filter(spec: GatewaySpec) -> dict[str, Any]:
    return {"name": "envoy.filters.http.ext_proc", "typed_config": {
        "@type": _T + "extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": "epp"},
                         "timeout": _dur(spec.ext_proc_message_timeout_s)},
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


def _epp_cluster(spec: GatewaySpec) -> dict[str, Any]:
    assert spec.epp is not None
    host, port = _split(spec.epp)
    return {
        "name": "epp",
        "type": "STATIC",
        "connect_timeout": _dur(spec.connect_timeout_s),
        "load_assignment": {"cluster_name": "epp", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _addr(host, port)}}]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }},
        "circuit_breakers": _breakers(),
    }


def _pool_cluster(spec: GatewaySpec) -> dict[str, Any]:
    return {
        "name": "pool",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": _dur(spec.connect_timeout_s),
        "original_dst_lb_config": {"use_http_header": True,
                                   "http_header_name": DESTINATION_HEADER},
        "circuit_breakers": _breakers(),
    }


def _fallback_cluster(spec: GatewaySpec) -> dict[str, Any]:
    eps = [{"endpoint": {"address": _addr(*_split(e))}} for e in spec.fallback_endpoints]
    return {
        "name": "fallback",
        "type": "STATIC",
        "lb_policy": "ROUND_ROBIN",
        "connect_timeout": _dur(spec.connect_timeout_s),
        "load_assignment": {"cluster_name": "fallback", "endpoints": [{"lb_endpoints": eps}]},
        "circuit_breakers": _breakers(),
    }


def _breakers() -> dict[str, Any]:
    return {"thresholds": [{"max_connections": _BIG, "max_pending_requests": _BIG,
                            "max_requests": _BIG, "max_retries": 3}]}


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def _dur(seconds: float) -> str:
    return f"{seconds:.3f}s"
