"""What every handler of one simulated server shares (one instance per server, no globals)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from llmd.engines import EngineAdapter
from llmd.kvcache import Tokenizer
from llmd.sim._pd import PdSim
from llmd.sim.config import SimConfig
from llmd.sim.engine import Engine
from llmd.sim.kv_events import KvEventPublisher
from llmd.sim.metrics import SimMetrics


@dataclass(slots=True)
class SimState:
    cfg: SimConfig
    adapter: EngineAdapter
    tokenizer: Tokenizer
    registry: CollectorRegistry
    metrics: SimMetrics
    engine: Engine
    rng: random.Random
    pd: PdSim
    kv_events: KvEventPublisher | None = None
    """The KV-event publisher (`--kv-events-config` with publishing on), else None."""
    served_by: str = ""
    """`host:port` this server listens on; set once bound, sent as `x-llmd-served-by`."""
    ready: bool = True
    started: int = field(default_factory=lambda: int(time.time()))


STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
