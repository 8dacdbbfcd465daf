"""Adapters map each engine's own /metrics page to one EndpointMetrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.engines import EndpointMetrics, LoraState, MetricsPage, get_adapter
from llmd.errors import EngineError


def test_vllm_reads_real_vllm_page(shared_dir: Path) -> None:
    text = (shared_dir / "fixtures" / "vllm-metrics.txt").read_text()
    adapter = get_adapter("vllm")
    m = adapter.endpoint_metrics(MetricsPage.parse(text, adapter.scraped_families))
    assert m == EndpointMetrics(
        waiting=0, running=0, kv_usage=0.0, block_size=128, total_blocks=8192,
        lora=None, prefix_cache_hits=0.0, prefix_cache_queries=65.0,
    )


def test_filtered_parse_equals_full_parse(shared_dir: Path) -> None:
    text = (shared_dir / "fixtures" / "vllm-metrics.txt").read_text()
    adapter = get_adapter("vllm")
    full = adapter.endpoint_metrics(MetricsPage.parse(text))
    assert adapter.endpoint_metrics(MetricsPage.parse(text, adapter.scraped_families)) == full


VLLM_LOADED = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 8.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",waiting_lora_adapters=""} 10.0
vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters="c"} 20.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 30.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
"""

SGLANG_LOADED = """\
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 7.0
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 8.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.5
# TYPE sglang:cache_config_info gauge
sglang:cache_config_info{model_name="m",page_size="16",num_pages="4096"} 1.0
# TYPE sglang:cached_tokens counter
sglang:cached_tokens_total{model_name="m",cache_source="device"} 30.0
sglang:cached_tokens_total{model_name="m",cache_source="host"} 5.0
# TYPE sglang:prompt_tokens counter
sglang:prompt_tokens_total{model_name="m"} 100.0
"""


@pytest.mark.parametrize(
    ("engine_name", "page", "expected"),
    [
        pytest.param(
            "vllm", VLLM_LOADED,
            EndpointMetrics(waiting=7, running=8, kv_usage=0.5,
                            lora=LoraState(2, ("a", "b"), ("c",)),
                            prefix_cache_hits=30.0, prefix_cache_queries=100.0),
            id="vllm-summed-ranks-fallback-usage-newest-lora",
        ),
        pytest.param(
            "sglang", SGLANG_LOADED,
            EndpointMetrics(waiting=7, running=8, kv_usage=0.5, block_size=16, total_blocks=4096,
                            prefix_cache_hits=30.0, prefix_cache_queries=100.0),
            id="sglang-pages-and-device-hits",
        ),
    ],
)
def test_loaded_page(engine_name: str, page: str, expected: EndpointMetrics) -> None:
    adapter = get_adapter(engine_name)
    assert adapter.endpoint_metrics(MetricsPage.parse(page, adapter.scraped_families)) == expected


def test_other_engines_page_reads_as_idle(engine: str) -> None:
    """A page of the wrong dialect carries none of the names: nothing is invented."""
    other = SGLANG_LOADED if engine == "vllm" else VLLM_LOADED
    adapter = get_adapter(engine)
    m = adapter.endpoint_metrics(MetricsPage.parse(other, adapter.scraped_families))
    assert (m.waiting, m.running, m.prefix_cache_queries) == (0, 0, None)


def test_garbage_page_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="unparseable"):
        MetricsPage.parse('vllm:num_requests_waiting{engine="0" 1\n')


def test_unknown_engine_names_allowed_values() -> None:
    with pytest.raises(EngineError, match="expected one of vllm, sglang"):
        get_adapter("trtllm")


def test_adapter_identity(engine: str) -> None:
    adapter = get_adapter(engine)
    assert adapter.name == engine
    assert adapter.engine_type_label == engine
    assert adapter.sidecar_connector == {"vllm": "nixlv2", "sglang": "sglang"}[engine]
    assert adapter.metric_names.waiting.startswith(f"{engine}:")
    assert "/health" in adapter.extra_routes


TRICKY = """\
# HELP weird a page with what the text format allows
# TYPE weird gauge
weird{a="q\\"uote",b="back\\\\slash",c="new\\nline",d="",} 1.5 1712345678000
weird{ a = "spaced" , b="x" } -2e3
weird{} NaN
weird +Inf
other_total 7
"""


def _reference(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What prometheus-client's own parser reads (the parser MetricsPage replaced)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


@pytest.mark.parametrize("page", ["vllm-fixture", "vllm-loaded", "sglang-loaded", "tricky"])
def test_pages_parse_as_prometheus_client_parses_them(page: str, shared_dir: Path) -> None:
    text = {"vllm-fixture": (shared_dir / "fixtures" / "vllm-metrics.txt").read_text()
            if page == "vllm-fixture" else "", "vllm-loaded": VLLM_LOADED,
            "sglang-loaded": SGLANG_LOADED, "tricky": TRICKY}[page]
    ours = {k: [(dict(labels), v) for labels, v in rows]
            for k, rows in MetricsPage.parse(text).samples.items()}
    assert repr(ours) == repr(_reference(text))  # repr: NaN compares equal to itself there


@pytest.mark.parametrize("line", [
    'm{a="1" 1', 'm{a=1} 1', "m", 'm{a="1"}', "m one", "m 1 2 3", '{a="1"} 1', 'm{a="x} 1',
])
def test_malformed_lines_are_engine_errors(line: str) -> None:
    with pytest.raises(EngineError, match="unparseable"):
        MetricsPage.parse(line + "\n")
