"""The loader's cross-replica sections: the syncer, its cadence, and peer discovery.

llm-d v1 writes `dataLayer.crossReplica.{syncerPluginRef, syncInterval, publishTimeout}` and
`dataLayer.discovery.peers.pluginRef`; v1alpha1 wrote `dataLayer.crossReplicaSyncerPluginRef`,
`crossReplicaSyncInterval`, `crossReplicaPublishTimeout` and `dataLayer.peerDiscovery.pluginRef`.
Both load, whatever the apiVersion; one config giving both shapes of the same thing is an
error. `publishTimeout` bounds how long a starting replica waits for one peer's snapshot to
complete once it began (the only publication here that can wait on a peer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llmd.config import parse_duration_s
from llmd.epp._config_datalayer import _ref
from llmd.epp._config_models import EndpointPickerConfigFile, PluginRefSpec
from llmd.epp._config_plugins import ConfigPlugins, Fail
from llmd.epp.plugins.base import CrossReplicaSyncer, PeerDiscovery
from llmd.epp.plugins.registry import CROSS_REPLICA_SYNCER, PEER_DISCOVERY
from llmd.epp.plugins.replica.peers import K8sPeerDiscovery

__all__ = ["DEFAULT_PUBLISH_TIMEOUT_S", "DEFAULT_SYNC_INTERVAL_S", "ReplicaSyncConfig",
           "cross_replica"]

log = logging.getLogger("llmd.epp.config")

DEFAULT_SYNC_INTERVAL_S = 0.05
DEFAULT_PUBLISH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ReplicaSyncConfig:
    syncer: CrossReplicaSyncer
    interval_s: float = DEFAULT_SYNC_INTERVAL_S
    publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S
    peer_discovery: PeerDiscovery | None = None


def cross_replica(spec: EndpointPickerConfigFile, plugins: ConfigPlugins
                  ) -> ReplicaSyncConfig | None:
    dl = spec.data_layer
    if dl is None:
        return None
    fail = plugins.fail
    old = {"dataLayer.crossReplicaSyncerPluginRef": dl.cross_replica_syncer_plugin_ref,
           "dataLayer.crossReplicaSyncInterval": dl.cross_replica_sync_interval,
           "dataLayer.crossReplicaPublishTimeout": dl.cross_replica_publish_timeout}
    given = [path for path, value in old.items() if value is not None]
    if dl.cross_replica is not None and given:
        fail(given[0], "give dataLayer.crossReplica (llm-d v1) or the v1alpha1 "
             "crossReplica* fields, not both")
        return None
    if dl.cross_replica is not None:
        at, ref = "dataLayer.crossReplica", dl.cross_replica.syncer_plugin_ref
        interval, timeout = dl.cross_replica.sync_interval, dl.cross_replica.publish_timeout
        paths = [f"{at}.syncerPluginRef", f"{at}.syncInterval", f"{at}.publishTimeout"]
    else:
        ref = dl.cross_replica_syncer_plugin_ref or ""
        interval, timeout = dl.cross_replica_sync_interval, dl.cross_replica_publish_timeout
        paths = list(old)
    peer_ref = _peer_ref(dl.peer_discovery, dl.discovery.peers if dl.discovery else None, fail)
    if not ref:
        if given:
            fail(paths[0], "missing: the interval and timeout belong to a syncer")
        if peer_ref is not None:
            log.warning("%s: peer discovery without a cross-replica syncer has nothing to "
                        "do (add dataLayer.crossReplica.syncerPluginRef)", peer_ref[0])
        return None
    syncer = _ref(ref, paths[0], CROSS_REPLICA_SYNCER, plugins)
    interval_s = _duration(interval, paths[1], DEFAULT_SYNC_INTERVAL_S, fail)
    timeout_s = _duration(timeout, paths[2], DEFAULT_PUBLISH_TIMEOUT_S, fail)
    peers = (_ref(peer_ref[1], peer_ref[0], PEER_DISCOVERY, plugins)
             if peer_ref is not None else None)
    if isinstance(peers, K8sPeerDiscovery) and not peers.params.selector:
        configured = plugins.get(peers.name)
        fail(f"{configured.path if configured else 'plugins'}.parameters.selector",
             "missing: k8s-peer-discovery needs the label selector of the EPP's own pods, "
             "like app=my-epp")
    if syncer is None or interval_s is None or timeout_s is None:
        return None
    return ReplicaSyncConfig(syncer, interval_s, timeout_s, peers)


def _peer_ref(old: PluginRefSpec | None, new: PluginRefSpec | None, fail: Fail
              ) -> tuple[str, str] | None:
    if old is not None and new is not None:
        fail("dataLayer.peerDiscovery", "give dataLayer.discovery.peers (llm-d v1) or "
             "dataLayer.peerDiscovery (v1alpha1), not both")
        return None
    if new is not None:
        return "dataLayer.discovery.peers.pluginRef", new.plugin_ref
    if old is not None:
        return "dataLayer.peerDiscovery.pluginRef", old.plugin_ref
    return None


def _duration(value: str | float | None, path: str, default: float, fail: Fail
              ) -> float | None:
    if value is None:
        return default
    try:
        seconds = parse_duration_s(value)
    except ValueError as exc:
        fail(path, f"{value!r}: {exc}")
        return None
    if seconds <= 0:
        fail(path, f"{value!r}: must be > 0")
        return None
    return seconds
