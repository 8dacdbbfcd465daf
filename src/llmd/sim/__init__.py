"""`llmd sim`: a simulated model server speaking vLLM's or SGLang's dialect.

OpenAI completions and chat (streaming and not), the engine's own extra routes and /metrics
names (from its adapter), a paged KV cache with prefix reuse, continuous batching, a
latency model and the engine's KV events (`kv_events_config`). `running_sim(cfg)` serves
in-process; `serve(cfg, stop)` backs the CLI.
"""

from __future__ import annotations

from llmd.sim.app import SERVED_BY_HEADER, build_app
from llmd.sim.blocks import Allocation, BlockPool
from llmd.sim.config import FAILURE_KINDS, FailureKind, SimConfig
from llmd.sim.engine import Engine, GenRequest, Sequence, TokenEvent
from llmd.sim.kv_events import KvEventPublisher, KvEventRecorder
from llmd.sim.metrics import SimMetrics
from llmd.sim.server import RunningSim, build_state, running_sim, serve

__all__ = [
    "Allocation",
    "BlockPool",
    "Engine",
    "FAILURE_KINDS",
    "FailureKind",
    "GenRequest",
    "KvEventPublisher",
    "KvEventRecorder",
    "RunningSim",
    "SERVED_BY_HEADER",
    "Sequence",
    "SimConfig",
    "SimMetrics",
    "TokenEvent",
    "build_app",
    "build_state",
    "running_sim",
    "serve",
]
