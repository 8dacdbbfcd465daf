"""The loader's `llm-d.ai/v1` sections and the v1alpha1 → v1 renames.

- Both apiVersions load, and either shape of a renamed field loads under either (as llm-d's
  converter does); a v1alpha1 file gets one deprecation warning naming each change to make
  (`deprecation_notes`). One config giving both shapes of the same field is an error.
- `featureGates`: the gates llm-d knows; an unknown one is an error listing them.
  `flowControl` is checked with the flow-control section; `experimentalPlugins` is accepted
  (llmd gates no plugin); `prepareDataPlugins` and `dataLayer` are GIE-era gates whose
  behaviour is now always on, accepted with a warning.
- `requestHandler.parsers` (v1alpha1: `parser.pluginRef`): llmd runs one parser; unset means
  `openai-parser` (llm-d's default list adds parsers for APIs llmd does not route).
- `dataLayer.discovery.endpoints.pluginRef` (v1alpha1: `dataLayer.discovery.pluginRef`): the
  pool's endpoint discovery plugin (`file-discovery`).
- `peakPrefillThroughput`: llm-d's guides set it on `prefix-cache-affinity-filter` only; an
  `inflight-load-producer` without its own drains in-flight tokens at that value
  (`share_prefill_rates`), so both agree on how long an endpoint's backlog lasts.
"""

from __future__ import annotations

import logging

from llmd.epp._config_datalayer import _ref
from llmd.epp._config_models import EndpointPickerConfigFile, PluginRefSpec
from llmd.epp._config_plugins import ConfigPlugins, Fail
from llmd.epp.plugins._throughput import PrefillThroughput
from llmd.epp.plugins.base import EndpointDiscovery
from llmd.epp.plugins.filter.prefix_cache_affinity import PrefixCacheAffinityFilter
from llmd.epp.plugins.producer.inflight_load import InflightLoadProducer
from llmd.epp.plugins.registry import ENDPOINT_DISCOVERY
from llmd.epp.plugins.scorer.token_load import TokenLoadScorer

__all__ = ["FEATURE_GATES", "check_feature_gates", "deprecation_notes", "endpoint_discovery",
           "parser_ref", "share_prefill_rates"]

log = logging.getLogger("llmd.epp.config")

FEATURE_GATES = {
    "flowControl": "request queueing (the flowControl section)",
    "experimentalPlugins": "alpha plugins (llmd gates none: accepted, no effect)",
    "prepareDataPlugins": "GIE-era: data producers are now always wired (no effect)",
    "dataLayer": "GIE-era: the data layer is now always on (no effect)",
}
"""Feature gates llm-d knows of → what they turn on."""

_LEGACY_GATES = ("prepareDataPlugins", "dataLayer")


def deprecation_notes(spec: EndpointPickerConfigFile) -> list[str]:
    """What to change for `llm-d.ai/v1`: the fields this file writes in v1alpha1's shape."""
    notes = []
    if spec.parser is not None:
        notes.append("parser.pluginRef → requestHandler.parsers: [{pluginRef: ...}]")
    dl = spec.data_layer
    if dl is not None:
        if dl.discovery is not None and dl.discovery.plugin_ref is not None:
            notes.append("dataLayer.discovery.pluginRef → dataLayer.discovery.endpoints.pluginRef")
        if dl.cross_replica_syncer_plugin_ref is not None:
            notes.append("dataLayer.crossReplicaSyncerPluginRef → "
                         "dataLayer.crossReplica.syncerPluginRef")
        if dl.cross_replica_sync_interval is not None:
            notes.append("dataLayer.crossReplicaSyncInterval → dataLayer.crossReplica.syncInterval")
        if dl.cross_replica_publish_timeout is not None:
            notes.append("dataLayer.crossReplicaPublishTimeout → "
                         "dataLayer.crossReplica.publishTimeout")
        if dl.peer_discovery is not None:
            notes.append("dataLayer.peerDiscovery → dataLayer.discovery.peers")
    for gate in spec.feature_gates:
        if gate in _LEGACY_GATES:
            notes.append(f"featureGates: remove {gate} ({FEATURE_GATES[gate]})")
    return notes


def check_feature_gates(spec: EndpointPickerConfigFile, fail: Fail) -> None:
    known = ", ".join(FEATURE_GATES)
    seen: set[str] = set()
    for i, gate in enumerate(spec.feature_gates):
        if gate not in FEATURE_GATES:
            fail(f"featureGates[{i}]", f"{gate!r} is not a feature gate (known: {known})")
        elif gate in seen:
            fail(f"featureGates[{i}]", f"{gate!r} is given twice")
        seen.add(gate)


def parser_ref(spec: EndpointPickerConfigFile, fail: Fail) -> tuple[str, str] | None:
    """(path, pluginRef) of the configured parser; None: the default (or a reported
    problem)."""
    handler = spec.request_handler
    parsers = handler.parsers if handler is not None else None
    if parsers is not None and spec.parser is not None:
        fail("parser", "give requestHandler.parsers (llm-d v1) or parser (v1alpha1), not both")
        return None
    if spec.parser is not None:
        return "parser.pluginRef", spec.parser.plugin_ref
    if not parsers:
        return None
    if len(parsers) > 1:
        fail("requestHandler.parsers", "llmd runs one parser (OpenAI bodies), got "
             + ", ".join(p.plugin_ref for p in parsers))
        return None
    return "requestHandler.parsers[0].pluginRef", parsers[0].plugin_ref


def endpoint_discovery(spec: EndpointPickerConfigFile, plugins: ConfigPlugins
                       ) -> EndpointDiscovery | None:
    dl = spec.data_layer
    discovery = dl.discovery if dl is not None else None
    if discovery is None:
        return None
    new: PluginRefSpec | None = discovery.endpoints
    if new is not None and discovery.plugin_ref is not None:
        plugins.fail("dataLayer.discovery.pluginRef", "give dataLayer.discovery.endpoints."
                     "pluginRef (llm-d v1) or dataLayer.discovery.pluginRef (v1alpha1), not both")
        return None
    if new is not None:
        return _ref(new.plugin_ref, "dataLayer.discovery.endpoints.pluginRef",
                    ENDPOINT_DISCOVERY, plugins)
    if discovery.plugin_ref is not None:
        return _ref(discovery.plugin_ref, "dataLayer.discovery.pluginRef", ENDPOINT_DISCOVERY,
                    plugins)
    return None


def share_prefill_rates(plugins: ConfigPlugins) -> None:
    """Hand `inflight-load-producer`s without their own `peakPrefillThroughput` the value the
    config sets on its (first) affinity filter, else on its (first) token-load scorer."""
    given: list[PrefillThroughput] = []
    for kind in (PrefixCacheAffinityFilter, TokenLoadScorer):
        for c in plugins:
            p = c.plugin
            if isinstance(p, kind) and "peak_prefill_throughput" in p.params.model_fields_set \
                    and p.params.peak_prefill_throughput is not None:
                given.append(p.params.peak_prefill_throughput)
    if not given:
        return
    for c in plugins:
        if isinstance(c.plugin, InflightLoadProducer):
            c.plugin.adopt_rates(given[0])
