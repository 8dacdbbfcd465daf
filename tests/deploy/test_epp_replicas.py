"""`routing.epp.replicas` > 1: the EPP Deployment runs N replicas, spread over nodes and zones,
under a PodDisruptionBudget, with a headless Service and an EndpointPickerConfig that wire the
replicas to each other (llm-d v1's `k8s-peer-discovery` and `dataLayer.crossReplica`). One
replica renders exactly as before. test_validate.py validates these renders' objects against
the Kubernetes schemas."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import default_epp_config, dump_yaml, render_files
from llmd.deploy._epp_replicas import (
    PEER_DISCOVERY_TYPE,
    SYNC_PORT,
    SYNCER_TYPE,
    label_selector,
)
from llmd.errors import ConfigError

from ._cases import EXAMPLES, GOLDEN, NAMESPACE

EPP = "demo-llm-d-modelservice-epp"
EPP_LABELS = {"app.kubernetes.io/component": "epp", "llm-d.ai/epp": EPP}


@functools.cache
def _render(example: str, *sets: str) -> tuple[dict[str, Any], ...]:
    result = render_files([EXAMPLES / example], sets, release="demo", namespace=NAMESPACE)
    assert result.warnings == []
    return tuple(result.objects)


def _one(objects: tuple[dict[str, Any], ...], kind: str, name: str = EPP) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _config(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (text,) = _one(objects, "ConfigMap")["data"].values()
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def _plugin(config: dict[str, Any], ref: str) -> dict[str, Any]:
    (plugin,) = [p for p in config["plugins"] if (p.get("name") or p["type"]) == ref]
    return plugin


@pytest.mark.parametrize("replicas", [2, 3])
@pytest.mark.parametrize("shape", ["", "-pd"])
def test_replicas_are_spread_budgeted_and_wired_to_each_other(engine: str, shape: str,
                                                              replicas: int) -> None:
    objects = _render(f"values-{engine}{shape}.yaml", f"routing.epp.replicas={replicas}")
    deployment = _one(objects, "Deployment")
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert labels == EPP_LABELS == spec["selector"]["matchLabels"]
    assert spec["replicas"] == replicas
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    (anti,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti["podAffinityTerm"] == {"labelSelector": {"matchLabels": labels},
                                       "topologyKey": "kubernetes.io/hostname"}
    (zones,) = pod["topologySpreadConstraints"]
    assert zones["labelSelector"] == {"matchLabels": labels}
    assert zones["whenUnsatisfiable"] == "ScheduleAnyway"

    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"] == {"matchLabels": labels}
    assert budget["spec"]["maxUnavailable"] == 1

    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert container["readinessProbe"]["grpc"] == {"port": ports["grpc-health"]}

    peers = _one(objects, "Service", f"{EPP}-peers")["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is False
    assert peers["selector"] == labels
    (port,) = peers["ports"]
    assert ports[port["targetPort"]] == port["port"] == SYNC_PORT

    config = _config(objects)
    layer = config["dataLayer"]
    discovery = _plugin(config, layer["peerDiscovery"]["pluginRef"])
    assert discovery["type"] == PEER_DISCOVERY_TYPE
    assert discovery["parameters"] == {"selector": label_selector(labels), "port": port["port"]}
    syncer = _plugin(config, layer["crossReplica"]["syncerPluginRef"])
    assert syncer["type"] == SYNCER_TYPE and syncer["parameters"] == {"port": port["port"]}
    assert layer["crossReplica"]["syncInterval"] == "100ms"
    # The metrics an EPP scrapes without `dataLayer`, now said explicitly.
    (source,) = layer["sources"]
    assert _plugin(config, source["pluginRef"])["type"] == "metrics-data-source"
    assert [_plugin(config, e["pluginRef"])["type"] for e in source["extractors"]] == [
        "core-metrics-extractor"]
    # Scheduling is what one EPP does.
    assert config["schedulingProfiles"] == default_epp_config(pd=bool(shape))[
        "schedulingProfiles"]


def test_one_replica_renders_as_before(engine: str) -> None:
    objects = _render(f"values-{engine}.yaml", "routing.epp.replicas=1")
    assert dump_yaml(objects) == (GOLDEN / f"{engine}-aggregated.yaml").read_text()
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"
                or o["metadata"]["name"].endswith("-peers")]


def test_a_precise_config_keeps_its_plugins(engine: str) -> None:
    """A user's EndpointPickerConfig gets the wiring added and loses nothing."""
    objects = _render(f"values-{engine}-precise.yaml", "routing.epp.replicas=2")
    config = _config(objects)
    given = yaml.safe_load((EXAMPLES / f"values-{engine}-precise.yaml").read_text())[
        "routing"]["epp"]["config"]
    assert config["plugins"][:len(given["plugins"])] == given["plugins"]
    assert config["schedulingProfiles"] == given["schedulingProfiles"]
    assert [p["type"] for p in config["plugins"][len(given["plugins"]):]] == [
        "metrics-data-source", "core-metrics-extractor", PEER_DISCOVERY_TYPE, SYNCER_TYPE]


def _with_config(tmp_path: Path, config: dict[str, Any], *sets: str) -> dict[str, Any]:
    extra = tmp_path / "epp.yaml"
    extra.write_text(yaml.safe_dump({"routing": {"epp": {"config": config}}}))
    objects = render_files([EXAMPLES / "values-sglang.yaml", extra],
                           ("routing.epp.replicas=2", *sets), release="demo").objects
    return _config(tuple(objects))


def test_a_users_peer_discovery_and_sync_are_kept(tmp_path: Path) -> None:
    config = default_epp_config(pd=False)
    config["plugins"] += [{"name": "peers", "type": PEER_DISCOVERY_TYPE},
                          {"name": "sync", "type": SYNCER_TYPE}]
    config["dataLayer"] = {"sources": [], "crossReplica": {"syncerPluginRef": "sync",
                                                           "syncInterval": "50ms"}}
    out = _with_config(tmp_path, config)
    assert out["dataLayer"] == {"sources": [], "peerDiscovery": {"pluginRef": "peers"},
                                "crossReplica": {"syncerPluginRef": "sync",
                                                 "syncInterval": "50ms"}}
    assert _plugin(out, "peers")["parameters"] == {"selector": label_selector(EPP_LABELS),
                                                   "port": SYNC_PORT}
    assert _plugin(out, "sync")["parameters"] == {"port": SYNC_PORT}
    assert [p["type"] for p in out["plugins"]].count(SYNCER_TYPE) == 1


@pytest.mark.parametrize(("parameters", "message"), [
    ({"port": 9100}, "parameters.port: 9100, but the rendered EPP replicas have port 9005"),
    ({"selector": "app=epp"}, "parameters.selector: 'app=epp', but the rendered EPP "
                              "replicas have selector"),
    ("port=9100", "parameters: a mapping, got 'port=9100'"),
])
def test_a_users_peer_discovery_that_misses_the_replicas_is_an_error(
        tmp_path: Path, parameters: Any, message: str) -> None:
    config = default_epp_config(pd=False)
    config["plugins"].append({"type": PEER_DISCOVERY_TYPE, "parameters": parameters})
    with pytest.raises(ConfigError) as err:
        _with_config(tmp_path, config)
    assert f"routing.epp.config.plugins[{len(config['plugins']) - 1}].{message}" in str(err.value)


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_replicas_value_is_an_error_naming_the_path(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_files([EXAMPLES / "values-vllm.yaml"], (f"routing.epp.replicas={bad}",))
    assert "routing.epp.replicas" in str(err.value)
    assert f"--set routing.epp.replicas={bad}" in str(err.value)


def test_the_peer_service_name_is_a_dns_label() -> None:
    objects = render_files([EXAMPLES / "values-vllm.yaml"],
                           ("routing.epp.replicas=2", f"fullnameOverride={'x' * 60}")).objects
    (peers,) = [o for o in objects if o["kind"] == "Service"
                and o["spec"].get("clusterIP") == "None"]
    assert len(peers["metadata"]["name"]) <= 63
    assert peers["metadata"]["name"].endswith("-peers")


def test_the_replicated_config_loads_in_llmd_epp(engine: str) -> None:
    from llmd.epp.config import load_config

    objects = _render(f"values-{engine}-pd.yaml", "routing.epp.replicas=2")
    (text,) = _one(objects, "ConfigMap")["data"].values()
    loaded = load_config(text=text)
    assert loaded.scheduler.handler.type == "disagg-profile-handler"
    sync = loaded.replica_sync
    assert sync is not None and sync.syncer.type == SYNCER_TYPE
    assert sync.interval_s == pytest.approx(0.1) and sync.peer_discovery is not None
    assert sync.peer_discovery.type == PEER_DISCOVERY_TYPE
    assert sync.syncer.params.port == sync.peer_discovery.params.port == SYNC_PORT
