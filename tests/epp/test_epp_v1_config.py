"""llm-d.ai/v1 EndpointPickerConfig: both apiVersions, the renames, featureGates,
requestHandler.parsers, dataLayer.discovery.endpoints, fallbackProfile, the table of llm-d
plugins llmd does not implement, the v1 default config, Helm values files and `--check`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from _cli import LLMD

from llmd.epp import EndpointSpec, InferenceRequest, PoolSnapshot
from llmd.epp._config_unsupported import UNSUPPORTED
from llmd.epp.config import load_config, v1_default_config
from llmd.epp.datastore import Endpoint
from llmd.epp.plugins import PLUGINS, FileDiscovery
from llmd.errors import ConfigError

V1 = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
V1ALPHA1 = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
GUIDES = Path(__file__).parent / "guides"


def _problems(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(text=text)
    return str(err.value)


def test_v1_loads_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmd.epp.config"):
        load_config(text=V1 + "plugins:\n- type: queue-scorer\n")
    assert caplog.text == ""


def test_v1alpha1_warns_naming_every_change(caplog: pytest.LogCaptureFixture) -> None:
    text = V1ALPHA1 + """\
featureGates: [prepareDataPlugins]
plugins:
- type: openai-parser
- type: file-discovery
  parameters: {path: /nonexistent.yaml}
- type: local-syncer
parser: {pluginRef: openai-parser}
dataLayer:
  discovery: {pluginRef: file-discovery}
  crossReplicaSyncerPluginRef: local-syncer
"""
    with caplog.at_level(logging.WARNING, logger="llmd.epp.config"):
        config = load_config(text=text)
    assert config.discovery is not None and config.discovery.name == "file-discovery"
    assert ("<config text>: apiVersion llm-d.ai/v1alpha1 is deprecated; for llm-d.ai/v1 change: "
            "apiVersion: llm-d.ai/v1; parser.pluginRef → requestHandler.parsers: "
            "[{pluginRef: ...}]; dataLayer.discovery.pluginRef → "
            "dataLayer.discovery.endpoints.pluginRef; dataLayer.crossReplicaSyncerPluginRef → "
            "dataLayer.crossReplica.syncerPluginRef; featureGates: remove prepareDataPlugins"
            ) in caplog.text


@pytest.mark.parametrize("head", [V1, V1ALPHA1], ids=["v1", "v1alpha1"])
def test_both_shapes_load_under_both_versions(head: str) -> None:
    for section in ("parser: {pluginRef: passthrough-parser}\n",
                    "requestHandler:\n  parsers: [{pluginRef: passthrough-parser}]\n"):
        config = load_config(text=head + "plugins:\n- type: passthrough-parser\n" + section)
        assert config.parser.type == "passthrough-parser"


def test_default_parser_is_openai() -> None:
    assert load_config(text=V1).parser.type == "openai-parser"


@pytest.mark.parametrize(("body", "message"), [
    pytest.param("featureGates: [flowControll]\n",
                 "featureGates[0]: 'flowControll' is not a feature gate (known: flowControl, "
                 "experimentalPlugins, prepareDataPlugins, dataLayer)", id="unknown-gate"),
    pytest.param("featureGates: [experimentalPlugins, experimentalPlugins]\n",
                 "featureGates[1]: 'experimentalPlugins' is given twice", id="gate-twice"),
    pytest.param("parser: {pluginRef: openai-parser}\nrequestHandler:\n"
                 "  parsers: [{pluginRef: openai-parser}]\n",
                 "parser: give requestHandler.parsers (llm-d v1) or parser (v1alpha1), not both",
                 id="parser-both-shapes"),
    pytest.param("plugins:\n- type: openai-parser\n- type: passthrough-parser\n"
                 "requestHandler:\n  parsers: [{pluginRef: openai-parser}, "
                 "{pluginRef: passthrough-parser}]\n",
                 "requestHandler.parsers: llmd runs one parser (OpenAI bodies), got "
                 "openai-parser, passthrough-parser", id="two-parsers"),
    pytest.param("requestHandler:\n  parsers: [{pluginRef: anthropic-parser}]\n",
                 "requestHandler.parsers[0].pluginRef: 'anthropic-parser' is an llm-d parser "
                 "that llmd does not implement: llmd parses OpenAI request bodies; use "
                 "instead: openai-parser", id="unsupported-parser-ref"),
    pytest.param("dataLayer:\n  discovery:\n    endpoints: {pluginRef: nope}\n",
                 "dataLayer.discovery.endpoints.pluginRef: 'nope' is not defined "
                 "(endpoint discoverys: none", id="discovery-undefined"),
    pytest.param("plugins:\n- type: queue-scorer\ndataLayer:\n  discovery:\n"
                 "    pluginRef: queue-scorer\n",
                 "dataLayer.discovery.pluginRef: 'queue-scorer' is a queue-scorer plugin, "
                 "not an endpoint discovery", id="discovery-wrong-kind"),
    pytest.param("plugins:\n- type: file-discovery\n",
                 "plugins[0].parameters.path: field required", id="file-discovery-no-path"),
    pytest.param("plugins:\n- type: approx-prefix-cache-producer\n  parameters: "
                 "{maxPrefixTokensToMatch: -1}\n",
                 "plugins[0].parameters.maxPrefixTokensToMatch: Input should be greater than or "
                 "equal to 0", id="bad-max-prefix-tokens"),
    pytest.param("plugins:\n- type: queue-scorer\nschedulingProfiles:\n- name: a\n"
                 "  fallbackProfile: b\n  plugins: [{pluginRef: queue-scorer}]\n",
                 "schedulingProfiles[0].fallbackProfile: 'b' is not a scheduling profile "
                 "(profiles: a)", id="fallback-undefined"),
])
def test_v1_errors_name_the_field_and_what_is_allowed(body: str, message: str) -> None:
    assert message in _problems(V1 + body)


@pytest.mark.parametrize("plugin_type", sorted(UNSUPPORTED))
def test_unsupported_plugins_fail_naming_why_and_instead(plugin_type: str) -> None:
    text = _problems(V1 + f"plugins:\n- type: {plugin_type}\n")
    u = UNSUPPORTED[plugin_type]
    assert (f"plugins[0].type: '{plugin_type}' is an llm-d {u.kind} that llmd does not "
            f"implement: {u.why}; use instead: {u.instead}") in text
    assert plugin_type not in PLUGINS


def test_disagg_headers_handler_loads_with_a_deprecation(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    with caplog.at_level(logging.WARNING, logger="llmd.epp.config"):
        load_config(text=V1 + "plugins:\n- type: prefill-header-handler\n"
                    "- type: disagg-headers-handler\n  name: h2\n")
    assert "prefill-header-handler is deprecated, use disagg-profile-handler" in caplog.text
    assert "disagg-headers-handler is deprecated, use disagg-profile-handler" in caplog.text


def _ep(port: int, labels: dict[str, str]) -> Endpoint:
    spec = EndpointSpec("10.0.0.1", port, labels)
    return Endpoint(spec.id, spec)


def test_fallback_profile_runs_when_its_profile_has_no_candidate() -> None:
    config = load_config(text=V1 + """\
plugins:
- type: label-selector-filter
  name: gpu
  parameters: {matchLabels: {gpu: h100}}
- type: queue-scorer
schedulingProfiles:
- name: default
  fallbackProfile: any
  plugins: [{pluginRef: gpu}, {pluginRef: queue-scorer}]
- name: any
  plugins: [{pluginRef: queue-scorer}]
""")
    assert list(config.scheduler.profiles) == ["default"]
    pool = PoolSnapshot((_ep(8001, {"gpu": "a10"}),), 0.0)
    result = config.scheduler.schedule(InferenceRequest("r", prompt="x"), pool)
    assert result is not None and result.destination.spec.port == 8001
    assert "fallback any" in config.describe()


def test_approx_producer_caps_in_tokens() -> None:
    config = load_config(text=V1 + "plugins:\n- type: approx-prefix-cache-producer\n"
                         "  parameters: {maxPrefixTokensToMatch: 160, blockSizeTokens: 16}\n")
    producer = config.plugins["approx-prefix-cache-producer"]
    assert producer._max_blocks == 10  # type: ignore[attr-defined]


def test_v1_default_config_routes_with_the_recommended_plugins() -> None:
    config = load_config(text=v1_default_config({"vllm": 15928, "sglang": 30720}))
    assert config.describe() == (
        "handler single-profile-handler; profile default: filters "
        "[prefix-cache-affinity-filter] scorers [token-load-scorer×1] picker max-score-picker")
    assert {"approx-prefix-cache-producer", "inflight-load-producer"} <= set(config.plugins)
    pool = PoolSnapshot((_ep(8001, {}), _ep(8002, {"llm-d.ai/engine-type": "sglang"})), 0.0)
    assert config.scheduler.schedule(InferenceRequest("r", prompt="x" * 400), pool) is not None


def test_file_discovery_reads_llm_ds_file_shape(tmp_path: Path) -> None:
    f = tmp_path / "endpoints.yaml"
    f.write_text('endpoints:\n- name: vllm-0\n  address: "10.0.0.1"\n  port: "8000"\n'
                 '  labels: {llm-d.ai/engine-type: sglang}\n')
    plugin = FileDiscovery("f", FileDiscovery.Params(path=f))
    [spec] = plugin.load()
    assert (spec.id, spec.name, spec.engine) == ("10.0.0.1:8000", "default/vllm-0", "sglang")


def _watched(tmp_path: Path) -> tuple[Path, asyncio.Event,
                                       AsyncIterator[Sequence[EndpointSpec]]]:
    """An endpoints file listing port 8000, watched every 10 ms: (file, stop, updates)."""
    f = tmp_path / "endpoints.yaml"
    f.write_text("endpoints:\n- {address: 10.0.0.1, port: 8000}\n")
    plugin = FileDiscovery("f", FileDiscovery.Params(path=f, watch_file=True,
                                                     poll_interval_s=0.01))
    stop = asyncio.Event()
    return f, stop, plugin.updates(stop)


async def test_file_discovery_watch_reloads_on_change(tmp_path: Path) -> None:
    f, stop, updates = _watched(tmp_path)
    async with asyncio.timeout(5):
        assert [s.port for s in await anext(updates)] == [8000]
        f.write_text("endpoints:\n- {address: 10.0.0.1, port: 8000}\n"
                     "- {address: 10.0.0.2, port: 8001}\n")
        assert [s.port for s in await anext(updates)] == [8000, 8001]
        stop.set()
        with pytest.raises(StopAsyncIteration):
            await anext(updates)


async def test_file_discovery_keeps_the_last_endpoints_while_the_file_is_bad(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f, stop, updates = _watched(tmp_path)
    async with asyncio.timeout(5):
        assert [s.port for s in await anext(updates)] == [8000]
        next_update = asyncio.ensure_future(anext(updates))
        f.write_text("endpoints: [{address: 10.0.0.1, port: not-a-port}]\n")  # a bad edit
        while "keeping the last endpoints" not in caplog.text:  # noqa: ASYNC110 (deadline)
            await asyncio.sleep(0.01)
        assert not next_update.done()  # no update: the pool keeps 8000
        f.write_text("endpoints:\n- {address: 10.0.0.2, port: 8001, labels: {a: b}}\n")
        assert [s.port for s in await next_update] == [8001]
        stop.set()


@pytest.mark.parametrize(("values", "message"), [
    pytest.param("router:\n  epp:\n    pluginsConfigFile: mine.yaml\n",
                 "router.epp.pluginsConfigFile: 'mine.yaml' is not in pluginsCustomConfig "
                 "(none) and is not the chart's default-plugins.yaml", id="missing-file"),
    pytest.param("router:\n  epp:\n    pluginsCustomConfig: {a.yaml: x, b.yaml: y}\n",
                 "router.epp.pluginsConfigFile: not set, and pluginsCustomConfig holds 2 "
                 "configs (a.yaml, b.yaml): name the one to load", id="ambiguous"),
    pytest.param("modelServers: {}\n", "no EndpointPickerConfig found: expected "
                 "router.epp.pluginsCustomConfig or inferenceExtension.pluginsCustomConfig",
                 id="not-router-values"),
])
def test_values_file_problems(tmp_path: Path, values: str, message: str) -> None:
    f = tmp_path / "values.yaml"
    f.write_text(values)
    with pytest.raises(ConfigError) as err:
        load_config(values=f)
    assert message in str(err.value)


def test_values_built_in_default_and_gie_era_section(tmp_path: Path) -> None:
    f = tmp_path / "values.yaml"
    f.write_text("router:\n  epp:\n    pluginsConfigFile: default-plugins.yaml\n")
    assert "queue-scorer" in load_config(values=f).plugins
    f.write_text("inferenceExtension:\n  pluginsCustomConfig:\n    c.yaml: |\n"
                 f"      {V1.replace(chr(10), chr(10) + '      ')}plugins: [{{type: "
                 "load-aware-scorer}]\n")
    assert "load-aware-scorer" in load_config(values=f).plugins


async def _check(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "epp", *args, "--check", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(("flag", "name", "profiles"), [
    pytest.param("--values", "optimized-baseline.values.yaml", ["default"], id="baseline"),
    pytest.param("--values", "pd-disaggregation.values.yaml", ["prefill", "decode"], id="pd"),
    pytest.param("--config-file", "precise-sglang.yaml", ["default"], id="precise-sglang"),
])
async def test_guide_configs_pass_check(flag: str, name: str, profiles: list[str]) -> None:
    code, out, err = await _check(flag, str(GUIDES / name))
    assert code == 0, err
    assert out.startswith(str(GUIDES / name))
    assert [line.split(":")[0].split()[-1] for line in out.splitlines()
            if line.strip().startswith("profile ")] == profiles


async def test_upstream_sglang_precise_guide_fails_naming_the_plugins() -> None:
    code, _, err = await _check("--values", str(GUIDES / "precise-sglang-upstream.values.yaml"))
    assert code == 2
    assert "plugins[0].type: 'token-producer' is an llm-d data producer that llmd does not " \
           "implement" in err
    assert "plugins[1].type: 'endpoint-notification-source' is an llm-d data source" in err
    assert "use instead: remove it and its dataLayer.sources entry" in err
    assert "extractors[0]" not in err  # one problem per cause


async def test_check_lists_file_discovery_endpoints(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints:\n- {address: 10.0.0.1, port: 8000}\n")
    config = tmp_path / "epp.yaml"
    config.write_text(V1 + f"plugins:\n- type: file-discovery\n  parameters: {{path: "
                      f"{endpoints}}}\ndataLayer:\n  discovery:\n    endpoints:\n"
                      "      pluginRef: file-discovery\n")
    code, out, err = await _check("--config-file", str(config))
    assert code == 0, err
    assert "endpoints (file-discovery): 10.0.0.1:8000" in out


@pytest.mark.parametrize(("producer", "expected"), [
    pytest.param("- type: inflight-load-producer\n", 33821.0, id="adopts-the-filters"),
    pytest.param("- type: inflight-load-producer\n  parameters: {peakPrefillThroughput: 7}\n",
                 7.0, id="own-value-wins"),
    pytest.param("", 33821.0, id="added-producer-adopts"),
])
def test_producer_drains_at_the_filters_throughput(producer: str, expected: float) -> None:
    config = load_config(text=V1 + "plugins:\n" + producer + """\
- type: token-load-scorer
  parameters: {peakPrefillThroughput: 999}
- type: prefix-cache-affinity-filter
  parameters: {peakPrefillThroughput: 33821}
""")
    rates = config.plugins["inflight-load-producer"].rates  # type: ignore[attr-defined]
    assert rates.default == expected
