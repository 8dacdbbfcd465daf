"""Small pieces of Envoy config every part of the bootstrap uses (addresses, durations, limits)."""

from __future__ import annotations

from typing import Any

TYPE = "type.googleapis.com/envoy."
"""The prefix of every `@type` in the bootstrap."""
_BIG = 1_000_000  # circuit-breaker limits: llmd's admission is the EPP, not Envoy's defaults


def breakers() -> dict[str, Any]:
    return {"thresholds": [{"max_connections": _BIG, "max_pending_requests": _BIG,
                            "max_requests": _BIG, "max_retries": _BIG}]}


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def dur(seconds: float) -> str:
    return f"{seconds:.3f}s"


def check_host_port(value: str) -> str:
    """`value` if it is `host:port` (port 1-65535), else ValueError naming it."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value
