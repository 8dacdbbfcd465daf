"""Several EPP replicas (`routing.epp.replicas` > 1): kept apart, kept available, and wired to
find each other and share what each one routes.

With N > 1 the render gives the EPP:

- pods spread over nodes (preferred pod anti-affinity on `kubernetes.io/hostname`) and zones
  (a `topology.kubernetes.io/zone` spread constraint, `ScheduleAnyway`), so one node or zone
  takes down at most its share; preferred, not required, so a one-node cluster still runs N;
- a PodDisruptionBudget with `maxUnavailable: 1`: a drain takes one replica at a time, and the
  budget stays right when the Deployment is scaled by hand or by an autoscaler (a
  `minAvailable: N-1` frozen at render time would block every eviction after a scale-down to
  N-1, and allow too many after a scale-up); unhealthy replicas may always be evicted (they
  serve nothing and hold no state another replica lacks);
- a rolling update that starts a new replica before stopping an old one (`maxSurge: 1,
  maxUnavailable: 0`) instead of one EPP's `Recreate`: N replicas are there to never all stop;
- a headless Service `<epp>-peers` (`clusterIP: None`, ready pods only) naming the replicas and
  their sync port, container port `peer-sync`, and `POD_IP` from the downward API, by which a
  replica leaves itself out of its peers;
- in the EndpointPickerConfig, llm-d v1's peer discovery and cross-replica sync: a
  `k8s-peer-discovery` plugin (`selector`: the EPP pods' labels as a label selector string,
  `port`: the sync port) under `dataLayer.peerDiscovery.pluginRef`, and
  `dataLayer.crossReplica: {syncerPluginRef, syncInterval: 100ms}` naming a `zmq-mesh-syncer`
  on the same port (`POD_NAMESPACE` from the downward API tells the discovery where to look).
  The Role already lets the EPP list and watch pods.

N == 1 renders exactly what one EPP always had.
"""

from __future__ import annotations

import copy
from typing import Any

from llmd.deploy._workloads import Names
from llmd.errors import ConfigError

__all__ = ["PEER_DISCOVERY_TYPE", "SYNCER_TYPE", "SYNC_PORT", "SYNC_PORT_NAME",
           "label_selector", "peer_service_name", "replica_objects", "replicated_config", "spread"]

SYNCER_TYPE = "zmq-mesh-syncer"
"""The plugin type of llmd's cross-replica syncer: `dataLayer.crossReplica.syncerPluginRef`."""
SYNC_PORT = 9005
"""The port a replica's syncer listens on and its peers dial (9004 is llm-d's State API)."""
SYNC_PORT_NAME = "peer-sync"
SYNC_INTERVAL = "100ms"
PEER_DISCOVERY_TYPE = "k8s-peer-discovery"
METRICS_SOURCE, METRICS_EXTRACTOR = "metrics-data-source", "core-metrics-extractor"
_CONFIG = "routing.epp.config"
_DNS_LABEL = 63


def peer_service_name(epp: str) -> str:
    """The headless Service of the replicas, a DNS label (at most 63 characters)."""
    suffix = "-peers"
    return f"{epp[:_DNS_LABEL - len(suffix)].rstrip('-')}{suffix}"


def label_selector(labels: dict[str, str]) -> str:
    """Labels as the selector string llm-d's plugin takes: `app=epp,tier=x`."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ref(plugin: dict[str, Any]) -> str:
    return str(plugin.get("name") or plugin.get("type"))


def replicated_config(config: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """`config` with peer discovery and cross-replica sync added where it has none. A
    `k8s-peer-discovery` plugin it already declares gets the missing `selector`/`port`; one
    that selects other pods or another port is an error naming its path."""
    out = copy.deepcopy(config)
    plugins = out.setdefault("plugins", [])
    if not isinstance(plugins, list):
        raise ConfigError(f"{_CONFIG}.plugins: a list, got {plugins!r}")
    wanted: dict[str, dict[str, Any]] = {
        PEER_DISCOVERY_TYPE: {"selector": label_selector(labels), "port": SYNC_PORT},
        SYNCER_TYPE: {"port": SYNC_PORT}}
    errors = []
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or plugin.get("type") not in wanted:
            continue
        where = f"{_CONFIG}.plugins[{i}].parameters"
        given = plugin.setdefault("parameters", {})
        if not isinstance(given, dict):
            errors.append(f"{where}: a mapping, got {given!r}")
            continue
        for key, want in wanted[plugin["type"]].items():
            have = given.setdefault(key, want)
            if have != want:
                errors.append(
                    f"{where}.{key}: {have!r}, but the rendered EPP replicas have {key} "
                    f"{want!r} (their pod labels; their container port and headless Service): "
                    "leave it out or set that")
    if errors:
        raise ConfigError(errors)
    layer = out.get("dataLayer")
    if layer is None:
        # Keep the metrics an EPP scrapes without `dataLayer`: say them explicitly, as llm-d's
        # loader would inject them, so a loader that reads `sources` literally keeps them too.
        layer = out["dataLayer"] = {"sources": [{
            "pluginRef": _declared(plugins, METRICS_SOURCE, {}),
            "extractors": [{"pluginRef": _declared(plugins, METRICS_EXTRACTOR, {})}]}]}
    if not isinstance(layer, dict):
        raise ConfigError(f"{_CONFIG}.dataLayer: a mapping, got {layer!r}")
    if "peerDiscovery" not in layer:
        layer["peerDiscovery"] = {
            "pluginRef": _declared(plugins, PEER_DISCOVERY_TYPE,
                                   {"parameters": wanted[PEER_DISCOVERY_TYPE]})}
    if "crossReplica" not in layer:
        layer["crossReplica"] = {"syncerPluginRef": _declared(plugins, SYNCER_TYPE,
                                                              {"parameters": wanted[SYNCER_TYPE]}),
                                 "syncInterval": SYNC_INTERVAL}
    return out


def _declared(plugins: list[dict[str, Any]], plugin_type: str, fields: dict[str, Any]) -> str:
    """The name of the first plugin of `plugin_type`, appended with `fields` if none is."""
    for plugin in plugins:
        if isinstance(plugin, dict) and plugin.get("type") == plugin_type:
            return _ref(plugin)
    plugins.append({"type": plugin_type, **fields})
    return plugin_type


def spread(labels: dict[str, str]) -> dict[str, Any]:
    """Pod spec fields that keep the replicas on different nodes and zones where possible."""
    selector = {"matchLabels": dict(labels)}
    return {
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": selector,
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}],
    }


def replica_objects(names: Names, epp: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The PodDisruptionBudget and the headless Service of the replicas."""
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
              "metadata": names.meta(epp),
              "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(labels)},
                       "unhealthyPodEvictionPolicy": "AlwaysAllow"}}
    peers = {"apiVersion": "v1", "kind": "Service", "metadata": names.meta(peer_service_name(epp)),
             "spec": {"clusterIP": "None", "publishNotReadyAddresses": False,
                      "selector": dict(labels),
                      "ports": [{"name": SYNC_PORT_NAME, "port": SYNC_PORT,
                                 "targetPort": SYNC_PORT_NAME, "protocol": "TCP"}]}}
    return [budget, peers]
