"""`peakPrefillThroughput`: how many prompt tokens per second an endpoint prefills, shared by
the plugins that take it (`prefix-cache-affinity-filter`, `token-load-scorer`,
`inflight-load-producer`).

llm-d takes one number for the pool; llmd also takes it per engine type and per endpoint, so a
mixed vLLM + SGLang pool (SGLang prefills about twice as fast on the same GPUs) is loaded by
what each endpoint can do. Accepted shapes:

```yaml
peakPrefillThroughput: 15928                      # every endpoint (llm-d)
peakPrefillThroughput: {vllm: 15928, sglang: 30720}   # per engine type (llm-d.ai/engine-type)
peakPrefillThroughput:
  default: 15928                                  # endpoints nothing below matches
  engines: {sglang: 30720}
  labels:                                         # first match wins
  - {matchLabels: {gpu: h200}, value: 41000}
  endpoints: {"10.0.0.7:8000": 35200}             # by ip:port, or by name (namespace/pod)
```

An endpoint's value is, first found: its `endpoints` entry, the first `labels` rule whose labels
it has, its engine's `engines` entry, `default` (llm-d's 15,928 tok/s: Qwen3-32B, TP2, H100,
vLLM). `llmd calibrate` measures an endpoint and prints these lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from pydantic import Field, PositiveFloat, model_validator

from llmd.config import LlmdModel
from llmd.engines import ENGINES, EngineName
from llmd.epp.datastore import Endpoint

__all__ = ["DEFAULT_PEAK_PREFILL_THROUGHPUT", "LabelThroughput", "PrefillThroughput"]

DEFAULT_PEAK_PREFILL_THROUGHPUT = 15928.0
"""llm-d's plugin default, tokens/s: Qwen3-32B on 2×H100 (TP2) with vLLM."""


class LabelThroughput(LlmdModel):
    match_labels: dict[str, str] = Field(min_length=1)
    value: PositiveFloat


class PrefillThroughput(LlmdModel):
    """Prefill tokens per second, per endpoint (see the module docstring for the shapes)."""

    default: PositiveFloat = DEFAULT_PEAK_PREFILL_THROUGHPUT
    engines: dict[EngineName, PositiveFloat] = Field(default_factory=dict)
    labels: list[LabelThroughput] = Field(default_factory=list)
    endpoints: dict[str, PositiveFloat] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value  # rejected by the field types, not read as 1
        if isinstance(value, int | float):
            return {"default": value}
        if isinstance(value, dict) and value and set(value) <= {*ENGINES, "default"} \
                and set(value) != {"default"}:
            rest = dict(value)
            default = rest.pop("default", DEFAULT_PEAK_PREFILL_THROUGHPUT)
            return {"default": default, "engines": rest}
        return value

    @property
    def uniform(self) -> bool:
        """Whether every endpoint gets `default` (llm-d's single number)."""
        return not (self.engines or self.labels or self.endpoints)

    def of(self, ep: Endpoint) -> float:
        """Tokens per second for `ep`."""
        if self.endpoints:
            own = self.endpoints.get(ep.id)
            if own is None and ep.spec.name:
                own = self.endpoints.get(ep.spec.name)
            if own is not None:
                return own
        labels = ep.labels
        for rule in self.labels:
            if all(labels.get(k) == v for k, v in rule.match_labels.items()):
                return rule.value
        engines = cast(Mapping[str, float], self.engines)  # keyed by engine names
        return engines.get(ep.spec.engine, self.default)
