"""The gateway: an Envoy bootstrap for the pool behind the llmd EPP, its process runner, and the
local stack (`LocalStack`: simulators + EPP + Envoy) behind `llmd up` and the benchmarks."""

from __future__ import annotations

from llmd.gateway._pd import PD_EPP_CONFIG
from llmd.gateway.envoy import (
    EppReplica,
    ExtProcMode,
    FailureMode,
    GatewaySpec,
    render_bootstrap,
)
from llmd.gateway.runner import EnvoyGateway, GatewayError, find_envoy, serve_gateway
from llmd.gateway.stack import EppProcess, LocalStack, StackSpec
from llmd.gateway.up import run_up

__all__ = [
    "EnvoyGateway",
    "EppProcess",
    "EppReplica",
    "ExtProcMode",
    "FailureMode",
    "GatewayError",
    "GatewaySpec",
    "LocalStack",
    "PD_EPP_CONFIG",
    "StackSpec",
    "find_envoy",
    "render_bootstrap",
    "run_up",
    "serve_gateway",
]
