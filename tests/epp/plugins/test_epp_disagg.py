"""P/D scheduling on plain data: disagg-profile-handler, its deciders and its deprecated alias."""

from __future__ import annotations

import logging

import pytest
from _pool import ep, pool, req

from llmd.engines import ROLE_LABEL
from llmd.epp import PREFILLER_HEADER, Endpoint, EndpointSpec, PoolSnapshot, load_config
from llmd.epp.config import EndpointPickerConfig
from llmd.epp.plugins import (
    PREFIX_MATCH,
    AlwaysDisaggPdDecider,
    ApproxPrefixCacheProducer,
    PrefixBasedPdDecider,
    PrefixMatch,
    SchedulingResult,
)

DECODE = {8001: "decode", 8002: "decode"}
PREFILL = {9001: "prefill", 9002: "prefill"}
LONG = "Summarise the following report in three sentences. " * 8  # 408 chars ≈ 102 tokens
SHORT = "hi there"  # 2 tokens


def _config(decider: str = "prefix-based-pd-decider", params: str = "{nonCachedTokens: 16}",
            handler: str = "type: disagg-profile-handler\n  parameters: "
                           "{deciders: {prefill: pd}}") -> EndpointPickerConfig:
    return load_config(text=f"""\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- {handler}
- name: pd
  type: {decider}
  {"parameters: " + params if params else ""}
- type: decode-filter
- type: prefill-filter
- type: queue-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: queue-scorer
  - {{pluginRef: prefix-cache-scorer, weight: 3}}
- name: prefill
  plugins:
  - pluginRef: prefill-filter
  - pluginRef: queue-scorer
  - pluginRef: prefix-cache-scorer
""")


def _pool(roles: dict[int, str]) -> PoolSnapshot:
    return pool(*(ep(port, labels={ROLE_LABEL: role}) for port, role in roles.items()))


def _ports(role: str, roles: dict[int, str]) -> set[str]:
    return {f"10.0.0.1:{port}" for port, r in roles.items() if r == role}


def _schedule(cfg: EndpointPickerConfig, prompt: str, snapshot: PoolSnapshot
              ) -> SchedulingResult | None:
    """One request through the scheduler, then its PreRequest hooks (the prefix index)."""
    request = req(prompt=prompt)
    result = cfg.scheduler.schedule(request, snapshot)
    if result is not None:
        cfg.scheduler.after_decision(request, result, snapshot)
    return result


@pytest.mark.parametrize(("decider", "params", "prompt", "disaggregated"), [
    pytest.param("prefix-based-pd-decider", "{nonCachedTokens: 16}", LONG, True,
                 id="long-uncached-prompt-two-profiles"),
    pytest.param("prefix-based-pd-decider", "{nonCachedTokens: 16}", SHORT, False,
                 id="short-prompt-decode-only"),
    pytest.param("prefix-based-pd-decider", "", LONG, False, id="non-cached-tokens-0-is-off"),
    pytest.param("always-disagg-pd-decider", "", SHORT, True, id="always-disagg-short-prompt"),
])
def test_decode_first_then_prefill_when_the_decider_approves(
    decider: str, params: str, prompt: str, disaggregated: bool
) -> None:
    roles = DECODE | PREFILL
    result = _schedule(_config(decider, params), prompt, _pool(roles))
    assert result is not None and result.primary == "decode"
    assert result.destination.id in _ports("decode", roles)
    if disaggregated:
        assert set(result.results) == {"decode", "prefill"}
        prefill = result.results["prefill"].targets[0].id
        assert prefill in _ports("prefill", roles)
        assert result.headers == {PREFILLER_HEADER: prefill}
    else:
        assert set(result.results) == {"decode"} and result.headers == {}


def test_cached_prompt_stays_on_decode_and_a_long_new_suffix_does_not() -> None:
    cfg, snapshot = _config(), _pool(DECODE | PREFILL)
    first = _schedule(cfg, LONG, snapshot)
    assert first is not None and PREFILLER_HEADER in first.headers
    again = _schedule(cfg, LONG, snapshot)  # every block cached on the same decode endpoint
    assert again is not None and again.headers == {}
    assert again.destination.id == first.destination.id
    # 6 whole 64-character blocks (96 tokens) cached, so ~9 of ~105 tokens uncached: < 16
    small = _schedule(cfg, LONG + "And briefly.", snapshot)
    assert small is not None and small.headers == {}
    big = _schedule(cfg, LONG + "Then list every risk it names, with owners. " * 4, snapshot)  # ~50
    assert big is not None and PREFILLER_HEADER in big.headers
    assert big.destination.id == first.destination.id  # the cached prefix still wins decode


def test_prefix_index_learns_both_endpoints() -> None:
    cfg, snapshot = _config(), _pool(DECODE | PREFILL)
    result = _schedule(cfg, LONG, snapshot)
    assert result is not None
    match = _produced(cfg, LONG, snapshot)
    learned = {ep_id for ep_id, n in match.matched.items() if n == match.total_blocks}
    assert learned == {result.destination.id, result.results["prefill"].targets[0].id}


def test_no_prefill_endpoint_means_decode_only() -> None:
    result = _schedule(_config("always-disagg-pd-decider", ""), LONG, _pool(DECODE))
    assert result is not None and set(result.results) == {"decode"} and result.headers == {}


def test_no_decode_endpoint_means_no_result() -> None:
    assert _schedule(_config("always-disagg-pd-decider", ""), LONG, _pool(PREFILL)) is None


def test_ipv6_prefill_endpoint_is_bracketed() -> None:
    v6 = EndpointSpec("fd00::7", 8000, {ROLE_LABEL: "prefill"})
    snapshot = pool(ep(8001, labels={ROLE_LABEL: "decode"}), Endpoint(v6.id, v6))
    result = _schedule(_config("always-disagg-pd-decider", ""), SHORT, snapshot)
    assert result is not None and result.headers == {PREFILLER_HEADER: "[fd00::7]:8000"}


def _produced(cfg: EndpointPickerConfig, prompt: str, snapshot: PoolSnapshot) -> PrefixMatch:
    """What the config's prefix producer puts in a fresh request's cycle state."""
    request = req(prompt=prompt)
    cfg.plugins[ApproxPrefixCacheProducer.type].produce(request, snapshot)
    return request.state.require(PREFIX_MATCH, "test")


def _match(endpoint: Endpoint, matched_blocks: int) -> PrefixMatch:
    return PrefixMatch(block_tokens=16, total_blocks=10, matched={endpoint.id: matched_blocks})


@pytest.mark.parametrize(("threshold", "prompt", "matched_blocks", "expected"), [
    pytest.param(16, "x" * 400, 0, True, id="100-uncached"),
    pytest.param(16, "x" * 64, 0, True, id="exactly-the-threshold"),
    pytest.param(16, "x" * 60, 0, False, id="prompt-shorter-than-threshold"),
    pytest.param(16, "x" * 400, 6, False, id="96-of-100-cached"),
    pytest.param(16, "x" * 400, 5, True, id="20-uncached"),
    pytest.param(16, "é" * 32, 0, True, id="utf8-bytes-count"),
    pytest.param(0, "x" * 4000, 0, False, id="zero-is-off"),
])
def test_prefix_based_decider(threshold: int, prompt: str, matched_blocks: int,
                              expected: bool) -> None:
    decider = PrefixBasedPdDecider("d", PrefixBasedPdDecider.Params(non_cached_tokens=threshold))
    decode = ep(8001)
    request = req(prompt=prompt)
    request.state.put(PREFIX_MATCH, _match(decode, matched_blocks))
    assert decider.disaggregate(request, decode) is expected


def test_prefix_based_decider_without_match_info_keeps_decode_only() -> None:
    decider = PrefixBasedPdDecider("d", PrefixBasedPdDecider.Params(non_cached_tokens=1))
    assert decider.disaggregate(req(prompt="x" * 400), ep(8001)) is False


def test_always_disagg_decider() -> None:
    assert AlwaysDisaggPdDecider("a", AlwaysDisaggPdDecider.Params()).disaggregate(
        req(), ep(8001))


def test_deprecated_pd_profile_handler_works_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmd.epp.config"):
        cfg = _config(handler="type: pd-profile-handler\n  parameters: {deciderPluginName: pd}")
    assert "plugins[0].type: pd-profile-handler is deprecated, use disagg-profile-handler" \
        in caplog.text
    result = _schedule(cfg, LONG, _pool(DECODE | PREFILL))
    assert result is not None and PREFILLER_HEADER in result.headers


def test_missing_prefill_pool_is_logged_once_and_its_return_too(
    caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config("always-disagg-pd-decider", "")
    with caplog.at_level(logging.INFO, logger="llmd.epp.plugins.profile._disagg"):
        for _ in range(3):
            _schedule(cfg, SHORT, _pool(DECODE))
        _schedule(cfg, SHORT, _pool(DECODE | PREFILL))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "disagg-profile-handler: profile 'prefill' finds no prefill endpoint; "
                    "disaggregated requests run decode only"),
        ("INFO", "disagg-profile-handler: profile 'prefill' finds prefill endpoints again")]


def test_renamed_prefill_profile_is_indexed_too() -> None:
    cfg = load_config(text=_CONFIG_RENAMED)
    snapshot = _pool(DECODE | PREFILL)
    result = _schedule(cfg, LONG, snapshot)
    assert result is not None and set(result.results) == {"d", "p"}
    match = _produced(cfg, LONG, snapshot)
    assert match.matched[result.results["p"].targets[0].id] == match.total_blocks


_CONFIG_RENAMED = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: disagg-profile-handler
  parameters: {profiles: {decode: d, prefill: p}, deciders: {prefill: always-disagg-pd-decider}}
- type: always-disagg-pd-decider
- type: decode-filter
- type: prefill-filter
- type: prefix-cache-scorer
schedulingProfiles:
- {name: d, plugins: [{pluginRef: decode-filter}, {pluginRef: prefix-cache-scorer}]}
- {name: p, plugins: [{pluginRef: prefill-filter}, {pluginRef: prefix-cache-scorer}]}
"""
