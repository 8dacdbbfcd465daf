"""`llmd up` plans its simulators' KV events from the EPP config (no process is started here:
the end-to-end runs are in test_stack_precise.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmd.engines import get_adapter, parse_kv_topic
from llmd.epp import load_config
from llmd.errors import ConfigError
from llmd.gateway import StackSpec
from llmd.gateway._kv_events import plan_kv_events

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "epp-precise.yaml"


def precise(kv_events: str = "{}", tokens: str = "{}") -> str:
    return f"""
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: precise-prefix-cache-producer
  parameters: {{kvEventsConfig: {kv_events}, tokenProcessorConfig: {tokens}}}
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins: [{{pluginRef: prefix-cache-scorer}}]
"""


def plan(spec: StackSpec, tmp_path: Path):  # type: ignore[no-untyped-def]
    file, text = spec.epp_config()
    return plan_kv_events(load_config(file, text=text), spec.sim_children(), model=spec.model,
                          host=spec.host, run_dir=tmp_path, sim_flags=spec.sim_args)


def test_each_simulator_binds_its_own_socket_and_its_endpoint_names_it(tmp_path: Path) -> None:
    spec = StackSpec(engines=("vllm", "sglang"), epp_config_file=EXAMPLE, base_port=9100)
    kv = plan(spec, tmp_path)
    assert kv is not None
    for i, engine in enumerate(spec.engines):
        name = f"sim-{engine}-{i}"
        flag, raw, *rest = kv.args(name)
        assert flag == "--kv-events-config" and rest == ["--block-size", "16"]
        dialect = get_adapter(engine).kv_events
        settings = dialect.parse_config(raw)  # the engine's own model takes it
        assert settings.enabled and dialect.binds(settings)
        assert settings.endpoint == f"ipc://{tmp_path / name}.kv"
        assert parse_kv_topic(settings.topic) == ("127.0.0.1", 9100 + i, "llmd-sim")
        assert kv.labels(name) == f",kv-events={settings.endpoint},llm-d.ai/model=llmd-sim"


def test_no_kv_events_without_a_precise_plugin(tmp_path: Path) -> None:
    assert plan(StackSpec(), tmp_path) is None
    assert plan(StackSpec(pd=True), tmp_path) is None


def test_ephemeral_ports_give_topics_by_child_name(tmp_path: Path) -> None:
    kv = plan(StackSpec(engines=("sglang",), epp_config_text=precise()), tmp_path)
    assert kv is not None
    settings = get_adapter("sglang").kv_events.parse_config(kv.args("sim-sglang-0")[1])
    assert settings.topic == "kv@sim-sglang-0@llmd-sim"


def test_centralized_mode_connects_the_simulators_to_the_epp(tmp_path: Path) -> None:
    """`zmqEndpoint`: the EPP binds, each simulator connects (by its engine's own rule) and its
    topic names the port the EPP schedules it on: a P/D decode sim's is its sidecar's."""
    spec = StackSpec(engines=("vllm", "sglang"), pd=True, base_port=9200,
                     epp_config_text=precise('{zmqEndpoint: "tcp://*:5599"}'))
    kv = plan(spec, tmp_path)
    assert kv is not None
    layout = spec.pd_layout()
    for i, engine in enumerate(layout.decode):
        dialect = get_adapter(engine).kv_events
        settings = dialect.parse_config(kv.args(f"decode-{engine}-{i}")[1])
        assert settings.endpoint == "tcp://127.0.0.1:5599" and not dialect.binds(settings)
        assert parse_kv_topic(settings.topic) == ("127.0.0.1", layout.port("sidecar", i),
                                                  "llmd-sim")
        assert "kv-events=" not in kv.labels(f"decode-{engine}-{i}")
    for i, engine in enumerate(layout.prefill):
        raw = json.loads(kv.args(f"prefill-{engine}-{i}")[1])
        assert parse_kv_topic(raw["topic"])[1] == layout.port("prefill", i)  # type: ignore[index]


@pytest.mark.parametrize(("spec_kwargs", "kv_events", "message"), [
    ({}, '{zmqEndpoint: "tcp://*:5599"}', r"zmqEndpoint.*ports must be fixed.*--base-port"),
    ({"base_port": 9300}, '{zmqEndpoint: "ipc:///tmp/x"}', r"zmqEndpoint.*tcp://"),
])
def test_centralized_mode_that_cannot_work_is_a_config_error(
        tmp_path: Path, spec_kwargs: dict[str, int], kv_events: str, message: str) -> None:
    spec = StackSpec(engines=("vllm",), epp_config_text=precise(kv_events), **spec_kwargs)
    with pytest.raises(ConfigError, match=message):
        plan(spec, tmp_path)


def test_the_simulators_block_size_follows_the_index_unless_set(tmp_path: Path) -> None:
    text = precise(tokens="{blockSize: 64}")
    kv = plan(StackSpec(engines=("vllm",), epp_config_text=text), tmp_path)
    assert kv is not None and kv.args("sim-vllm-0")[2:] == ("--block-size", "64")
    kv = plan(StackSpec(engines=("vllm",), epp_config_text=text,
                        sim_args=("--block-size", "128")), tmp_path)
    assert kv is not None and kv.args("sim-vllm-0")[2:] == ()
