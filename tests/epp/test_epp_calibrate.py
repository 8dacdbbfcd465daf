"""`llmd calibrate` against simulators of both engines: the estimate is within 10% of the
simulator's configured prefill rate (1 / prefill_per_token_ms; its fixed per-request overhead
counts as prefill time, as on a real engine, and costs a few percent at 8k-token probes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml
from _cli import LLMD

from llmd.engines import MetricsPage, get_adapter
from llmd.epp.calibrate import Calibration, calibrate, engine_of, snippet
from llmd.errors import EngineError
from llmd.sim import RunningSim, SimConfig, running_sim

TOLERANCE = 0.10
PER_TOKEN_MS = {"vllm": 0.04, "sglang": 0.02}
"""The simulators' prefill speed: 25,000 and 50,000 tok/s (SGLang about 2x, as on H100)."""


@contextlib.asynccontextmanager
async def _sim(engine: str) -> AsyncIterator[RunningSim]:
    cfg = SimConfig(engine=engine, port=0, model="tiny",  # type: ignore[arg-type]
                    prefill_per_token_ms=PER_TOKEN_MS[engine], prefill_overhead_ms=2.0,
                    drain_timeout_s=0.2)
    async with running_sim(cfg) as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def test_calibrate_estimates_the_sims_prefill_rate(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with _sim(engine) as sim:
        result = await calibrate(http, f"http://127.0.0.1:{sim.port}", probes=3,
                                 probe_tokens=8192, seed=7)
    assert result.engine == engine  # told from /metrics
    assert result.requests == 3 and result.cached_tokens == 0
    rate = 1000 / PER_TOKEN_MS[engine]
    assert result.throughput == pytest.approx(rate, rel=TOLERANCE)


async def test_passive_window_without_traffic_is_an_error(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with _sim(engine) as sim:
        with pytest.raises(EngineError, match="no uncached prefill in the window"):
            await calibrate(http, f"http://127.0.0.1:{sim.port}", probes=0, window_s=0.01)


async def test_a_server_that_went_away_is_an_error_naming_it(
        engine: str, http: aiohttp.ClientSession) -> None:
    async with _sim(engine) as sim:
        url = f"http://127.0.0.1:{sim.port}"
    # the server is gone (stopped above): a clear error naming it, nothing hangs
    with pytest.raises(EngineError, match=f"^{url}"):
        await asyncio.wait_for(calibrate(http, url, probes=1), 10)


def test_prefill_counters_from_each_engines_names(engine: str) -> None:
    names = get_adapter(engine).metric_names
    page = [f"{names.prompt_tokens}_total 1000", f"{names.ttft}_sum 3.0",
            f"{names.ttft}_count 4", f"{names.queue_time}_sum 1.0"]
    if names.prefill_time:
        page += [f"{names.prefill_time}_sum 1.5", f"{names.prefill_time}_count 4"]
    counters = get_adapter(engine).prefill_counters(MetricsPage.parse("\n".join(page) + "\n"))
    assert counters is not None and counters.prompt_tokens == 1000
    # vLLM reads its prefill histogram; SGLang has none: TTFT minus queue time.
    assert counters.prefill_seconds == (1.5 if names.prefill_time else 2.0)
    assert engine_of("\n".join(page) + "\n") == engine


def test_snippet_pools_per_engine_and_loads_as_the_parameter() -> None:
    results = [Calibration("http://10.0.0.1:8000", "vllm", 20000, 0, 1.0, 2),
               Calibration("http://10.0.0.2:8000", "vllm", 10000, 0, 1.0, 2),
               Calibration("http://10.0.0.3:8000", "sglang", 30000, 0, 1.0, 2)]
    text = snippet(results, per_endpoint=True)
    assert yaml.safe_load(text) == {"peakPrefillThroughput": {
        "engines": {"sglang": 30000, "vllm": 15000},
        "endpoints": {"10.0.0.1:8000": 20000, "10.0.0.2:8000": 10000, "10.0.0.3:8000": 30000}}}


async def test_cli_prints_a_config_for_a_mixed_pool() -> None:
    async with _sim("vllm") as v, _sim("sglang") as s:
        proc = await asyncio.create_subprocess_exec(
            *LLMD, "calibrate", "--endpoint", f"http://127.0.0.1:{v.port}", "--endpoint",
            f"http://127.0.0.1:{s.port}", "--probe", "2", "--probe-tokens", "4096", "--config",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    doc = yaml.safe_load(out.decode())
    engines = doc["plugins"][2]["parameters"]["peakPrefillThroughput"]["engines"]
    assert doc["plugins"][2]["type"] == "prefix-cache-affinity-filter"
    assert engines["sglang"] / engines["vllm"] == pytest.approx(2.0, rel=TOLERANCE)
