"""Plain-data pools for plugin tests."""

from __future__ import annotations

from collections.abc import Mapping

from llmd.engines import EndpointMetrics, LoraState
from llmd.epp import Endpoint, EndpointSpec, InferenceRequest, PoolSnapshot

NOW = 1000.0


def ep(port: int, *, waiting: int = 0, running: int = 0, kv: float = 0.0,
       labels: Mapping[str, str] | None = None, lora: LoraState | None = None,
       age_s: float | None = 0.0, name: str | None = None) -> Endpoint:
    spec = EndpointSpec("10.0.0.1", port, dict(labels or {}), name)
    metrics = EndpointMetrics(waiting=waiting, running=running, kv_usage=kv, lora=lora)
    return Endpoint(spec.id, spec, metrics, None if age_s is None else NOW - age_s)


def pool(*endpoints: Endpoint, generation: int = 0) -> PoolSnapshot:
    return PoolSnapshot(tuple(endpoints), NOW, generation)


def req(model: str = "m", prompt: str = "", **headers: str) -> InferenceRequest:
    return InferenceRequest("r1", model=model, prompt=prompt,
                            headers={k.replace("_", "-"): v for k, v in headers.items()})
