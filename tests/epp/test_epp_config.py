"""EndpointPickerConfig loading: defaults, auto-fills and error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmd.epp import load_config
from llmd.epp.config import load_objectives
from llmd.errors import ConfigError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"


def _load(tmp_path: Path, body: str, head: str = HEAD):  # type: ignore[no-untyped-def]
    path = tmp_path / "epp.yaml"
    path.write_text(head + body)
    return load_config(path)


def test_default_config_is_llm_d_default() -> None:
    cfg = load_config()
    (profile,) = cfg.scheduler.profiles.values()
    assert [(w.scorer.type, w.weight) for w in profile.scorers] == [
        ("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3)]
    assert profile.picker.type == "max-score-picker"
    assert cfg.scheduler.handler.type == "single-profile-handler"
    assert [p.type for p in cfg.scheduler.producers] == ["approx-prefix-cache-producer"]
    assert cfg.detector.type == "utilization-detector"


def test_full_config_with_parameters_and_objectives(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """\
plugins:
- name: roles
  type: label-selector-filter
  parameters: {matchLabels: {llm-d.ai/role: decode}}
- type: load-aware-scorer
  parameters: {threshold: 10}
- name: picker
  type: weighted-random-picker
- type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 32}
- type: prefix-cache-scorer
- name: sat
  type: utilization-detector
  parameters: {queueDepthThreshold: 3, metricsStalenessThreshold: 500ms}
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: roles
  - pluginRef: load-aware-scorer
  - pluginRef: prefix-cache-scorer
    weight: 5
  - pluginRef: picker
saturationDetector: {pluginRef: sat}
objectives:
- {name: batch, priority: -1}
""")
    profile = cfg.scheduler.profiles["decode"]
    assert [f.name for f in profile.filters] == ["roles"]
    assert [(w.scorer.name, w.weight) for w in profile.scorers] == [
        ("load-aware-scorer", 1.0), ("prefix-cache-scorer", 5.0)]
    assert profile.picker.name == "picker"
    assert cfg.plugins["approx-prefix-cache-producer"].params.block_size_tokens == 32
    assert cfg.detector.name == "sat" and cfg.detector.params.queue_depth_threshold == 3
    assert cfg.objectives == {"batch": -1}


def test_deprecated_api_version_loads_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="llmd.epp.config"):
        _load(tmp_path, "plugins:\n- type: queue-scorer\n",
              head="apiVersion: inference.networking.x-k8s.io/v1alpha1\n"
                   "kind: EndpointPickerConfig\n")
    assert ("apiVersion inference.networking.x-k8s.io/v1alpha1 is deprecated; for llm-d.ai/v1 "
            "change: apiVersion: llm-d.ai/v1") in caplog.text


@pytest.mark.parametrize(("body", "messages"), [
    pytest.param(
        "plugins:\n- type: queue-scorrer\n",
        ["epp.yaml: plugins[0].type: 'queue-scorrer' is not a plugin type "
         "(did you mean 'queue-scorer'?)"],
        id="unknown-type-did-you-mean"),
    pytest.param(
        "plugins:\n- type: zzzz\n",
        ["epp.yaml: plugins[0].type: 'zzzz' is not a plugin type (allowed: "],
        id="unknown-type-lists-allowed"),
    pytest.param(
        "plugins:\n- type: load-aware-scorer\n  parameters: {treshold: 3}\n",
        ["epp.yaml: plugins[0].parameters.treshold: unknown field (did you mean 'threshold'?)"],
        id="unknown-parameter-did-you-mean"),
    pytest.param(
        "plugins:\n- type: queue-scorer\n  parameters: {threshold: 3}\n",
        ["epp.yaml: plugins[0].parameters.threshold: unknown field "
         "(parameters of queue-scorer: none)"],
        id="parameter-on-parameterless-plugin"),
    pytest.param(
        "plugins:\n- type: load-aware-scorer\n  parameters: {threshold: 0}\n",
        ["epp.yaml: plugins[0].parameters.threshold: Input should be greater than 0 (got 0)"],
        id="bad-parameter-value"),
    pytest.param(
        "plugins:\n- {name: queue, type: queue-scorer}\n"
        "- {name: kv, type: kv-cache-utilization-scorer}\n"
        "schedulingProfiles:\n- name: default\n  plugins:\n  - pluginRef: queue\n"
        "  - pluginRef: prefix\n",
        ["epp.yaml: schedulingProfiles[0].plugins[1].pluginRef: 'prefix' is not defined "
         "(defined: queue, kv, single-profile-handler)"],
        id="bad-plugin-ref"),
    pytest.param(
        "plugins:\n- type: decode-filter\nschedulingProfiles:\n- name: d\n  plugins:\n"
        "  - {pluginRef: decode-filter, weight: 2}\n",
        ["epp.yaml: schedulingProfiles[0].plugins[0].weight: only scorers take a weight "
         "('decode-filter' is a filter)"],
        id="weight-on-filter"),
    pytest.param(
        "plugins:\n- type: queue-scorer\nschedulingProfiles:\n- {name: a, plugins: []}\n"
        "- {name: b, plugins: []}\n",
        ["epp.yaml: schedulingProfiles: single-profile-handler runs exactly 1 profile, got 2"],
        id="two-profiles-single-handler"),
    pytest.param(
        "plugins:\n- type: queue-scorer\nsaturationDetector: {pluginRef: queue-scorer}\n",
        ["epp.yaml: saturationDetector.pluginRef: 'queue-scorer' is not a saturation detector"],
        id="detector-ref-wrong-kind"),
    pytest.param(
        "plugin:\n- type: queue-scorer\n",
        ["epp.yaml: plugin: unknown field"],
        id="unknown-top-level-key"),
])
def test_config_errors_name_file_path_and_allowed(
    tmp_path: Path, body: str, messages: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    text = str(err.value)
    for message in messages:
        assert message in text.replace(str(tmp_path) + "/", "")


def test_wrong_kind_and_api_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "", head="apiVersion: v1\nkind: Pod\n")
    text = str(err.value).replace(str(tmp_path) + "/", "")
    assert "epp.yaml: apiVersion: 'v1' is not one of 'llm-d.ai/v1alpha1'" in text  # and v1
    assert "epp.yaml: kind: 'Pod' is not one of 'EndpointPickerConfig'" in text


def test_objectives_file(tmp_path: Path) -> None:
    path = tmp_path / "objectives.yaml"
    path.write_text("objectives:\n- {name: batch, priority: -5}\n- {name: chat}\n")
    assert load_objectives(path) == {"batch": -5, "chat": 0}
    path.write_text("objectives:\n- {name: batch, priority: low}\n")
    with pytest.raises(ConfigError, match=r"objectives\[0\]\.priority"):
        load_objectives(path)
