"""llm-d's cross-replica config (v1 and v1alpha1 shapes), peer discovery and their errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from llmd.epp import EppSettings, load_config, server
from llmd.epp.discovery_k8s import KubeApi
from llmd.epp.plugins.replica.peers import K8sPeerDiscovery, StaticPeerDiscovery
from llmd.epp.plugins.replica.syncer import LocalSyncer, ZmqMeshSyncer
from llmd.errors import ConfigError

V1 = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- name: sync
  type: zmq-mesh-syncer
  parameters: {port: 9100, peerExpiry: 2s}
- name: peer-disc
  type: k8s-peer-discovery
  parameters: {selector: "app=my-epp", port: "9100"}
dataLayer:
  crossReplica:
    syncerPluginRef: sync
    syncInterval: 100ms
    publishTimeout: 3s
  discovery:
    peers:
      pluginRef: peer-disc
"""

V1ALPHA1 = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: local-syncer
- type: static-peer-discovery
  parameters: {peers: ["10.0.0.2:9005"]}
dataLayer:
  crossReplicaSyncerPluginRef: local-syncer
  crossReplicaSyncInterval: 500ms
  peerDiscovery:
    pluginRef: static-peer-discovery
"""


def test_v1_cross_replica_and_peer_discovery_load() -> None:
    sync = load_config(text=V1).replica_sync
    assert sync is not None
    assert isinstance(sync.syncer, ZmqMeshSyncer)
    assert sync.syncer.params.port == 9100 and sync.syncer.params.peer_expiry == 2.0
    assert (sync.interval_s, sync.publish_timeout_s) == (0.1, 3.0)
    assert isinstance(sync.peer_discovery, K8sPeerDiscovery)
    assert sync.peer_discovery.params.port == 9100  # llm-d writes the port as a string


def test_v1alpha1_fields_load_the_same_way() -> None:
    config = load_config(text=V1ALPHA1)
    sync = config.replica_sync
    assert sync is not None and isinstance(sync.syncer, LocalSyncer)
    assert (sync.interval_s, sync.publish_timeout_s) == (0.5, 2.0)
    assert isinstance(sync.peer_discovery, StaticPeerDiscovery)
    assert config.metrics is not None  # dataLayer without sources still scrapes (llm-d)


def test_no_cross_replica_section_means_one_replica() -> None:
    assert load_config(text=None).replica_sync is None


@pytest.mark.parametrize(("edit", "expected"), [
    (("syncerPluginRef: sync", "syncerPluginRef: queue-scorer"),
     "dataLayer.crossReplica.syncerPluginRef: 'queue-scorer' is a queue-scorer plugin, not a "
     "cross-replica syncer (cross-replica syncers: sync; cross-replica syncer types: "
     "local-syncer, zmq-mesh-syncer)"),
    (("syncerPluginRef: sync", "syncerPluginRef: nope"),
     "dataLayer.crossReplica.syncerPluginRef: 'nope' is not defined"),
    (("syncInterval: 100ms", "syncInterval: 0s"),
     "dataLayer.crossReplica.syncInterval: '0s': must be > 0"),
    (("publishTimeout: 3s", "publishTimeout: soon"),
     "dataLayer.crossReplica.publishTimeout: 'soon': 'soon' is not a duration like 200ms, "
     "2s or 1m"),
    (("pluginRef: peer-disc", "pluginRef: sync"),
     "dataLayer.discovery.peers.pluginRef: 'sync' is a zmq-mesh-syncer plugin, not a "
     "peer-discovery plugin (peer-discovery plugins: peer-disc; peer-discovery plugin types: "
     "k8s-peer-discovery, static-peer-discovery)"),
    (("publishTimeout: 3s", "publishTimeout: 3s\n  crossReplicaSyncInterval: 1s"),
     "dataLayer.crossReplicaSyncInterval: give dataLayer.crossReplica (llm-d v1) or the "
     "v1alpha1 crossReplica* fields, not both"),
    (("selector: \"app=my-epp\"", "selector: \"app\""),
     "plugins[2].parameters.selector"),
    (("peerExpiry: 2s", "peerExpiry: -1s"), "plugins[1].parameters.peerExpiry"),
    (("selector: \"app=my-epp\", ", ""),
     "plugins[2].parameters.selector: missing: k8s-peer-discovery needs the label selector"),
])
def test_errors_name_the_path_and_what_is_allowed(edit: tuple[str, str], expected: str
                                                  ) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(text=V1.replace(*edit))
    assert expected in str(err.value)


def test_redis_state_store_is_named_as_unimplemented() -> None:
    text = V1.replace("type: zmq-mesh-syncer\n  parameters: {port: 9100, peerExpiry: 2s}",
                      "type: redis-state-store")
    with pytest.raises(ConfigError, match=r"plugins\[1\]\.type: 'redis-state-store' is an llm-d "
                       r"cross-replica syncer that llmd does not implement: llmd's replicas "
                       r"share state without a Redis server; use instead: zmq-mesh-syncer"):
        load_config(text=text)


async def test_k8s_peer_discovery_reports_ready_peers_but_not_itself(
        kmock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock's KubernetesEmulator stands in for the API server (none runs on this machine)."""
    pods = "/api/v1/namespaces/llm/pods"

    async def pod(name: str, ip: str, ready: bool = True, app: str = "my-epp") -> None:
        obj = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "llm", "labels": {"app": app}},
               "status": {"podIP": ip,
                          "conditions": [{"type": "Ready", "status": str(ready)}]}}
        async with kmock.post(pods, json=obj) as resp:
            assert resp.status == 200, await resp.text()

    await pod("me", "10.0.0.1")
    await pod("peer", "10.0.0.2")
    await pod("starting", "10.0.0.3", ready=False)
    await pod("model-server", "10.0.0.4", app="vllm")
    monkeypatch.setenv("POD_IP", "10.0.0.1")
    monkeypatch.setenv("POD_NAMESPACE", "llm")
    plugin = K8sPeerDiscovery("peers", K8sPeerDiscovery.Params(selector="app=my-epp",
                                                               port=9005))
    stop = asyncio.Event()
    updates = plugin.peers(stop, KubeApi(str(kmock.url)))
    try:
        async with asyncio.timeout(5):
            assert await anext(updates) == ("10.0.0.2:9005",)
            async with kmock.patch(f"{pods}/starting", json={"status": {"conditions": [
                    {"type": "Ready", "status": "True"}]}}) as resp:
                assert resp.status == 200
            assert await anext(updates) == ("10.0.0.2:9005", "10.0.0.3:9005")
    finally:
        stop.set()
        await updates.aclose()  # type: ignore[attr-defined]


def test_peer_flags_need_a_syncer_that_shares() -> None:
    config = load_config(text=V1ALPHA1)  # local-syncer
    with pytest.raises(ConfigError, match=r"--peer/--sync-port: the config's syncer "
                       r"'local-syncer' \(local-syncer\) shares nothing; use a zmq-mesh-syncer"):
        server._sync_config(config, EppSettings(peers=("10.0.0.2:9005",)))
    alone = server._sync_config(load_config(text=None), EppSettings(peers=("10.0.0.2:9005",)))
    assert alone is not None and isinstance(alone.syncer, ZmqMeshSyncer)  # --peer alone
    assert server._sync_config(load_config(text=None), EppSettings()) is None


def test_a_bad_peer_flag_names_the_setting() -> None:
    with pytest.raises(ValidationError, match=r"peers\n.*'10\.0\.0\.2' is not host:port"):
        EppSettings(peers=("10.0.0.2",))
