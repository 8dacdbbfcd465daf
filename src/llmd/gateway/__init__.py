"""The gateway: an Envoy bootstrap for the pool behind the llmd EPP, and its process runner."""

from __future__ import annotations

from llmd.gateway.envoy import ExtProcMode, FailureMode, GatewaySpec, render_bootstrap
from llmd.gateway.runner import EnvoyGateway, GatewayError, find_envoy, serve_gateway

__all__ = [
    "EnvoyGateway",
    "ExtProcMode",
    "FailureMode",
    "GatewayError",
    "GatewaySpec",
    "find_envoy",
    "render_bootstrap",
    "serve_gateway",
]
