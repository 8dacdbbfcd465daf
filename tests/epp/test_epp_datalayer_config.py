"""llm-d's `dataLayer` and `parser` sections and their plugin types (`flowControl`:
test_epp_flow_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.engines import ENGINE_TYPE_LABEL
from llmd.epp import EndpointSpec, load_config
from llmd.epp.plugins import CoreMetricsExtractor, OpenAIParser, PassthroughParser
from llmd.errors import BadRequestError, ConfigError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"

LLM_D_DEFAULT = HEAD + """\
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
  parameters: {scheme: http, path: /metrics, insecureSkipVerify: true}
- type: core-metrics-extractor
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - {pluginRef: prefix-cache-scorer, weight: 3}
"""
"""llm-d's default config (pkg/epp/config/loader/defaults.go) written out in full."""


def _load(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "epp.yaml"
    path.write_text(HEAD + body)
    return load_config(path)


def test_llm_d_default_written_in_full_loads() -> None:
    cfg = load_config(text=LLM_D_DEFAULT)
    assert cfg.metrics is not None
    assert (cfg.metrics.source.type, cfg.metrics.source.scheme, cfg.metrics.source.path,
            cfg.metrics.source.verify_tls) == ("metrics-data-source", "http", "/metrics", False)
    assert cfg.metrics.extractor.type == "core-metrics-extractor"
    assert cfg.parser.type == "openai-parser"
    (profile,) = cfg.scheduler.profiles.values()
    assert [(w.scorer.type, w.weight) for w in profile.scorers] == [
        ("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3)]


def test_without_data_layer_the_default_source_and_extractor_are_created() -> None:
    cfg = load_config()
    assert cfg.metrics is not None
    assert (cfg.metrics.source.scheme, cfg.metrics.source.path) == ("http", "/metrics")
    assert {"metrics-data-source", "core-metrics-extractor", "openai-parser"} <= set(cfg.plugins)


def test_without_data_layer_the_declared_source_is_used(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "plugins:\n- {name: m, type: metrics-data-source, "
                          "parameters: {scheme: https, path: /stats/prom}}\n")
    assert cfg.metrics is not None and cfg.metrics.source.name == "m"
    assert (cfg.metrics.source.scheme, cfg.metrics.source.path) == ("https", "/stats/prom")


def test_data_layer_without_sources_turns_scraping_off(tmp_path: Path) -> None:
    assert _load(tmp_path, "dataLayer: {sources: []}\n").metrics is None


def test_empty_flow_control_without_the_gate_loads(tmp_path: Path) -> None:
    assert _load(tmp_path, "flowControl: {}\n").parser.type == "openai-parser"


def test_parser_section_selects_passthrough(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "plugins:\n- type: passthrough-parser\n"
                          "parser: {pluginRef: passthrough-parser}\n")
    assert isinstance(cfg.parser, PassthroughParser)


def test_passthrough_parser_reads_no_body_and_openai_rejects_it() -> None:
    body = b"\x00 not json {"
    headers = {"x-gateway-inference-objective": "batch"}
    request = PassthroughParser("p", PassthroughParser.Params()).parse(
        "r1", "/v1/completions", headers, body, {"batch": -1})
    assert (request.model, request.prompt, request.priority) == ("", "", -1)
    with pytest.raises(BadRequestError):
        OpenAIParser("o", OpenAIParser.Params()).parse("r1", "/v1/completions", {}, body, {})


@pytest.mark.parametrize("labels", [
    pytest.param(lambda e: {"inference.networking.k8s.io/engine-type": e}, id="llm-d-key"),
    pytest.param(lambda e: {ENGINE_TYPE_LABEL: e}, id="llmd-key"),
    pytest.param(lambda e: {"acme/engine": e}, id="custom-key"),
])
def test_extractor_reads_the_engine_label(engine: str, labels) -> None:  # type: ignore[no-untyped-def]
    params = CoreMetricsExtractor.Params.model_validate({"engineLabelKey": "acme/engine"}) \
        if "acme/engine" in labels(engine) else CoreMetricsExtractor.Params()
    extractor = CoreMetricsExtractor("x", params)
    assert extractor.engine_of(EndpointSpec("10.0.0.1", 8000, labels(engine))) == engine
    default = CoreMetricsExtractor("x", CoreMetricsExtractor.Params(default_engine=engine))
    assert default.engine_of(EndpointSpec("10.0.0.1", 8000)) == engine


SOURCE_EXTRACTOR = ("plugins:\n- type: queue-scorer\n- type: metrics-data-source\n"
                    "- type: core-metrics-extractor\n")


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(
        SOURCE_EXTRACTOR + "dataLayer:\n  sources:\n  - pluginRef: queue-scorer\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n",
        "dataLayer.sources[0].pluginRef: 'queue-scorer' is a queue-scorer plugin, not a data "
        "source (data sources: metrics-data-source; data source types: metrics-data-source)",
        id="source-wrong-kind"),
    pytest.param(
        SOURCE_EXTRACTOR + "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: metrics-data-source}]\n",
        "dataLayer.sources[0].extractors[0].pluginRef: 'metrics-data-source' is a "
        "metrics-data-source plugin, not an extractor (extractors: core-metrics-extractor; "
        "extractor types: core-metrics-extractor)",
        id="extractor-wrong-kind"),
    pytest.param(
        SOURCE_EXTRACTOR + "dataLayer:\n  sources:\n  - pluginRef: metrics-source\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n",
        "dataLayer.sources[0].pluginRef: 'metrics-source' is not defined (data sources: "
        "metrics-data-source; data source types: metrics-data-source) "
        "(did you mean 'metrics-data-source'?)",
        id="source-undefined"),
    pytest.param(
        SOURCE_EXTRACTOR + "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: core-metrics}]\n",
        "dataLayer.sources[0].extractors[0].pluginRef: 'core-metrics' is not defined",
        id="extractor-undefined"),
    pytest.param(
        SOURCE_EXTRACTOR + "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n",
        "dataLayer.sources[0].extractors: 'metrics-data-source' has no extractor",
        id="source-without-extractor"),
    pytest.param(
        SOURCE_EXTRACTOR + "- {name: m2, type: metrics-data-source}\n"
        "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n  - pluginRef: m2\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n",
        "dataLayer.sources[1].pluginRef: llmd scrapes one metrics source per endpoint",
        id="two-sources"),
    pytest.param(
        "plugins:\n- type: metrics-data-source\n- {name: m2, type: metrics-data-source}\n",
        "dataLayer: missing, and the plugins declare several data sources "
        "(metrics-data-source, m2)",
        id="ambiguous-implicit-source"),
    pytest.param(
        "plugins:\n- type: metrics-data-source\n  parameters: {scheme: ftp}\n",
        "plugins[0].parameters.scheme: 'ftp' is not one of 'http' or 'https'",
        id="bad-scheme"),
    pytest.param(
        "plugins:\n- type: metrics-data-source\n  parameters: {path: metrics}\n",
        "plugins[0].parameters.path: must be a URL path starting with '/'",
        id="bad-path"),
    pytest.param(
        "plugins:\n- type: core-metrics-extractor\n  parameters: {defaultEngine: triton}\n",
        "plugins[0].parameters.defaultEngine: 'triton' is not one of 'vllm' or 'sglang'",
        id="bad-default-engine"),
    pytest.param(
        "plugins:\n- type: core-metrics-extractor\n  parameters:\n    engineConfigs:\n"
        "    - {name: mine, queuedRequestsSpec: q}\n",
        "plugins[0].parameters.engineConfigs: custom engine metric mappings are not supported",
        id="custom-engine-configs"),
    pytest.param(
        "plugins:\n- type: vllmgrpc-parser\nparser: {pluginRef: vllmgrpc-parser}\n",
        "plugins[0].type: 'vllmgrpc-parser' is an llm-d parser that llmd does not implement: "
        "vLLM's gRPC API is not routed; use instead: openai-parser",
        id="vllmgrpc-parser"),
    pytest.param(
        "parser: {pluginRef: vertexai-parser}\n",
        "parser.pluginRef: 'vertexai-parser' is an llm-d parser that llmd does not implement: "
        "Vertex AI's gRPC API is not routed; use instead: openai-parser (parsers: none; parser "
        "types: openai-parser, passthrough-parser)",
        id="vertexai-parser-ref"),
    pytest.param(
        "plugins:\n- type: queue-scorer\nparser: {pluginRef: queue-scorer}\n",
        "parser.pluginRef: 'queue-scorer' is a queue-scorer plugin, not a parser",
        id="parser-wrong-kind"),
    pytest.param(
        "plugins:\n- type: passthrough-parser\nparser: {pluginRef: passthru}\n",
        "parser.pluginRef: 'passthru' is not defined (parsers: passthrough-parser; parser "
        "types: openai-parser, passthrough-parser)",
        id="parser-undefined"),
])
def test_data_layer_and_parser_errors_name_the_path(
    tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    assert f"epp.yaml: {message}" in str(err.value).replace(str(tmp_path) + "/", "")
