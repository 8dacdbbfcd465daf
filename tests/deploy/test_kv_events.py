"""Precise prefix-cache routing: an EPP config with llm-d's precise plugin makes the serving
engines publish KV events where the plugin reads them (`--kv-events-config` through the
adapters, POD_IP from the downward API, container port `kv-events`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import Rendered, default_epp_config, render_files
from llmd.engines import ENGINES, KvEventsSpec, ServeSpec, get_adapter
from llmd.errors import ConfigError

from ._cases import EXAMPLES

PRECISE = yaml.safe_load((EXAMPLES / "epp-precise.yaml").read_text())
FLAG = "--kv-events-config"
EPP = "demo-llm-d-modelservice-epp"
KV = "routing.epp.config.plugins[1].parameters.kvEventsConfig"


def _config(**kv_events: Any) -> dict[str, Any]:
    """examples/epp-precise.yaml with its kvEventsConfig keys replaced (None removes one)."""
    config = copy.deepcopy(PRECISE)
    params = config["plugins"][1]["parameters"]["kvEventsConfig"]
    for key, value in kv_events.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return config


def _render(tmp_path: Path, example: str, config: dict[str, Any] | None = None,
            *sets: str, **values: Any) -> Rendered:
    """`example` plus a file setting routing.epp.config (and `values` at the top level)."""
    doc: dict[str, Any] = dict(values)
    if config is not None:
        doc.setdefault("routing", {}).setdefault("epp", {})["config"] = config
    extra = tmp_path / "precise.yaml"
    extra.write_text(yaml.safe_dump(doc))
    return render_files([EXAMPLES / example, extra], sets, release="demo", namespace="llm")


def _engines(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`<workload>/<template>` → that pod's first (engine) container."""
    out = {}
    for obj in objects:
        if obj["kind"] == "Deployment" and "llm-d.ai/role" in obj["spec"]["selector"].get(
                "matchLabels", {}):
            out[obj["metadata"]["name"]] = obj["spec"]["template"]["spec"]["containers"][0]
        elif obj["kind"] == "LeaderWorkerSet":
            lwt = obj["spec"]["leaderWorkerTemplate"]
            for key in ("leaderTemplate", "workerTemplate"):
                if key in lwt:
                    out[f"{obj['metadata']['name']}/{key}"] = lwt[key]["spec"]["containers"][0]
    return out


def _argv(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _events(container: dict[str, Any]) -> dict[str, Any] | None:
    """The --kv-events-config value (`--flag v` or `--flag=v`); the flag appears once."""
    argv = _argv(container)
    values = [argv[i + 1] for i, a in enumerate(argv) if a == FLAG]
    values += [a.split("=", 1)[1] for a in argv if a.startswith(FLAG + "=")]
    if not values:
        return None
    (value,) = values
    out: dict[str, Any] = json.loads(value)
    return out


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _kv_port(container: dict[str, Any]) -> list[int]:
    return [p["containerPort"] for p in container.get("ports", []) if p.get("name") == "kv-events"]


POD_IP = {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize("plugin", ["precise-prefix-cache-scorer",
                                    "precise-prefix-cache-producer"])
def test_the_precise_plugin_turns_kv_events_on(engine: str, plugin: str,
                                               tmp_path: Path) -> None:
    config = _config()
    config["plugins"][1]["type"] = plugin
    config["schedulingProfiles"][0]["plugins"][0]["pluginRef"] = plugin
    result = _render(tmp_path, f"values-{engine}.yaml", config)
    assert result.warnings == []
    (container,) = _engines(result.objects).values()
    events = _events(container)
    assert events is not None
    assert events["endpoint"] == "tcp://*:5557"
    assert events["topic"] == "kv@$(POD_IP):8000@Qwen/Qwen3-0.6B"
    assert events["publisher"] == "zmq"
    assert _env(container)["POD_IP"] == POD_IP
    assert _kv_port(container) == [5557]


def test_the_examples_publish_with_their_engine_s_own_config(engine: str) -> None:
    """The whole flag value is the adapter's (vLLM's has enable_kv_cache_events, SGLang's
    rejects that key): llmd render has no engine-specific code."""
    result = render_files([EXAMPLES / f"values-{engine}-precise.yaml"], release="demo")
    assert result.warnings == []
    (container,) = _engines(result.objects).values()
    spec = ServeSpec(model="m", kv_events=KvEventsSpec(
        "tcp://*:5557", "kv@$(POD_IP):8000@Qwen/Qwen3-8B"))
    adapter_args = get_adapter(engine).serve_args(spec)
    expected = adapter_args[adapter_args.index(FLAG) + 1]
    argv = _argv(container)
    assert argv[argv.index(FLAG) + 1] == expected


def test_pd_both_roles_publish_keyed_by_the_port_the_epp_knows(engine: str,
                                                               tmp_path: Path) -> None:
    """The decode engine listens on 8200 behind the sidecar, but the EPP's endpoint for the pod
    is the sidecar's 8000: the topic must name 8000 or no event matches an endpoint."""
    result = _render(tmp_path, f"values-{engine}-pd.yaml", _config())
    containers = _engines(result.objects)
    decode = containers["demo-llm-d-modelservice-decode"]
    prefill = containers["demo-llm-d-modelservice-prefill"]
    assert "8200" in _argv(decode)
    for container in (decode, prefill):
        events = _events(container)
        assert events is not None
        assert events["endpoint"] == "tcp://*:5557"
        assert events["topic"] == "kv@$(POD_IP):8000@Qwen/Qwen3-14B"
        assert _kv_port(container) == [5557]


@pytest.mark.parametrize("example", ["values-{engine}.yaml", "values-{engine}-pd.yaml",
                                     "values-{engine}-multinode.yaml"])
def test_the_default_config_publishes_nothing(engine: str, example: str) -> None:
    result = render_files([EXAMPLES / example.format(engine=engine)], release="demo")
    for container in _engines(result.objects).values():
        assert _events(container) is None
        assert "POD_IP" not in _env(container)
        assert _kv_port(container) == []
    assert default_epp_config(pd=False)["plugins"] == [
        p for p in default_epp_config(pd=False)["plugins"] if "precise" not in p["type"]]


def test_a_users_flag_wins(engine: str, tmp_path: Path) -> None:
    own = '{"publisher":"zmq","endpoint":"tcp://*:5557","topic":"kv@$(POD_IP):8000@mine"}'
    # `--flag=value` in one argument: a --set value starting with `{` would be a list.
    result = _render(tmp_path, f"values-{engine}.yaml", _config(),
                     f"decode.containers[0].args[0]={FLAG}=" + own.replace(",", "\\,"))
    (container,) = _engines(result.objects).values()
    assert _events(container) == json.loads(own)
    assert _env(container)["POD_IP"] == POD_IP


def test_a_users_pod_ip_and_served_name_are_used(engine: str, tmp_path: Path) -> None:
    result = _render(tmp_path, f"values-{engine}.yaml", _config(),
                     "decode.containers[0].env[0].name=POD_IP",
                     "decode.containers[0].env[0].value=10.0.0.1",
                     "decode.containers[0].args={--served-model-name,qwen}")
    (container,) = _engines(result.objects).values()
    assert [e for e in container["env"] if e["name"] == "POD_IP"] == [
        {"name": "POD_IP", "value": "10.0.0.1"}]
    events = _events(container)
    assert events is not None and events["topic"] == "kv@$(POD_IP):8000@qwen"


def test_a_multinode_leader_publishes_and_workers_do_not(engine: str, tmp_path: Path) -> None:
    result = _render(tmp_path, f"values-{engine}-multinode.yaml", _config(),
                     "routing.inferencePool.enabled=true")
    containers = _engines(result.objects)
    leader = containers["demo-llm-d-modelservice-decode/leaderTemplate"]
    worker = containers["demo-llm-d-modelservice-decode/workerTemplate"]
    assert _events(leader) is not None and _kv_port(leader) == [5557]
    assert _events(worker) is None and _kv_port(worker) == []
    assert "POD_IP" not in _env(worker)


def test_data_parallelism_warns_that_only_rank_0_is_indexed(tmp_path: Path) -> None:
    result = _render(tmp_path, "values-vllm-multinode.yaml", _config())
    assert [w for w in result.warnings if "data parallelism" in w] == [
        f"{EXAMPLES / 'values-vllm-multinode.yaml'}: decode.parallelism: data parallelism 8: "
        "the EPP reads "
        "one KV-event stream per pod endpoint, data-parallel rank 0's, so the precise index "
        "misses what the other 7 ranks cache (the leader's other ranks publish on socketPort "
        "+ rank, which nobody reads; worker pods publish nothing); for precise routing run "
        "one rank per pod (data: 1, more replicas)"]


def test_centralized_engines_connect_to_the_epp_service(engine: str, tmp_path: Path) -> None:
    config = _config(discoverPods=False, zmqEndpoint="tcp://*:5557", podDiscoveryConfig=None)
    result = _render(tmp_path, f"values-{engine}.yaml", config)
    assert result.warnings == []
    (container,) = _engines(result.objects).values()
    events = _events(container)
    assert events is not None
    assert events["endpoint"] == f"tcp://{EPP}:5557"
    assert events["topic"] == "kv@$(POD_IP):8000@Qwen/Qwen3-0.6B"
    assert _kv_port(container) == []  # the engine binds nothing: it connects out
    epp = next(o for o in result.objects if o["kind"] == "Deployment"
               and o["metadata"]["name"] == EPP)
    ports = epp["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "kv-events", "containerPort": 5557, "protocol": "TCP"} in ports
    service = next(o for o in result.objects if o["kind"] == "Service")
    assert {"name": "kv-events", "port": 5557, "targetPort": "kv-events",
            "protocol": "TCP"} in service["spec"]["ports"]


def test_pod_discovery_adds_nothing_to_the_epp(engine: str, tmp_path: Path) -> None:
    result = _render(tmp_path, f"values-{engine}.yaml", _config())
    service = next(o for o in result.objects if o["kind"] == "Service")
    assert [p["name"] for p in service["spec"]["ports"]] == [
        "grpc-ext-proc", "grpc-health", "metrics"]


CENTRAL = {"discoverPods": False, "zmqEndpoint": "tcp://*:5557"}
ERRORS = [
    pytest.param(_config(podDiscoveryConfig={"socketPort": "x"}), (),
                 f"{KV}.podDiscoveryConfig.socketPort: 'x' is not a port: expected an integer "
                 "1-65535 (llm-d's default 5557)", id="socket-port-string"),
    pytest.param(_config(podDiscoveryConfig={"socketPort": 70000}), (),
                 f"{KV}.podDiscoveryConfig.socketPort: 70000 is not a port", id="port-too-big"),
    pytest.param(_config(podDiscoveryConfig={"socketPort": True}), (),
                 f"{KV}.podDiscoveryConfig.socketPort: True is not a port", id="port-bool"),
    pytest.param(_config(podDiscoveryConfig={"socketPort": 8000}), (),
                 f"{KV}.podDiscoveryConfig.socketPort: 8000 is also the routing sidecar's port "
                 "(routing.servicePort) in decode pods", id="port-clash-sidecar"),
    pytest.param(_config(podDiscoveryConfig={"socketPort": 8200}), (),
                 f"{KV}.podDiscoveryConfig.socketPort: 8200 is also the engine's port "
                 "(routing.proxy.targetPort) in decode pods", id="port-clash-engine"),
    pytest.param(_config(podDiscoveryConfig={"socketPort": 5557, "replaySocketPort": 5558}),
                 (), f"{KV}.podDiscoveryConfig.replaySocketPort: not rendered",
                 id="replay-port"),
    pytest.param(_config(discoverPods="no"), (),
                 f"{KV}.discoverPods: expected true or false, got 'no'", id="discover-string"),
    pytest.param(_config(discoverPods=False), (),
                 f"{KV}.zmqEndpoint: required when discoverPods is false", id="no-zmq-endpoint"),
    pytest.param(_config(discoverPods=False, zmqEndpoint="indexer:5557"), (),
                 f"{KV}.zmqEndpoint: 'indexer:5557' is not tcp://HOST:PORT", id="bad-zmq"),
    pytest.param(_config(**CENTRAL), ("routing.epp.replicas=2",),
                 f"{KV}.discoverPods: false with routing.epp.replicas 2", id="central-replicas"),
    pytest.param(_config(**CENTRAL), ("routing.epp.enabled=false",),
                 f"{KV}.discoverPods: false: the engines would connect to the EPP's "
                 "zmqEndpoint through the EPP Service llmd renders, but the EPP is not "
                 "rendered", id="central-without-epp"),
    pytest.param(_config(discoverPods=False, zmqEndpoint="tcp://*:9002"), (),
                 f"{KV}.zmqEndpoint: port 9002 is also one of the EPP's", id="central-clash"),
]


@pytest.mark.parametrize(("config", "sets", "message"), ERRORS)
def test_bad_kv_events_config_is_an_error_naming_the_path(
        engine: str, config: dict[str, Any], sets: tuple[str, ...], message: str,
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _render(tmp_path, f"values-{engine}.yaml", config, *sets)
    assert any(line.startswith(f"{tmp_path / 'precise.yaml'}") and message in line
               for line in info.value.problems), info.value.problems


def test_the_engine_type_must_be_the_pods(engine: str, tmp_path: Path) -> None:
    other = next(e for e in ENGINES if e != engine)
    assert _render(tmp_path, f"values-{engine}.yaml", _config(engineType=engine)).objects
    with pytest.raises(ConfigError) as info:
        _render(tmp_path, f"values-{engine}.yaml", _config(engineType=other))
    assert info.value.problems == [
        f"{tmp_path / 'precise.yaml'}: {KV}.engineType: {other!r}, but decode runs {engine}: "
        "llm-d's EPP would decode its KV events as another engine's; omit engineType (llmd's "
        "EPP decodes each endpoint's events after its llm-d.ai/engine-type label) or set "
        f"{engine!r}"]


@pytest.mark.parametrize(("size", "realigns"), [(16, None), (64, True), (24, False)])
def test_a_block_size_that_differs_from_the_plugin_s_warns(engine: str, size: int,
                                                           realigns: bool | None,
                                                           tmp_path: Path) -> None:
    flag = "--" + get_adapter(engine).metric_names.block_size_label.replace("_", "-")
    given = f"decode.containers[0].args[0]={flag}={size}"
    result = _render(tmp_path, f"values-{engine}.yaml", _config(), given)
    if realigns is None:
        assert result.warnings == []
        return
    (warning,) = result.warnings
    assert warning.startswith(
        f"--set {given}, {tmp_path / 'precise.yaml'}: "
        f"decode.containers[0].args[0]: {flag} {size} differs from routing.epp.config.plugins[1]"
        ".parameters.tokenProcessorConfig.blockSize (16): ")
    assert ("the EPP's index realigns" in warning) is realigns
    assert warning.endswith("; set both to the same size")


def test_a_custom_command_is_warned_about_not_changed(engine: str, tmp_path: Path) -> None:
    command = get_adapter(engine).serve_command()
    result = _render(tmp_path, f"values-{engine}.yaml", _config(),
                     "decode.containers[0].modelCommand=custom",
                     f"decode.containers[0].command={{{','.join(command)}}}")
    (container,) = _engines(result.objects).values()
    assert _events(container) is None and _kv_port(container) == []
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        "decode.containers[0].modelCommand: custom containers get nothing injected, so this "
        "one publishes no KV events for routing.epp.config.plugins[1] "
        "(precise-prefix-cache-scorer); add --kv-events-config to its command, or use "
        f"{get_adapter(engine).serve_model_command}"]


def test_pods_the_default_selector_misses_are_warned_about(tmp_path: Path) -> None:
    result = _render(tmp_path, "values-vllm.yaml", _config(),
                     "modelArtifacts.labels.llm-d\\.ai/inference-serving=null")
    assert len(result.warnings) == 1
    assert (f"{KV}.podDiscoveryConfig.podLabelSelector: 'llm-d.ai/inference-serving=true' "
            "does not select the decode pods") in result.warnings[0]


def test_target_ports_without_the_service_port_are_warned_about(tmp_path: Path) -> None:
    result = _render(tmp_path, "values-vllm.yaml", _config(),
                     "routing.inferencePool.targetPorts={8001}")
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        "routing.inferencePool.targetPorts: [8001] leaves out routing.servicePort (8000), "
        "the port the engines' KV-event topics name: the EPP would match no event to an "
        "endpoint"]


def test_the_values_examples_hold_epp_precise_yaml() -> None:
    for engine in ENGINES:
        values = yaml.safe_load((EXAMPLES / f"values-{engine}-precise.yaml").read_text())
        assert values["routing"]["epp"]["config"] == PRECISE, engine


def test_the_inference_simulator_gets_no_flag_it_would_reject(tmp_path: Path) -> None:
    result = _render(tmp_path, "values-vllm.yaml", _config(),
                     "decode.containers[0].image=ghcr.io/llm-d/llm-d-inference-sim:v0.5.0")
    (container,) = _engines(result.objects).values()
    assert _events(container) is None and _kv_port(container) == []
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        "decode.containers[0].image: the llm-d inference simulator takes no "
        "--kv-events-config; it publishes for routing.epp.config.plugins[1] only with its own "
        "flags (--enable-kvcache, --zmq-endpoint) in args"]
