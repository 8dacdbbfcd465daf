"""Filters, pickers, the profile handler and the saturation detector on plain data."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from _pool import ep, pool, req

from llmd.config import parse_duration_s
from llmd.engines import ROLE_LABEL
from llmd.epp import load_config
from llmd.epp.plugins import (
    PLUGINS,
    DecodeFilter,
    LabelSelectorFilter,
    MaxScorePicker,
    PrefillFilter,
    ProfileResult,
    RandomPicker,
    SingleProfileHandler,
    UtilizationDetector,
    WeightedRandomPicker,
)
from llmd.errors import ConfigError

ROLES = {8001: "decode", 8002: "prefill", 8003: "both", 8004: None, 8005: "prefill-decode"}


def _role_pool():  # type: ignore[no-untyped-def]
    return pool(*(ep(port, labels={ROLE_LABEL: r} if r else {}) for port, r in ROLES.items()))


def _ports(endpoints: object) -> set[int]:
    return {e.spec.port for e in endpoints}  # type: ignore[attr-defined]


REQUIRED_PARAMS = {"file-discovery": {"path": "endpoints.yaml"}}
"""The one parameter without a default (as in llm-d)."""


@pytest.mark.parametrize("plugin_type", sorted(PLUGINS))
def test_every_plugin_builds_with_default_parameters(plugin_type: str) -> None:
    cls = PLUGINS[plugin_type]
    plugin = cls(plugin_type, cls.Params(**REQUIRED_PARAMS.get(plugin_type, {})))
    assert plugin.name == plugin_type and cls.type == plugin_type


@pytest.mark.parametrize(("cls", "expected"), [
    pytest.param(DecodeFilter, {8001, 8003, 8004, 8005}, id="decode-unlabelled-pass"),
    pytest.param(PrefillFilter, {8002, 8003, 8005}, id="prefill-unlabelled-fail"),
])
def test_role_filters(cls: type, expected: set[int]) -> None:
    f = cls("f", cls.Params())
    assert _ports(f.filter(req(), _role_pool())) == expected


@pytest.mark.parametrize(("params", "expected"), [
    pytest.param({"matchLabels": {ROLE_LABEL: "decode"}}, {8001}, id="match-labels"),
    pytest.param({"matchExpressions": [{"key": ROLE_LABEL, "operator": "In",
                                        "values": ["prefill", "both"]}]}, {8002, 8003}, id="in"),
    pytest.param({"matchExpressions": [{"key": ROLE_LABEL, "operator": "NotIn",
                                        "values": ["prefill"]}]}, {8001, 8003, 8004, 8005},
                 id="not-in-keeps-unlabelled"),
    pytest.param({"matchExpressions": [{"key": ROLE_LABEL, "operator": "DoesNotExist"}]},
                 {8004}, id="does-not-exist"),
    pytest.param({"matchExpressions": [{"key": ROLE_LABEL, "operator": "Exists"}]},
                 {8001, 8002, 8003, 8005}, id="exists"),
])
def test_label_selector_filter(params: dict[str, object], expected: set[int]) -> None:
    f = LabelSelectorFilter("sel", LabelSelectorFilter.Params.model_validate(params))
    assert _ports(f.filter(req(), _role_pool())) == expected


def test_label_selector_rejects_in_without_values() -> None:
    with pytest.raises(ValueError, match="needs values"):
        LabelSelectorFilter.Params.model_validate(
            {"matchExpressions": [{"key": "k", "operator": "In"}]})


def test_max_score_picker_takes_the_best_and_breaks_ties_at_random() -> None:
    a, b, c = ep(1), ep(2), ep(3)
    picker = MaxScorePicker("p", MaxScorePicker.Params(), rng=random.Random(1))
    assert picker.pick(req(), [(a, 0.1), (b, 0.9), (c, 0.5)]) == (b,)
    wins = Counter(picker.pick(req(), [(a, 1.0), (b, 1.0), (c, 0.0)])[0].spec.port
                   for _ in range(200))
    assert set(wins) == {1, 2}
    two = MaxScorePicker("p", MaxScorePicker.Params(max_num_of_endpoints=2))
    assert two.pick(req(), [(a, 0.1), (b, 0.9), (c, 0.5)]) == (b, c)


def test_random_picker_ignores_scores() -> None:
    a, b = ep(1), ep(2)
    picker = RandomPicker("p", RandomPicker.Params(), rng=random.Random(2))
    wins = Counter(picker.pick(req(), [(a, 0.0), (b, 5.0)])[0].spec.port for _ in range(200))
    assert set(wins) == {1, 2}


def test_weighted_random_picker_follows_scores() -> None:
    a, b, c = ep(1), ep(2), ep(3)
    picker = WeightedRandomPicker("p", WeightedRandomPicker.Params(), rng=random.Random(3))
    wins = Counter(picker.pick(req(), [(a, 0.9), (b, 0.1), (c, 0.0)])[0].spec.port
                   for _ in range(1000))
    assert wins[3] == 0 and wins[1] > 3 * wins[2] > 0
    assert len(picker.pick(req(), [(a, 0.0), (b, 0.0)])) == 1  # all zero: uniform


def test_single_profile_handler_runs_the_profile_once() -> None:
    h = SingleProfileHandler("h", SingleProfileHandler.Params())
    profiles = {"default": object()}
    assert h.pick(req(), profiles, {}) == profiles  # type: ignore[arg-type]
    result = ProfileResult((ep(1),))
    assert h.pick(req(), profiles, {"default": result}) == {}  # type: ignore[arg-type]
    decided = h.process_results(req(), {"default": result})
    assert decided is not None and decided.primary == "default"
    assert h.process_results(req(), {"default": None}) is None


@pytest.mark.parametrize(("endpoints", "expected"), [
    pytest.param([ep(1, waiting=0, kv=0.0)], 0.0, id="idle"),
    pytest.param([ep(1, waiting=5)], 1.0, id="queue-at-threshold"),
    pytest.param([ep(1, kv=0.4)], 0.5, id="kv-half-of-threshold"),
    pytest.param([ep(1, waiting=10), ep(2)], 1.0, id="pool-average"),
    pytest.param([ep(1, age_s=3.0)], 1.0, id="stale-counts-saturated"),
    pytest.param([ep(1, age_s=None)], 1.0, id="never-scraped-counts-saturated"),
    pytest.param([], 1.0, id="empty-pool"),
])
def test_utilization_detector(endpoints: list[object], expected: float) -> None:
    d = UtilizationDetector("u", UtilizationDetector.Params())
    assert d.saturation(pool(*endpoints)) == pytest.approx(expected)  # type: ignore[arg-type]


def test_utilization_detector_as_filter_fails_open() -> None:
    d = UtilizationDetector("u", UtilizationDetector.Params.model_validate(
        {"metricsStalenessThreshold": "200ms"}))
    assert d.params.metrics_staleness_threshold == pytest.approx(0.2)
    busy, idle = ep(1, waiting=9), ep(2)
    assert _ports(d.filter(req(), pool(busy, idle))) == {2}
    assert _ports(d.filter(req(), pool(busy))) == {1}


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("200ms", 0.2, id="ms"), pytest.param("2s", 2.0, id="s"),
    pytest.param("1m", 60.0, id="m"), pytest.param(1.5, 1.5, id="number"),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("plugin", "param"), [
    pytest.param("utilization-detector", "metricsStalenessThreshold", id="staleness"),
    pytest.param("precise-prefix-cache-producer", "speculativeTTL", id="speculative-ttl"),
])
@pytest.mark.parametrize(("value", "problem"), [
    pytest.param("0s", "must be > 0", id="zero"), pytest.param(-1, "must be > 0", id="negative"),
    pytest.param("2h", "not a duration like 200ms, 2s or 1m", id="unit"),
])
def test_durations_are_positive_and_name_the_forms(plugin: str, param: str, value: object,
                                                   problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"(?s){param}.*{problem}"):
        load_config(text=f"apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
                    f"plugins:\n- type: {plugin}\n  parameters: {{{param}: {value}}}\n")
