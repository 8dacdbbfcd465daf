"""The EPP's plugins under llm-d's type names, and the one registry table (`PLUGINS`).

The registry is a value passed to the config loader (tests pass their own), never a global
that modules add themselves to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from llmd.epp.plugins.base import (
    DataProducer,
    DataSource,
    Decider,
    Filter,
    MetricsExtractor,
    NoParams,
    Parser,
    Picker,
    Plugin,
    PreRequest,
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
from llmd.epp.plugins.filter.decode import DecodeFilter
from llmd.epp.plugins.filter.decode_engine import DecodeEngineFilter
from llmd.epp.plugins.filter.label_selector import LabelSelectorFilter
from llmd.epp.plugins.filter.prefill import PrefillFilter
from llmd.epp.plugins.keys import DECODE_PICK, PREFIX_MATCH, BlockGrid, PrefixMatch
from llmd.epp.plugins.parser.openai import OpenAIParser
from llmd.epp.plugins.parser.passthrough import PassthroughParser
from llmd.epp.plugins.picker.max_score import MaxScorePicker
from llmd.epp.plugins.picker.random_pick import RandomPicker
from llmd.epp.plugins.picker.weighted_random import WeightedRandomPicker
from llmd.epp.plugins.producer.approx_prefix import ApproxPrefixCacheProducer
from llmd.epp.plugins.profile.disagg import DisaggProfileHandler
from llmd.epp.plugins.profile.pd import PdProfileHandler
from llmd.epp.plugins.profile.single import SingleProfileHandler
from llmd.epp.plugins.saturation.utilization import UtilizationDetector
from llmd.epp.plugins.scorer.kv_cache_utilization import KvCacheUtilizationScorer
from llmd.epp.plugins.scorer.load_aware import LoadAwareScorer
from llmd.epp.plugins.scorer.lora_affinity import LoraAffinityScorer
from llmd.epp.plugins.scorer.no_hit_lru import NoHitLruScorer
from llmd.epp.plugins.scorer.prefix_cache import PrefixCacheScorer
from llmd.epp.plugins.scorer.queue import QueueScorer
from llmd.epp.plugins.scorer.running_requests_size import RunningRequestsSizeScorer
from llmd.epp.plugins.scorer.session_affinity import SessionAffinityScorer

PluginRegistry = Mapping[str, type[Any]]
"""Plugin type → class; each class has `type`, `Params` and `__init__(name, params)`."""

PLUGINS: PluginRegistry = MappingProxyType(
    {
        cls.type: cls
        for cls in (
            SingleProfileHandler,
            DisaggProfileHandler,
            PdProfileHandler,
            PrefixBasedPdDecider,
            AlwaysDisaggPdDecider,
            DecodeFilter,
            DecodeEngineFilter,
            PrefillFilter,
            LabelSelectorFilter,
            QueueScorer,
            KvCacheUtilizationScorer,
            RunningRequestsSizeScorer,
            LoadAwareScorer,
            PrefixCacheScorer,
            SessionAffinityScorer,
            LoraAffinityScorer,
            NoHitLruScorer,
            MaxScorePicker,
            RandomPicker,
            WeightedRandomPicker,
            ApproxPrefixCacheProducer,
            UtilizationDetector,
            MetricsDataSource,
            CoreMetricsExtractor,
            OpenAIParser,
            PassthroughParser,
        )
    }
)

__all__ = [
    "AlwaysDisaggPdDecider",
    "ApproxPrefixCacheProducer",
    "BlockGrid",
    "CoreMetricsExtractor",
    "DECODE_PICK",
    "DataProducer",
    "DataSource",
    "Decider",
    "DecodeEngineFilter",
    "DecodeFilter",
    "DisaggProfileHandler",
    "Filter",
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
    "PLUGINS",
    "PREFIX_MATCH",
    "Parser",
    "PassthroughParser",
    "PdProfileHandler",
    "Picker",
    "Plugin",
    "PluginRegistry",
    "PreRequest",
    "PrefillFilter",
    "PrefixBasedPdDecider",
    "PrefixCacheScorer",
    "PrefixMatch",
    "ProfileHandler",
    "ProfileRefs",
    "ProfileResult",
    "QueueScorer",
    "RandomPicker",
    "ResponseHeaderHook",
    "RunningRequestsSizeScorer",
    "SaturationDetector",
    "SchedulingResult",
    "Scorer",
    "SessionAffinityScorer",
    "SingleProfileHandler",
    "UtilizationDetector",
    "WeightedRandomPicker",
]
