"""The EPP's plugins under llm-d's type names, and the one registry (`PLUGINS`): a table per
kind, so mypy checks each class against the interface of every kind it is listed as.

The registry is a value passed to the config loader (tests pass `PLUGINS.extend(...)`), never a
global that modules add themselves to.
"""

from __future__ import annotations

from llmd.epp.plugins.base import (
    Background,
    DataProducer,
    DataSource,
    Decider,
    EndpointDiscovery,
    Filter,
    MetricsExtractor,
    NoParams,
    Parser,
    Picker,
    Plugin,
    PluginContext,
    PreRequest,
    ProducerRef,
    ProducerRefs,
    ProfileHandler,
    ProfileRefs,
    ProfileResult,
    ResponseHeaderHook,
    SaturationDetector,
    SchedulingResult,
    Scorer,
)
from llmd.epp.plugins.datalayer.core_metrics import CoreMetricsExtractor
from llmd.epp.plugins.datalayer.metrics_source import MetricsDataSource
from llmd.epp.plugins.decider.always_disagg import AlwaysDisaggPdDecider
from llmd.epp.plugins.decider.prefix_based import PrefixBasedPdDecider
from llmd.epp.plugins.discovery.file import FileDiscovery
from llmd.epp.plugins.filter.decode import DecodeFilter
from llmd.epp.plugins.filter.decode_engine import DecodeEngineFilter
from llmd.epp.plugins.filter.label_selector import LabelSelectorFilter
from llmd.epp.plugins.filter.prefill import PrefillFilter
from llmd.epp.plugins.filter.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd.epp.plugins.flowcontrol._policy import (
    FairnessPolicy,
    FlowQueueView,
    OrderingPolicy,
    QueueItem,
    UsageLimitPolicy,
)
from llmd.epp.plugins.flowcontrol.edf import EdfOrderingPolicy
from llmd.epp.plugins.flowcontrol.fcfs import FcfsOrderingPolicy
from llmd.epp.plugins.flowcontrol.global_strict import GlobalStrictFairnessPolicy
from llmd.epp.plugins.flowcontrol.round_robin import RoundRobinFairnessPolicy
from llmd.epp.plugins.flowcontrol.static_usage_limit import StaticUsageLimitPolicy
from llmd.epp.plugins.keys import (
    DECODE_PICK,
    INFLIGHT_LOAD,
    PREFIX_MATCH,
    BlockGrid,
    EndpointLoad,
    InflightLoad,
    PrefixMatch,
)
from llmd.epp.plugins.parser.openai import OpenAIParser
from llmd.epp.plugins.parser.passthrough import PassthroughParser
from llmd.epp.plugins.picker.max_score import MaxScorePicker
from llmd.epp.plugins.picker.random_pick import RandomPicker
from llmd.epp.plugins.picker.weighted_random import WeightedRandomPicker
from llmd.epp.plugins.producer.approx_prefix import ApproxPrefixCacheProducer
from llmd.epp.plugins.producer.inflight_load import InflightLoadProducer
from llmd.epp.plugins.producer.precise_prefix import (
    PrecisePrefixCacheProducer,
    PrecisePrefixCacheScorer,
)
from llmd.epp.plugins.profile.disagg import DisaggProfileHandler
from llmd.epp.plugins.profile.disagg_headers import DisaggHeadersHandler, PrefillHeaderHandler
from llmd.epp.plugins.profile.pd import PdProfileHandler
from llmd.epp.plugins.profile.single import SingleProfileHandler
from llmd.epp.plugins.registry import (
    BACKGROUND,
    CROSS_REPLICA_SYNCER,
    DATA_PRODUCER,
    DATA_SOURCE,
    DECIDER,
    ENDPOINT_DISCOVERY,
    FAIRNESS_POLICY,
    FILTER,
    METRICS_EXTRACTOR,
    ORDERING_POLICY,
    PARSER,
    PEER_DISCOVERY,
    PICKER,
    PRE_REQUEST,
    PRODUCER_REFS,
    PROFILE_HANDLER,
    PROFILE_REFS,
    RESPONSE_HEADERS,
    SATURATION_DETECTOR,
    SCORER,
    USAGE_LIMIT_POLICY,
    Kind,
    PluginClass,
    PluginRegistry,
)
from llmd.epp.plugins.replica.peers import K8sPeerDiscovery, StaticPeerDiscovery
from llmd.epp.plugins.replica.syncer import LocalSyncer, ZmqMeshSyncer
from llmd.epp.plugins.saturation.concurrency import ConcurrencyDetector
from llmd.epp.plugins.saturation.utilization import UtilizationDetector
from llmd.epp.plugins.scorer.active_request import ActiveRequestScorer
from llmd.epp.plugins.scorer.kv_cache_utilization import KvCacheUtilizationScorer
from llmd.epp.plugins.scorer.load_aware import LoadAwareScorer
from llmd.epp.plugins.scorer.lora_affinity import LoraAffinityScorer
from llmd.epp.plugins.scorer.no_hit_lru import NoHitLruScorer
from llmd.epp.plugins.scorer.prefix_cache import PrefixCacheScorer
from llmd.epp.plugins.scorer.queue import QueueScorer
from llmd.epp.plugins.scorer.running_requests_size import RunningRequestsSizeScorer
from llmd.epp.plugins.scorer.session_affinity import SessionAffinityScorer
from llmd.epp.plugins.scorer.token_load import TokenLoadScorer

PLUGINS = PluginRegistry(
    PROFILE_HANDLER.table(SingleProfileHandler, DisaggProfileHandler, PdProfileHandler),
    PROFILE_REFS.table(DisaggProfileHandler, PdProfileHandler),
    DECIDER.table(PrefixBasedPdDecider, AlwaysDisaggPdDecider),
    FILTER.table(DecodeFilter, DecodeEngineFilter, PrefillFilter, LabelSelectorFilter,
                 PrefixCacheAffinityFilter, UtilizationDetector, ConcurrencyDetector),
    SCORER.table(QueueScorer, KvCacheUtilizationScorer, RunningRequestsSizeScorer,
                 LoadAwareScorer, PrefixCacheScorer, SessionAffinityScorer, LoraAffinityScorer,
                 NoHitLruScorer, PrecisePrefixCacheScorer, TokenLoadScorer,
                 ActiveRequestScorer),
    PICKER.table(MaxScorePicker, RandomPicker, WeightedRandomPicker),
    DATA_PRODUCER.table(ApproxPrefixCacheProducer, PrecisePrefixCacheProducer,
                        PrecisePrefixCacheScorer, InflightLoadProducer),
    PRE_REQUEST.table(ApproxPrefixCacheProducer, NoHitLruScorer, PrecisePrefixCacheProducer,
                      PrecisePrefixCacheScorer, InflightLoadProducer, DisaggHeadersHandler,
                      PrefillHeaderHandler),
    BACKGROUND.table(PrecisePrefixCacheProducer, PrecisePrefixCacheScorer),
    RESPONSE_HEADERS.table(SessionAffinityScorer),
    SATURATION_DETECTOR.table(UtilizationDetector, ConcurrencyDetector),
    FAIRNESS_POLICY.table(GlobalStrictFairnessPolicy, RoundRobinFairnessPolicy),
    ORDERING_POLICY.table(FcfsOrderingPolicy, EdfOrderingPolicy),
    USAGE_LIMIT_POLICY.table(StaticUsageLimitPolicy),
    DATA_SOURCE.table(MetricsDataSource),
    METRICS_EXTRACTOR.table(CoreMetricsExtractor),
    PARSER.table(OpenAIParser, PassthroughParser),
    CROSS_REPLICA_SYNCER.table(ZmqMeshSyncer, LocalSyncer),
    PEER_DISCOVERY.table(K8sPeerDiscovery, StaticPeerDiscovery),
    ENDPOINT_DISCOVERY.table(FileDiscovery),
    PRODUCER_REFS.table(NoHitLruScorer, PrefixCacheScorer, PrefixBasedPdDecider,
                        PdProfileHandler, InflightLoadProducer, PrefixCacheAffinityFilter),
    defaults={PREFIX_MATCH: ApproxPrefixCacheProducer.type,
              INFLIGHT_LOAD: InflightLoadProducer.type},
    deprecated={PdProfileHandler.type: DisaggProfileHandler.type,
                DisaggHeadersHandler.type: DisaggProfileHandler.type,
                PrefillHeaderHandler.type: DisaggProfileHandler.type},
)
"""Every plugin type llmd implements, by kind (mypy checks each class against its kinds)."""

__all__ = [
    "ActiveRequestScorer",
    "AlwaysDisaggPdDecider",
    "ApproxPrefixCacheProducer",
    "Background",
    "BlockGrid",
    "ConcurrencyDetector",
    "CoreMetricsExtractor",
    "DECODE_PICK",
    "DataProducer",
    "DataSource",
    "Decider",
    "DecodeEngineFilter",
    "DecodeFilter",
    "DisaggHeadersHandler",
    "DisaggProfileHandler",
    "EndpointDiscovery",
    "EndpointLoad",
    "FileDiscovery",
    "Filter",
    "INFLIGHT_LOAD",
    "InflightLoad",
    "InflightLoadProducer",
    "EdfOrderingPolicy",
    "FairnessPolicy",
    "FcfsOrderingPolicy",
    "Filter",
    "FlowQueueView",
    "GlobalStrictFairnessPolicy",
    "Kind",
    "KvCacheUtilizationScorer",
    "LabelSelectorFilter",
    "LoadAwareScorer",
    "LoraAffinityScorer",
    "MaxScorePicker",
    "MetricsDataSource",
    "MetricsExtractor",
    "NoHitLruScorer",
    "NoParams",
    "OpenAIParser",
    "OrderingPolicy",
    "PLUGINS",
    "PREFIX_MATCH",
    "Parser",
    "PassthroughParser",
    "PdProfileHandler",
    "Picker",
    "Plugin",
    "PluginClass",
    "PluginContext",
    "PluginRegistry",
    "PreRequest",
    "PrecisePrefixCacheProducer",
    "PrecisePrefixCacheScorer",
    "PrefillFilter",
    "PrefillHeaderHandler",
    "PrefixBasedPdDecider",
    "PrefixCacheAffinityFilter",
    "PrefixCacheScorer",
    "PrefixMatch",
    "ProducerRef",
    "ProducerRefs",
    "ProfileHandler",
    "ProfileRefs",
    "ProfileResult",
    "QueueItem",
    "QueueScorer",
    "RandomPicker",
    "ResponseHeaderHook",
    "RoundRobinFairnessPolicy",
    "RunningRequestsSizeScorer",
    "SaturationDetector",
    "SchedulingResult",
    "Scorer",
    "SessionAffinityScorer",
    "SingleProfileHandler",
    "TokenLoadScorer",
    "StaticUsageLimitPolicy",
    "UsageLimitPolicy",
    "UtilizationDetector",
    "WeightedRandomPicker",
]
