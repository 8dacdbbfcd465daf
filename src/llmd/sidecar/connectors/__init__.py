"""P/D connectors by name: `nixlv2` (vLLM NIXL v2) and `sglang` (SGLang bootstrap rooms)."""

from __future__ import annotations

from llmd.sidecar.config import SidecarConfig
from llmd.sidecar.connectors.base import Connector, PdRequest
from llmd.sidecar.connectors.nixlv2 import NixlV2Connector
from llmd.sidecar.connectors.sglang import SGLangConnector, bootstrap_room

__all__ = [
    "Connector",
    "NixlV2Connector",
    "PdRequest",
    "SGLangConnector",
    "bootstrap_room",
    "build_connector",
]


def build_connector(cfg: SidecarConfig) -> Connector:
    """The connector named by `cfg.kv_connector` (validated by the config model)."""
    if cfg.kv_connector == SGLangConnector.name:
        return SGLangConnector(cfg.sglang_bootstrap_port, cfg.data_parallel_size)
    return NixlV2Connector()
