"""The request headers through which the EPP's decision reaches Envoy and the P/D sidecar.

Only the EPP may set these: the gateway strips client-sent copies before ext_proc runs, and every
decision overwrites them or removes them, so a client can choose neither the endpoint nor the
prefill target through the gateway.
"""

from __future__ import annotations

__all__ = ["DESTINATION_HEADER", "PREFILLER_HEADER", "ROUTING_HEADERS"]

DESTINATION_HEADER = "x-gateway-destination-endpoint"
"""`ip:port` of the endpoint Envoy's ORIGINAL_DST cluster connects to (GIE protocol)."""

PREFILLER_HEADER = "x-prefiller-host-port"
"""`ip:port` (`[v6]:port`) of the prefill endpoint for the decode pod's sidecar (llm-d P/D)."""

ROUTING_HEADERS = (DESTINATION_HEADER, PREFILLER_HEADER)
