"""Engine adapters: the one place where vLLM and SGLang differ.

`get_adapter("vllm")` / `get_adapter("sglang")`; `ENGINES` lists the names.
"""

from __future__ import annotations

from types import MappingProxyType

from llmd.engines._sglang_kv import SGLangBlockHasher, SGLangKvEvents, SGLangKvEventsConfig
from llmd.engines._vllm_kv import VllmBlockHasher, VllmKvEvents, VllmKvEventsConfig, vllm_none_hash
from llmd.engines.base import (
    ENGINE_TYPE_LABEL,
    ROLE_LABEL,
    EndpointMetrics,
    EngineAdapter,
    EngineName,
    KvEventsSpec,
    LoraSpec,
    LoraState,
    MetricNames,
    MultinodeSpec,
    PdProtocol,
    PrefillCounters,
    Probe,
    Probes,
    ReportedPd,
    Role,
    ServerAnswers,
    ServeSpec,
    TracingSpec,
)
from llmd.engines.identify import (
    MODELS_ROUTE,
    ServerIdentity,
    identify_server,
    metric_families,
    probe_routes,
    served_models,
)
from llmd.engines.kv_events import (
    DEFAULT_KV_EVENTS_PORT,
    EngineBlockHasher,
    HashForm,
    KvEventsDialect,
    KvEventsSettings,
    SubscribeSpec,
    kv_topic,
    offset_endpoint_port,
    parse_kv_topic,
)
from llmd.engines.page import MetricsPage
from llmd.engines.sglang import SGLangAdapter
from llmd.engines.vllm import VllmAdapter
from llmd.errors import EngineError

ADAPTERS: MappingProxyType[str, EngineAdapter] = MappingProxyType(
    {"vllm": VllmAdapter(), "sglang": SGLangAdapter()}
)
ENGINES: tuple[EngineName, ...] = ("vllm", "sglang")
DEFAULT_ENGINE: EngineName = "vllm"  # llm-d's default for unlabelled pods


def engine_for_command(argv: list[str] | tuple[str, ...]) -> EngineName | None:
    """The engine a hand-written command runs (`vllm serve`, `python3 -m sglang.launch_server`,
    or either inside a `sh -c` script), or None when no adapter's marker appears in it."""
    words = {w for arg in argv for w in arg.replace(";", " ").split()}
    for name in ENGINES:
        if words & set(ADAPTERS[name].command_markers):
            return name
    return None


def get_adapter(name: str) -> EngineAdapter:
    """The adapter for `name`; `EngineError` naming the allowed values otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise EngineError(
            f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}"
        ) from None


__all__ = [
    "ADAPTERS",
    "DEFAULT_ENGINE",
    "DEFAULT_KV_EVENTS_PORT",
    "ENGINES",
    "ENGINE_TYPE_LABEL",
    "EndpointMetrics",
    "EngineAdapter",
    "EngineBlockHasher",
    "EngineName",
    "HashForm",
    "KvEventsDialect",
    "KvEventsSettings",
    "KvEventsSpec",
    "LoraSpec",
    "LoraState",
    "MODELS_ROUTE",
    "MetricNames",
    "MetricsPage",
    "MultinodeSpec",
    "PdProtocol",
    "PrefillCounters",
    "Probe",
    "Probes",
    "ROLE_LABEL",
    "ReportedPd",
    "Role",
    "SGLangAdapter",
    "SGLangBlockHasher",
    "SGLangKvEvents",
    "SGLangKvEventsConfig",
    "ServeSpec",
    "ServerAnswers",
    "ServerIdentity",
    "SubscribeSpec",
    "TracingSpec",
    "VllmAdapter",
    "VllmBlockHasher",
    "VllmKvEvents",
    "VllmKvEventsConfig",
    "engine_for_command",
    "get_adapter",
    "identify_server",
    "kv_topic",
    "metric_families",
    "offset_endpoint_port",
    "parse_kv_topic",
    "probe_routes",
    "served_models",
    "vllm_none_hash",
]
