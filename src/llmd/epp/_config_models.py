"""The EndpointPickerConfig file as pydantic models (shape only; cross-checks in config.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp._config_flow import FlowControlSpec

API_VERSION = "llm-d.ai/v1"
DEPRECATED_API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")


class PluginSpec(LlmdModel):
    """`plugins[]`: `name` defaults to `type`."""

    type: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1)
    parameters: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return self.name or self.type


class ProfilePluginRef(LlmdModel):
    plugin_ref: str
    weight: float | None = Field(default=None, ge=0)


class ProfileSpec(LlmdModel):
    """`schedulingProfiles[]`; `fallbackProfile` (v1alpha1) names the profile that runs when
    this one leaves no candidate."""

    name: str = Field(min_length=1)
    plugins: list[ProfilePluginRef] = Field(default_factory=list)
    fallback_profile: str | None = Field(default=None, min_length=1)


class PluginRefSpec(LlmdModel):
    plugin_ref: str


class DataSourceSpec(LlmdModel):
    """`dataLayer.sources[]`: a data source and the extractors that read what it fetches."""

    plugin_ref: str
    extractors: list[PluginRefSpec] = Field(default_factory=list)


class CrossReplicaSpec(LlmdModel):
    """`dataLayer.crossReplica` (llm-d v1): the syncer and its cadence (durations like `100ms`
    or seconds)."""

    syncer_plugin_ref: str
    sync_interval: str | float | None = None
    publish_timeout: str | float | None = None


class DiscoverySpec(LlmdModel):
    """`dataLayer.discovery`: `endpoints.pluginRef` (llm-d v1; v1alpha1 wrote
    `discovery.pluginRef`) names the pool's endpoint discovery (`file-discovery`), added to
    `llmd epp --endpoint`/`--endpoints-file`; `peers` the EPP replicas' discovery."""

    endpoints: PluginRefSpec | None = None
    plugin_ref: str | None = None
    peers: PluginRefSpec | None = None


class DataLayerSpec(LlmdModel):
    """`sources` None: the declared or default metrics source (`[]`: no scraping). The
    cross-replica fields come in llm-d v1's shape (`crossReplica`, `discovery.peers`) or
    v1alpha1's (`crossReplicaSyncerPluginRef`, `crossReplicaSyncInterval`,
    `crossReplicaPublishTimeout`, `peerDiscovery`)."""

    sources: list[DataSourceSpec] | None = None
    cross_replica: CrossReplicaSpec | None = None
    cross_replica_syncer_plugin_ref: str | None = None
    cross_replica_sync_interval: str | float | None = None
    cross_replica_publish_timeout: str | float | None = None
    peer_discovery: PluginRefSpec | None = None
    discovery: DiscoverySpec | None = None


class RequestHandlerSpec(LlmdModel):
    """`requestHandler` (llm-d v1): the request parsers; v1alpha1 wrote `parser.pluginRef`."""

    parsers: list[PluginRefSpec] | None = None


class ObjectiveSpec(LlmdModel):
    """An InferenceObjective: requests naming it in `x-gateway-inference-objective` get its
    priority (higher first; < 0 is sheddable). llmd extension: llm-d reads these from CRDs."""

    name: str = Field(min_length=1)
    priority: int = 0


class ObjectivesFile(LlmdModel):
    objectives: list[ObjectiveSpec]


class EndpointPickerConfigFile(LlmdModel):
    api_version: Literal["llm-d.ai/v1alpha1", "llm-d.ai/v1",
                         "inference.networking.x-k8s.io/v1alpha1"]
    kind: Literal["EndpointPickerConfig"]
    feature_gates: list[str] = Field(default_factory=list)
    plugins: list[PluginSpec] = Field(default_factory=list)
    scheduling_profiles: list[ProfileSpec] = Field(default_factory=list)
    saturation_detector: PluginRefSpec | None = None
    data_layer: DataLayerSpec | None = None
    parser: PluginRefSpec | None = None
    request_handler: RequestHandlerSpec | None = None
    flow_control: FlowControlSpec | None = None
    objectives: list[ObjectiveSpec] = Field(default_factory=list)
