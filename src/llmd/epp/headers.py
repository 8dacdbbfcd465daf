"""The headers through which the EPP's decision reaches Envoy, the P/D sidecar and the client.

Request headers: only the EPP may set these. The gateway strips client-sent copies before
ext_proc runs, and every decision overwrites them or removes them, so a client can choose
neither the endpoint nor the prefill target through the gateway.

Response headers: the decision names them in dynamic metadata (namespace
`RESPONSE_METADATA_NAMESPACE`, one key per header), which Envoy's route copies onto the client's
response (`%DYNAMIC_METADATA(...)%`). Metadata, not an internal request header, because a route's
`%REQ(...)%` reads the same header map that `request_headers_to_remove` empties before the
request goes upstream (checked with Envoy 1.40): an internal header would have to reach the
model server. A client cannot write dynamic metadata, so there is nothing to strip.
"""

from __future__ import annotations

__all__ = [
    "DESTINATION_HEADER",
    "LB_METADATA_NAMESPACE",
    "PREFILLER_HEADER",
    "RESPONSE_HEADERS",
    "RESPONSE_METADATA_NAMESPACE",
    "ROUTING_HEADERS",
    "SESSION_HEADER",
]

DESTINATION_HEADER = "x-gateway-destination-endpoint"
"""`ip:port` of the endpoint the gateway connects to, or several, comma separated and best
first, for a gateway that tries the next when one refuses (GIE protocol)."""

LB_METADATA_NAMESPACE = "envoy.lb"
"""Dynamic metadata namespace carrying the same destination value (GIE protocol)."""

PREFILLER_HEADER = "x-prefiller-host-port"
"""`ip:port` (`[v6]:port`) of the prefill endpoint for the decode pod's sidecar (llm-d P/D)."""

ROUTING_HEADERS = (DESTINATION_HEADER, PREFILLER_HEADER)

SESSION_HEADER = "x-session-token"
"""llm-d's session token: read from requests by `session-affinity-scorer`, echoed on responses."""

RESPONSE_HEADERS = (SESSION_HEADER,)
"""Response headers a decision may set; the gateway's route copies each from the metadata."""

RESPONSE_METADATA_NAMESPACE = "llmd.response_headers"
"""Dynamic metadata namespace carrying the decision's response headers (header name → value)."""
