"""llm-d EndpointPickerConfigs with `dataLayer` and `parser`, end to end: real simulators, the
llmd EPP (serve()) loading the file, and a real Envoy in front."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import openai
import pytest
from _gateway_stack import (
    MODEL,
    SERVED_BY,
    assert_completion_and_chat_answered,
    endpoint_id,
    flag,
    run_epp,
    run_gateway,
    wait_until,
)

from llmd.sim import RunningSim

HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"


def _config(tmp_path: Path, *, path: str = "/metrics", parser: str = "openai-parser") -> Path:
    """llm-d's default config written out in full, with the metrics path and parser given."""
    file = tmp_path / "epp.yaml"
    file.write_text(HEAD + f"""\
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
  parameters: {{scheme: http, path: {path}, insecureSkipVerify: true}}
- type: core-metrics-extractor
- type: {parser}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors:
    - pluginRef: core-metrics-extractor
parser:
  pluginRef: {parser}
schedulingProfiles:
- name: default
  plugins:
  - {{pluginRef: queue-scorer, weight: 2}}
  - {{pluginRef: kv-cache-utilization-scorer, weight: 2}}
  - {{pluginRef: prefix-cache-scorer, weight: 3}}
""")
    return file


async def _epp_metrics(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in text.splitlines()
                                        if line.startswith("llmd_epp_"))}


async def test_llm_d_default_config_in_full_routes_through_envoy(
    tmp_path: Path, sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    """Both endpoints are scraped at /metrics through the engine's adapter (a finite metrics
    age, no scrape error) and the openai client is served through Envoy."""
    async with run_epp([flag(s) for s in sims], config_file=_config(tmp_path)) as epp, \
            run_gateway(epp=epp.address) as gw, openai.AsyncOpenAI(
                base_url=gw.url + "/v1", api_key="none", max_retries=0) as client:
        ages = [f'llmd_epp_endpoint_metrics_age_seconds{{endpoint="{endpoint_id(s)}"}}'
                for s in sims]

        async def scraped() -> bool:
            got = await _epp_metrics(http, epp.listening.metrics_port)
            return all(got.get(a, float("inf")) < 5 for a in ages)

        await wait_until(scraped, timeout_s=10)
        got = await _epp_metrics(http, epp.listening.metrics_port)
        assert not any(k.startswith("llmd_epp_scrape_errors_total") and v for k, v in got.items())
        fleet = {endpoint_id(s) for s in sims}
        await assert_completion_and_chat_answered(client, fleet)


async def test_metrics_data_source_path_is_the_one_scraped(
    tmp_path: Path, sims: list[RunningSim], http: aiohttp.ClientSession
) -> None:
    """A path the simulators do not serve: every scrape of both endpoints fails (counted per
    endpoint), their metrics never get fresh (age +Inf), and requests are still routed."""
    config = _config(tmp_path, path="/not-the-metrics")
    async with run_epp([flag(s) for s in sims], config_file=config) as epp, \
            run_gateway(epp=epp.address) as gw:
        errors = [f'llmd_epp_scrape_errors_total{{endpoint="{endpoint_id(s)}"}}' for s in sims]

        async def failing() -> bool:
            got = await _epp_metrics(http, epp.listening.metrics_port)
            return all(got.get(e, 0) >= 3 for e in errors)

        await wait_until(failing, timeout_s=10)
        got = await _epp_metrics(http, epp.listening.metrics_port)
        for s in sims:
            assert got[f'llmd_epp_endpoint_metrics_age_seconds{{endpoint="{endpoint_id(s)}"}}'] \
                == float("inf")
        body = {"model": MODEL, "prompt": "still routed", "max_tokens": 2}
        async with http.post(gw.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers[SERVED_BY] in {endpoint_id(s) for s in sims}


@pytest.mark.parametrize(("parser", "routed"), [
    pytest.param("passthrough-parser", True, id="passthrough-routes"),
    pytest.param("openai-parser", False, id="openai-answers-400"),
])
async def test_passthrough_parser_routes_an_unparseable_body(
    tmp_path: Path, sims: list[RunningSim], http: aiohttp.ClientSession, parser: str,
    routed: bool,
) -> None:
    """With `parser: passthrough-parser` the EPP routes a body it cannot read (the endpoint
    answers it, as its x-llmd-served-by shows) where `openai-parser` answers 400 itself; a good
    request is served either way."""
    fleet = {endpoint_id(s) for s in sims}
    config = _config(tmp_path, parser=parser)
    async with run_epp([flag(s) for s in sims], config_file=config) as epp, \
            run_gateway(epp=epp.address) as gw:
        async with http.post(gw.url + "/v1/completions", data=b"{not json",
                             headers={"content-type": "application/json"}) as resp:
            text = await resp.text()
            if routed:
                assert resp.headers.get(SERVED_BY) in fleet, (resp.status, text)
            else:
                assert resp.status == 400 and SERVED_BY not in resp.headers, text
                assert "not valid JSON" in text
        body = {"model": MODEL, "prompt": "a good one", "max_tokens": 2}
        async with http.post(gw.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers[SERVED_BY] in fleet
