"""The P/D routing sidecar (`llmd sidecar`): one connector per engine P/D protocol."""

from __future__ import annotations

from llmd.sidecar.allowlist import Allowlist
from llmd.sidecar.app import PREFILLER_HEADER, build_app, serve
from llmd.sidecar.config import ConnectorName, SidecarConfig
from llmd.sidecar.hostport import HostPort, parse_host_port

__all__ = [
    "Allowlist",
    "ConnectorName",
    "HostPort",
    "PREFILLER_HEADER",
    "SidecarConfig",
    "build_app",
    "parse_host_port",
    "serve",
]
