"""`llmd sidecar` settings (flags map 1:1 onto these fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmd.config import LlmdModel

__all__ = ["ConnectorName", "SidecarConfig"]

ConnectorName = Literal["nixlv2", "sglang"]


class SidecarConfig(LlmdModel):
    """The P/D routing sidecar in front of one decode engine."""

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, lt=65536, description="listen port; 0 picks a free one")
    model_server_host: str = "127.0.0.1"
    model_server_port: int = Field(8200, gt=0, lt=65536)
    kv_connector: ConnectorName = "nixlv2"
    prefill_max_retries: int = Field(0, ge=0, le=10)
    prefill_retry_backoff_s: float = Field(0.2, ge=0)
    enable_ssrf_protection: bool = False
    prefill_allowlist: tuple[str, ...] = ()
    enable_prefiller_sampling: bool = False
    sglang_bootstrap_port: int = Field(8998, gt=0, lt=65536)
    data_parallel_size: int = Field(1, ge=1, description="prefill DP size: room mod size = rank")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0, description="max silence on an upstream stream")
    prefill_timeout_s: float = Field(600.0, gt=0)
    max_connections: int = Field(1024, gt=0)
