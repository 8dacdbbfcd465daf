"""Config errors for P/D scheduling: profile and decider references, parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.epp import load_config
from llmd.errors import ConfigError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
PROFILES = """\
schedulingProfiles:
- name: decode
  plugins: [{pluginRef: queue-scorer}]
- name: prefill
  plugins: [{pluginRef: queue-scorer}]
"""


def _plugins(handler_params: str, *more: str) -> str:
    lines = ["plugins:", "- type: disagg-profile-handler", f"  parameters: {handler_params}",
             "- type: queue-scorer", *more]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(
        _plugins("{deciders: {prefill: pd}}") + PROFILES,
        "epp.yaml: plugins[0].parameters.deciders.prefill: 'pd' is not defined (deciders: none; "
        "decider types: always-disagg-pd-decider, prefix-based-pd-decider)",
        id="decider-not-defined"),
    pytest.param(
        _plugins("{deciders: {prefill: queue-scorer}}",
                 "- {name: pd, type: always-disagg-pd-decider}") + PROFILES,
        "epp.yaml: plugins[0].parameters.deciders.prefill: 'queue-scorer' is a scorer, not a "
        "decider (deciders: pd;",
        id="decider-ref-is-a-scorer"),
    pytest.param(
        _plugins("{profiles: {decode: dec}, deciders: {prefill: pd}}",
                 "- {name: pd, type: always-disagg-pd-decider}") + PROFILES,
        "epp.yaml: plugins[0].parameters.profiles.decode: 'dec' is not a scheduling profile "
        "(profiles: decode, prefill)",
        id="decode-profile-missing"),
    pytest.param(
        _plugins("{deciders: {prefill: pd}}", "- {name: pd, type: always-disagg-pd-decider}")
        + "schedulingProfiles:\n- name: decode\n  plugins: [{pluginRef: queue-scorer}]\n",
        "epp.yaml: plugins[0].parameters.profiles.prefill: 'prefill' is not a scheduling "
        "profile (profiles: decode)",
        id="prefill-profile-missing"),
    pytest.param(
        _plugins("{}") + PROFILES,
        "epp.yaml: schedulingProfiles[1].name: profile 'prefill' never runs: "
        "disagg-profile-handler runs 'decode'; without a prefill decider only the decode "
        "profile runs",
        id="prefill-profile-without-decider"),
    pytest.param(
        _plugins("{profiles: {decode: x, prefill: x}}") + PROFILES,
        "epp.yaml: plugins[0].parameters.profiles: decode and prefill must be different "
        "profiles (both are 'x')",
        id="same-profile-twice"),
    pytest.param(
        _plugins("{profiles: {encode: e}}") + PROFILES,
        "epp.yaml: plugins[0].parameters.profiles: llmd schedules no encode stage (E/P/D); "
        "give decode and prefill",
        id="encode-stage-unknown"),
    pytest.param(
        _plugins("{deciders: {prefill: pd}}", "- name: pd",
                 "  type: prefix-based-pd-decider", "  parameters: {nonCachedTokens: -1}")
        + PROFILES,
        "epp.yaml: plugins[2].parameters.nonCachedTokens: Input should be greater than or "
        "equal to 0 (got -1)",
        id="negative-threshold"),
    pytest.param(
        _plugins("{deciders: {prefill: pd}}", "- {name: pd, type: always-disagg-pd-decider}")
        + PROFILES.replace("- name: prefill\n  plugins: [{pluginRef: queue-scorer}]",
                           "- name: prefill\n  plugins: [{pluginRef: pd}]"),
        "epp.yaml: schedulingProfiles[1].plugins[0].pluginRef: 'pd' is a decider; a profile "
        "takes filters, scorers and one picker",
        id="decider-inside-a-profile"),
    pytest.param(
        "plugins:\n- type: pd-profile-handler\n- type: queue-scorer\n" + PROFILES,
        "epp.yaml: plugins[0].parameters.deciderPluginName: 'prefix-based-pd-decider' is not "
        "defined",
        id="deprecated-alias-default-decider-undeclared"),
    pytest.param(
        "plugins:\n- type: pd-profile-handler\n  parameters: {primaryPort: 8000}\n"
        "- type: queue-scorer\n" + PROFILES,
        "epp.yaml: plugins[0].parameters.primaryPort: unknown field (parameters of "
        "pd-profile-handler: deciderPluginName, decodeProfile, prefillProfile, "
        "prefixPluginName, prefixPluginType)",
        id="deprecated-alias-primary-port"),
])
def test_pd_config_errors_name_file_path_and_allowed(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "epp.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).replace(str(tmp_path) + "/", "").splitlines()
    assert len(lines) == 1 and message in lines[0], lines  # one problem, no follow-on noise


def test_sample_pd_config_loads() -> None:
    sample = Path(__file__).resolve().parents[2] / "examples" / "epp-pd.yaml"
    cfg = load_config(sample)
    assert cfg.scheduler.handler.type == "disagg-profile-handler"
    assert set(cfg.scheduler.profiles) == {"decode", "prefill"}
    assert [f.type for f in cfg.scheduler.profiles["prefill"].filters] == ["prefill-filter"]
