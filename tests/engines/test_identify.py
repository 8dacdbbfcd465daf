"""Each adapter recognises its own engine's answers (plain data, as real servers answer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.engines import (
    ADAPTERS,
    ServerAnswers,
    identify_server,
    metric_families,
    probe_routes,
    served_models,
)
from llmd.errors import EngineError

URL = "http://10.0.0.7:8000"


def models(owner: str, *ids: str, parent: str | None = None) -> dict[str, object]:
    return {"object": "list", "data": [
        {"id": i, "object": "model", "owned_by": owner, "root": i, "parent": parent}
        for i in ids]}


VLLM = ServerAnswers(
    {"/v1/models": {"object": "list", "data": [
        {"id": "Qwen/Qwen3-0.6B", "object": "model", "owned_by": "vllm", "parent": None},
        {"id": "sql-lora", "object": "model", "owned_by": "vllm",
         "parent": "Qwen/Qwen3-0.6B"}]}},
    frozenset({"vllm:num_requests_waiting", "process_cpu_seconds_total"}))
SGLANG = ServerAnswers(
    {"/v1/models": models("sglang", "qwen3"),
     "/get_model_info": {"model_path": "Qwen/Qwen3-0.6B", "is_generation": True},
     "/get_server_info": {"disaggregation_mode": "prefill",
                          "disaggregation_bootstrap_port": 8998, "tp_size": 1}},
    frozenset())  # no --enable-metrics


def test_probe_routes_ask_the_model_list_first_and_each_engines_own_routes() -> None:
    routes = probe_routes(list(ADAPTERS.values()))
    assert routes[0] == "/v1/models" and "/get_model_info" in routes
    assert len(routes) == len(set(routes))


@pytest.mark.parametrize(("answers", "engine", "evidence", "role", "side_port"), [
    pytest.param(VLLM, "vllm", ("/v1/models owned_by 'vllm'", "/metrics has vllm:*"), None,
                 None, id="vllm"),
    pytest.param(SGLANG, "sglang", ("/v1/models owned_by 'sglang'", "/get_model_info answers",
                                    "/get_server_info answers"), "prefill", 8998,
                 id="sglang-prefill-without-metrics"),
    pytest.param(ServerAnswers({"/v1/models": models("someone", "m")},
                               frozenset({"sglang:num_queue_reqs"})),
                 "sglang", ("/metrics has sglang:*",), None, None, id="metrics-only"),
    pytest.param(ServerAnswers({"/v1/models": models("sglang", "m"),
                                "/server_info": {"disaggregation_mode": "null"}}),
                 "sglang", ("/v1/models owned_by 'sglang'", "/server_info answers"), "both",
                 None, id="sglang-server-info"),
])
def test_identify_from_answers(answers: ServerAnswers, engine: str,
                               evidence: tuple[str, ...], role: str | None,
                               side_port: int | None) -> None:
    found = identify_server(URL, answers, ADAPTERS)
    assert (found.engine, found.evidence, found.role, found.side_port) == (
        engine, evidence, role, side_port)


def test_lora_adapters_are_not_base_models() -> None:
    assert served_models(VLLM) == ("Qwen/Qwen3-0.6B",)
    assert served_models(ServerAnswers({"/v1/models": {"data": "nonsense"}})) == ()


def test_a_given_engine_wins() -> None:
    found = identify_server(URL, VLLM, ADAPTERS, engine="sglang")
    assert found.engine == "sglang" and found.evidence == ("given",)


@pytest.mark.parametrize(("answers", "message"), [
    pytest.param(ServerAnswers({"/v1/models": models("tgi", "m")}),
                 "cannot tell which engine this is (no /v1/models owned_by, metric prefix or "
                 "engine route of vllm or sglang answered); say it: "
                 f"{URL},engine=vllm|sglang", id="unknown"),
    pytest.param(ServerAnswers({"/v1/models": models("vllm", "m")},
                               frozenset({"sglang:token_usage"})),
                 "it looks like several: vllm: /v1/models owned_by 'vllm'; sglang: /metrics "
                 "has sglang:*", id="ambiguous"),
])
def test_unrecognised_servers_are_an_error_that_says_what_to_give(
        answers: ServerAnswers, message: str) -> None:
    with pytest.raises(EngineError) as err:
        identify_server(URL, answers, ADAPTERS)
    assert message in str(err.value) and str(err.value).startswith(URL)


def test_metric_families_of_a_real_vllm_page(shared_dir: Path) -> None:
    text = (shared_dir / "fixtures" / "vllm-metrics.txt").read_text()
    names = metric_families(text)
    assert "vllm:num_requests_waiting" in names
    found = identify_server(URL, ServerAnswers({}, names), ADAPTERS)
    assert found.engine == "vllm" and found.models == ()
