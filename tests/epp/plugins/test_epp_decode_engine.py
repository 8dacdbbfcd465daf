"""`decode-engine-filter`: in a mixed-engine pool the prefill pick has the decode pick's engine."""

from __future__ import annotations

from _pool import ep, pool, req

from llmd.engines import ENGINE_TYPE_LABEL, ROLE_LABEL, get_adapter
from llmd.epp import PREFILLER_HEADER, load_config
from llmd.epp.plugins import AlwaysDisaggPdDecider, DecodeEngineFilter, NoParams

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: disagg-profile-handler
  parameters: {deciders: {prefill: always-disagg-pd-decider}}
- type: always-disagg-pd-decider
- type: decode-filter
- type: prefill-filter
- type: decode-engine-filter
- type: queue-scorer
schedulingProfiles:
- name: decode
  plugins: [{pluginRef: decode-filter}, {pluginRef: queue-scorer}]
- name: prefill
  plugins: [{pluginRef: prefill-filter}, {pluginRef: decode-engine-filter},
            {pluginRef: queue-scorer}]
"""


def _labels(engine: str, role: str) -> dict[str, str]:
    return {ENGINE_TYPE_LABEL: engine, ROLE_LABEL: role}


def test_prefill_pick_matches_the_decode_engine() -> None:
    cfg = load_config(text=CONFIG)
    assert AlwaysDisaggPdDecider.type in cfg.plugins
    # Each engine has one decode endpoint; the busy one loses the decode pick.
    for busy, want in (("vllm", "sglang"), ("sglang", "vllm")):
        snapshot = pool(
            ep(8001, labels=_labels("vllm", "decode"), waiting=9 if busy == "vllm" else 0),
            ep(8002, labels=_labels("sglang", "decode"), waiting=9 if busy == "sglang" else 0),
            # the other engine's prefill endpoint is idle, so only the filter keeps it out
            ep(9001, labels=_labels("vllm", "prefill"), waiting=5 if want == "vllm" else 0),
            ep(9002, labels=_labels("sglang", "prefill"), waiting=5 if want == "sglang" else 0))
        for _ in range(3):
            result = cfg.scheduler.schedule(req(prompt="hello"), snapshot)
            assert result is not None
            decode = result.destination
            prefill = result.results["prefill"].targets[0]
            assert decode.spec.engine == prefill.spec.engine == want
            assert result.headers == {PREFILLER_HEADER: prefill.id}


def test_without_a_decode_pick_every_candidate_passes() -> None:
    snapshot = pool(ep(9001, labels=_labels("vllm", "prefill")),
                    ep(9002, labels=_labels("sglang", "prefill")), ep(9003))
    kept = DecodeEngineFilter("f", NoParams()).filter(req(), snapshot)
    assert len(kept) == 3


def test_a_decode_endpoint_that_cannot_serve_alone_always_gets_a_prefill(engine: str) -> None:
    """prefix-based decider, short prompt: decode only, unless the engine's decode role needs a
    prefill peer on every request (SGLang decode mode needs a bootstrap room)."""
    cfg = load_config(text=CONFIG.replace(
        "parameters: {deciders: {prefill: always-disagg-pd-decider}}",
        "parameters: {deciders: {prefill: prefix-based-pd-decider}}").replace(
        "- type: always-disagg-pd-decider",
        "- type: prefix-based-pd-decider\n  parameters: {nonCachedTokens: 16}"))
    snapshot = pool(ep(8001, labels=_labels(engine, "decode")),
                    ep(9001, labels=_labels(engine, "prefill")))
    result = cfg.scheduler.schedule(req(prompt="hi"), snapshot)
    assert result is not None
    alone = get_adapter(engine).pd.decode_alone
    assert (PREFILLER_HEADER not in result.headers) == alone
    # An unlabelled (aggregated) endpoint of the same engine never needs one.
    plain = cfg.scheduler.schedule(req(prompt="hi"), pool(
        ep(8001, labels={ENGINE_TYPE_LABEL: engine}), ep(9001, labels=_labels(engine, "prefill"))))
    assert plain is not None and plain.headers == {}
