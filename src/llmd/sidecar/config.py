"""`llmd sidecar` settings (flags map 1:1 onto these fields)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.engines import ENGINES, EngineAdapter, get_adapter
from llmd.sidecar.hostport import split_host_port

__all__ = ["LLMD_PREFILL_PORT", "ConnectorName", "PoolGroup", "SidecarConfig", "connector_adapter"]

ConnectorName = Literal["nixlv2", "sglang"]
PoolGroup = Literal["inference.networking.k8s.io", "inference.networking.x-k8s.io"]
LLMD_PREFILL_PORT = 8000
"""The llm-d convention: a prefill pod's engine listens on 8000 (the decode pod's sidecar too)."""
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?"
                            r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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
    prefill_allowlist: tuple[str, ...] = Field(
        (), description="with enable_ssrf_protection: `HOST:PORT` allows exactly that target; "
                        "a bare `HOST` allows it on known_prefill_ports only")
    inference_pool: str | None = Field(
        None, description="namespace/name of the InferencePool whose pods may be prefill targets "
                          "(with enable_ssrf_protection)")
    pool_group: PoolGroup = "inference.networking.k8s.io"
    kube_api_server: str | None = Field(
        None, description="Kubernetes API URL, no auth (e.g. `kubectl proxy`); "
                          "default: the pod's service account")
    pool_retry_backoff_s: float = Field(1.0, gt=0, description="first retry after a failed "
                                        "pool watch; doubles up to 30 s")
    enable_prefiller_sampling: bool = False
    max_prefill_candidates: int = Field(
        8, ge=1, le=64, description="prefill hosts of x-prefiller-host-port tried at most, "
                                    "in order, when one cannot be reached")
    sglang_bootstrap_port: int = Field(8998, gt=0, lt=65536)
    data_parallel_size: int = Field(1, ge=1, description="prefill DP size: room mod size = rank")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0, description="max silence on an upstream stream")
    prefill_timeout_s: float = Field(600.0, gt=0)
    max_connections: int = Field(1024, gt=0)

    @field_validator("prefill_allowlist")
    @classmethod
    def _host_or_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            split_host_port(entry)  # ValueError names the entry
        return value

    @field_validator("inference_pool")
    @classmethod
    def _namespace_slash_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        namespace, sep, name = value.partition("/")
        if not sep or not _DNS_LABEL.fullmatch(namespace) or not _DNS_SUBDOMAIN.fullmatch(name):
            raise ValueError(f"{value!r} is not namespace/name (e.g. llm-d/qwen-pool)")
        return value

    @property
    def pool_ref(self) -> tuple[str, str] | None:
        """(namespace, name) of the pool the allowlist follows, or None when it follows none."""
        if not self.enable_ssrf_protection or self.inference_pool is None:
            return None
        namespace, _, name = self.inference_pool.partition("/")
        return namespace, name

    @property
    def known_prefill_ports(self) -> tuple[int, ...]:
        """Ports a bare `--prefill-allow HOST` allows: llm-d's prefill port 8000 and the
        `default_port` of the engine whose P/D protocol this connector speaks."""
        ports = {LLMD_PREFILL_PORT, connector_adapter(self.kv_connector).default_port}
        return tuple(sorted(ports))


def connector_adapter(connector: str) -> EngineAdapter:
    """The engine adapter whose `sidecar_connector` is `connector` (ValueError if none)."""
    for name in ENGINES:
        adapter = get_adapter(name)
        if adapter.sidecar_connector == connector:
            return adapter
    raise ValueError(f"no engine adapter speaks P/D connector {connector!r}")
