"""`core-metrics-extractor`: read an endpoint's scraped page through its engine's adapter.

llm-d maps metric names per engine in this plugin (`engineConfigs`); llmd keeps that mapping in
its engine adapters (`llmd.engines`), so the plugin only chooses the adapter from the endpoint's
labels: `engineLabelKey` (llm-d's default `inference.networking.k8s.io/engine-type`), then llmd's
`llm-d.ai/engine-type` (what `--endpoint ...,engine=` sets; llm-d also falls back to a legacy
label), then `defaultEngine`. Custom `engineConfigs` are rejected at load time: llmd cannot
map arbitrary metric names, and silently ignoring them would mis-read the endpoints.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.engines import DEFAULT_ENGINE, ENGINE_TYPE_LABEL, EngineName
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointSpec

__all__ = ["CoreMetricsExtractor"]


class CoreMetricsExtractor:
    type: ClassVar[str] = "core-metrics-extractor"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        engine_label_key: str = Field("inference.networking.k8s.io/engine-type", min_length=1)
        default_engine: EngineName = DEFAULT_ENGINE
        engine_configs: list[dict[str, Any]] = Field(default_factory=list)

        @field_validator("engine_configs")
        @classmethod
        def _no_custom_mapping(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if value:
                raise ValueError(
                    "custom engine metric mappings are not supported: llmd maps each engine's "
                    "metrics in its engine adapter (engines: vllm, sglang); label endpoints with "
                    "the engine instead")
            return value

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def engine_of(self, spec: EndpointSpec) -> str:
        labels = spec.labels
        return (labels.get(self.params.engine_label_key) or labels.get(ENGINE_TYPE_LABEL)
                or self.params.default_engine)
