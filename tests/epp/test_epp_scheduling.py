"""The framework around the plugins: clamping, weights, filters, registry as a value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from llmd.config import LlmdModel
from llmd.engines import EndpointMetrics
from llmd.epp import PLUGINS, Datastore, EndpointId, load_config, parse_endpoint_flag
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import PoolSnapshot
from llmd.epp.plugins.registry import SCORER
from llmd.epp.request import InferenceRequest


class FixedScorer:
    """A test scorer: scores come from its parameters, out of range on purpose."""

    type: ClassVar[str] = "fixed-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        scores: dict[str, float] = {}

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        return {ep.id: self.params.scores.get(ep.id, 0.0) for ep in pool.candidates}


REGISTRY = PLUGINS.extend(SCORER.table(FixedScorer))
A, B = "10.0.0.1:1", "10.0.0.1:2"


def _pool() -> PoolSnapshot:
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag(A), parse_endpoint_flag(f"{B},role=prefill")])
    store.update_metrics(A, EndpointMetrics())
    return store.snapshot()


def _config(profile: str, plugins: str = "") -> str:
    return ("apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\nplugins:\n"
            f"- name: big\n  type: fixed-scorer\n  parameters: {{scores: {{'{B}': 50}}}}\n"
            "- name: small\n  type: fixed-scorer\n"
            f"  parameters: {{scores: {{'{A}': 0.6, '{B}': -9}}}}\n"
            f"{plugins}schedulingProfiles:\n- name: p\n  plugins:\n{profile}")


def test_scores_are_clamped_then_weighted_and_summed() -> None:
    # big: B=50 → 1.0 (×1); small: A=0.6 (×2 = 1.2), B=-9 → 0. A wins 1.2 to 1.0.
    cfg = load_config(text=_config("  - pluginRef: big\n  - pluginRef: small\n    weight: 2\n"),
                      registry=REGISTRY)
    result = cfg.scheduler.schedule(InferenceRequest("r"), _pool())
    assert result is not None and result.destination.id == A
    # with small at weight 1, B wins 1.0 to 0.6
    cfg = load_config(text=_config("  - pluginRef: big\n  - pluginRef: small\n"),
                      registry=REGISTRY)
    result = cfg.scheduler.schedule(InferenceRequest("r"), _pool())
    assert result is not None and result.destination.id == B


def test_filters_narrow_before_scoring_and_empty_means_no_result() -> None:
    cfg = load_config(text=_config("  - pluginRef: prefill-filter\n  - pluginRef: small\n",
                                   "- type: prefill-filter\n"), registry=REGISTRY)
    result = cfg.scheduler.schedule(InferenceRequest("r"), _pool())
    assert result is not None and result.destination.id == B  # the only prefill endpoint
    cfg = load_config(text=_config(
        "  - pluginRef: sel\n",
        "- name: sel\n  type: label-selector-filter\n  parameters: {matchLabels: {zone: x}}\n"),
        registry=REGISTRY)
    assert cfg.scheduler.schedule(InferenceRequest("r"), _pool()) is None


def test_plugin_timer_sees_every_plugin() -> None:
    cfg = load_config(text=_config("  - pluginRef: big\n  - pluginRef: small\n"),
                      registry=REGISTRY)
    seen: list[str] = []
    cfg.scheduler.timer = lambda name, seconds: seen.append(name)
    cfg.scheduler.schedule(InferenceRequest("r"), _pool())
    assert seen == ["big", "small", "max-score-picker"]
