"""The P/D routing sidecar (`llmd sidecar`): one connector per engine P/D protocol."""

from __future__ import annotations

from llmd.sidecar.allowlist import Allowlist
from llmd.sidecar.app import PREFILLER_HEADER, build_app, serve, static_allowlist
from llmd.sidecar.body import parse_body
from llmd.sidecar.config import LLMD_PREFILL_PORT, ConnectorName, SidecarConfig
from llmd.sidecar.hostport import HostPort, parse_host_port, split_host_port
from llmd.sidecar.targets import parse_candidates
from llmd.sidecar.upstream import RETRIABLE_HEADER

__all__ = [
    "Allowlist",
    "ConnectorName",
    "HostPort",
    "LLMD_PREFILL_PORT",
    "PREFILLER_HEADER",
    "RETRIABLE_HEADER",
    "SidecarConfig",
    "build_app",
    "parse_body",
    "parse_candidates",
    "parse_host_port",
    "serve",
    "split_host_port",
    "static_allowlist",
]
