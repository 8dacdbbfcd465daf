"""Smoke tests of the benchmark harness (never the benchmark itself): `llmd bench run` against a
real simulator, the compare orchestration on llmd + Envoy round robin with a tiny workload, the
report writer, the oracle, /proc accounting and the peer plumbing that needs no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmd._proc import Supervisor
from llmd.bench import cpu_seconds, oracle_hit_share, peak_rss_kib
from llmd.bench.compare import CompareConfig, run_compare, sustained_rate
from llmd.bench.crosscheck import CrossCheckConfig, inference_perf_config
from llmd.bench.docs import SECTIONS, write_report
from llmd.bench.output import build_workload
from llmd.bench.peers import PEERS, ensure_venv, router_argv
from llmd.bench.stats import summarize
from llmd.bench.systems import SYSTEMS, FleetOptions, _kv_event_ports, _kv_events_args
from llmd.engines import get_adapter
from llmd.kvcache import BuiltinTokenizer
from llmd.sim.fleet import FleetSpec, start_fleet

TINY = {"num_groups": 2, "num_prompts_per_group": 3, "system_prompt_len": 48,
        "question_len": 8, "output_len": 4}


async def test_bench_run_against_a_real_simulator(engine: str, tmp_path: Path) -> None:
    async with Supervisor() as sup:
        [sim] = await start_fleet(sup, FleetSpec(engines=(engine,), port_base=0,  # type: ignore[arg-type]
                                                 sim_args=("--time-scale", "0")))
        out = tmp_path / "run"
        proc = await _run_cli(
            "bench", "run", "--target", sim.url, "--model", "llmd-sim", "--rates", "20",
            "--requests-per-stage", "6", "--num-groups", "2", "--num-prompts-per-group", "3",
            "--system-prompt-len", "48", "--question-len", "8", "--output-len", "4",
            "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    [stage] = data["stages"]
    assert stage["requests"] == 6 and stage["errors"] == 0
    assert stage["output_tokens_per_s"] > 0 and stage["ttft_p90_s"] is not None
    assert stage["cache_hit_share"] > 0  # the second prompt of a group reuses its prefix
    assert (out / "workload.jsonl").exists() and (out / "results.md").exists()
    assert len((out / "requests.jsonl").read_text().splitlines()) == 6


async def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    argv = [sys.executable, "-c", "from llmd.cli import main; main()", *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                   timeout=90, check=False)


async def test_compare_drives_llmd_and_envoy_round_robin(tmp_path: Path) -> None:
    cfg = CompareConfig(systems=("llmd-default", "envoy-rr"), rates=(20.0,),
                        stage_duration_s=0.3, kv_cache_blocks=64, max_model_len=512,
                        time_scale=0.0, root=tmp_path, output_dir=tmp_path / "compare", **TINY)
    result = await run_compare(cfg)
    assert {s.system for s in result.summaries} == {"llmd-default", "envoy-rr"}
    assert all(s.errors == 0 and s.requests == 20 for s in result.summaries)  # min per stage
    assert 0 < result.oracle["rate=20"].share <= result.oracle["rate=20"].first_seen_share
    saved = json.loads((tmp_path / "compare" / "results.json").read_text())
    assert len(saved["stages"]) == 2 and "rate=20" in saved["meta"]["oracle"]
    assert not (tmp_path / ".venv-peers").exists()  # no peer asked for, nothing installed

    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Simulator capacity\n\nkept\n\n"
                    "## Router comparison\n\nold\n")
    from llmd.bench._readings import COMMANDS, READINGS

    written = write_report(tmp_path, docs, tmp_path / "img", COMMANDS, READINGS)
    text = docs.read_text()
    assert written == [SECTIONS[0]]
    assert "## Simulator capacity\n\nkept" in text and "\nold\n" not in text
    assert "llmd-default" in text and "### Targets" in text
    [llmd] = [s for s in saved["stages"] if s["system"] == "llmd-default"]
    ratio = llmd["cache_hit_share"] / saved["meta"]["oracle"]["rate=20"]["share"]
    assert "Hit share as a share of the oracle's" in text and f"{ratio:.1%}" in text


def test_oracle_reaches_the_infinite_cache_bound_when_prefixes_fit() -> None:
    tok = BuiltinTokenizer()
    wl = build_workload("shared-prefix", None, {**TINY, "num_prompts_per_group": 5})
    roomy = oracle_hit_share(wl.requests, tok, pools=2, blocks_per_pool=64, block_size=16,
                             model="llmd-sim")
    tight = oracle_hit_share(wl.requests, tok, pools=1, blocks_per_pool=4, block_size=16,
                             model="llmd-sim")
    assert roomy.share == pytest.approx(roomy.first_seen_share) and roomy.share > 0.5
    assert tight.share < roomy.share


def test_sustained_rate_stops_at_the_first_failing_stage() -> None:
    from llmd.bench.loadgen import RequestResult

    def stage(rate: float, errors: int) -> object:
        results = [RequestResult(i, i / rate, 0.01, 0.001, 0.1, 10, 4, 0,
                                 "boom" if i < errors else None) for i in range(20)]
        return summarize("x", f"rate={rate:g}", rate, results)

    stages = [stage(4, 0), stage(8, 0), stage(16, 1), stage(32, 0)]
    assert sustained_rate(stages, 0.85) == 8  # type: ignore[arg-type]


def test_proc_accounting_reads_this_process() -> None:
    sum(i * i for i in range(200_000))
    assert cpu_seconds([os.getpid()]) > 0
    assert peak_rss_kib([os.getpid()]) > 10_000


async def test_peer_venv_with_the_pinned_version_is_reused_without_installing(
        tmp_path: Path) -> None:
    venv = tmp_path / ".venv-peers" / "sglang-router"
    venv.mkdir(parents=True)
    (venv / ".llmd-installed").write_text(PEERS["sglang-router"].requirement + "\n")
    assert await ensure_venv(PEERS["sglang-router"], tmp_path) == venv / "bin"


def test_peer_routers_bind_loopback_with_the_documented_tuning() -> None:
    for router in ("sglang-router", "vllm-router"):
        argv = router_argv(router, Path("/x/bin"), "cache_aware", 30001, 30002,
                           ["http://127.0.0.1:1", "http://127.0.0.1:2"])
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
        assert argv[argv.index("--prometheus-host") + 1] == "127.0.0.1"
        assert argv[argv.index("--balance-abs-threshold") + 1] == "8"


def test_inference_perf_config_matches_the_workload(tmp_path: Path) -> None:
    cfg = CrossCheckConfig(tokenizer=str(tmp_path), rate=3, duration_s=5)
    data = inference_perf_config(cfg, "http://127.0.0.1:1", tmp_path)
    sp = data["data"]["shared_prefix"]
    assert (sp["num_groups"], sp["system_prompt_len"], sp["output_len"]) == (24, 384, 32)
    assert data["load"] == {"type": "poisson", "stages": [{"rate": 3, "duration": 5}],
                            "num_workers": 2}
    assert data["api"]["streaming"] and data["server"]["ignore_eos"]
    assert data["tokenizer"]["pretrained_model_name_or_path"] == str(tmp_path.resolve())


def test_every_llmd_config_loads() -> None:
    from llmd.bench.systems import LLMD_CONFIGS
    from llmd.epp import load_config

    for name, text in LLMD_CONFIGS.items():
        cfg = load_config(text=text)
        assert cfg.scheduler.profiles, name


def test_compare_runs_llm_d_v1_default() -> None:
    """`llmd-v1-default` is llm-d v1.0's recommended default, in the default compare list."""
    from llmd.bench.compare import DEFAULT_SYSTEMS
    from llmd.bench.systems import LLMD_CONFIGS
    from llmd.epp.config import v1_default_config

    system = SYSTEMS["llmd-v1-default"]
    assert (system.kind, system.policy) == ("llmd", "v1-default")
    assert LLMD_CONFIGS["v1-default"] == v1_default_config()
    assert "llmd-v1-default" in DEFAULT_SYSTEMS
    text = LLMD_CONFIGS["v1-default"] or ""
    for plugin in ("prefix-cache-affinity-filter", "token-load-scorer",
                   "inflight-load-producer", "approx-prefix-cache-producer"):
        assert plugin in text, plugin


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["compare", "--rates", "1,a"], "--rates", id="rates-not-numbers"),
    pytest.param(["compare", "--rates=-5"], "'-5'", id="rates-negative"),
    pytest.param(["run", "--target", "http://127.0.0.1:9", "--model", "m", "--rates", "0"],
                 "--rates: '0'", id="run-rate-zero"),
    pytest.param(["overhead", "--concurrency", "1.5"], "'1.5'", id="concurrency-fraction"),
    pytest.param(["compare", "--stage-duration-s", "0"], "stage_duration_s", id="compare-config"),
    pytest.param(["overhead", "--repeats", "0"], "repeats", id="overhead-config"),
    pytest.param(["crosscheck", "--tokenizer", "x", "--rate", "0"], "rate", id="crosscheck-config"),
])
async def test_bad_bench_flags_exit_2_naming_the_flag(args: list[str], message: str) -> None:
    proc = await _run_cli("bench", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and message in out and "Traceback" not in out, out


def test_precise_config_tokenizes_as_the_fleet_does(tmp_path: Path) -> None:
    """llmd-precise's EPP config is the fleet's: the simulators' tokenizer (an absolute path,
    whatever the working directory) and block size, with llm-d's default weights."""
    import yaml

    from llmd.bench.systems import FleetOptions, epp_config
    from llmd.epp import load_config

    fleet = FleetOptions(tokenizer=str(tmp_path / "tok"), block_size=32)
    doc = yaml.safe_load(epp_config("precise", fleet) or "")
    [precise] = [p for p in doc["plugins"] if p["type"] == "precise-prefix-cache-producer"]
    assert precise["parameters"]["tokenizer"] == str((tmp_path / "tok").resolve())
    assert precise["parameters"]["tokenProcessorConfig"] == {"blockSize": 32}
    weights = {p["pluginRef"]: p.get("weight") for p in doc["schedulingProfiles"][0]["plugins"]}
    assert weights == {"queue-scorer": 2, "kv-cache-utilization-scorer": 2,
                       "prefix-cache-scorer": 3}
    assert load_config(text=epp_config("precise", FleetOptions())).scheduler.profiles


async def test_compare_drives_llmd_precise_from_the_simulators_events(tmp_path: Path) -> None:
    """The precise index follows the simulators' KV events: the second prompt of a group finds
    its prefix cached."""
    cfg = CompareConfig(systems=("llmd-precise",), rates=(20.0,), stage_duration_s=0.3,
                        kv_cache_blocks=64, max_model_len=512, time_scale=0.0, root=tmp_path,
                        output_dir=tmp_path / "compare", **TINY)
    [stage] = (await run_compare(cfg)).summaries
    assert stage.errors == 0 and stage.cache_hit_share > 0


def test_vllm_router_takes_extra_flags() -> None:
    argv = router_argv("vllm-router", Path("/x/bin"), "kv_aware", 1, 2, ["http://127.0.0.1:3"],
                       ["--kv-event-source", "http://127.0.0.1:3=tcp://127.0.0.1:4"])
    assert argv[argv.index("--kv-event-source") + 1] == "http://127.0.0.1:3=tcp://127.0.0.1:4"
    assert argv[argv.index("--policy") + 1] == "kv_aware"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_peer_kv_events_only_from_engines_the_peer_decodes(engine: str) -> None:
    fleet = FleetOptions()
    ports = _kv_event_ports(fleet, frozenset({engine}))
    assert [e for e, _ in ports.values()] == [engine, engine]  # 2 of the 4 simulators
    assert _kv_event_ports(fleet, SYSTEMS["vllm-router-kv_aware"].kv_events_of).keys() == \
        _kv_event_ports(fleet, frozenset({"vllm"})).keys()
    flag, raw = _kv_events_args(engine, 5555)
    settings = get_adapter(engine).kv_events.parse_config(raw)
    assert flag == "--kv-events-config" and settings.enabled and settings.topic == ""
    assert get_adapter(engine).kv_events.binds(settings)  # the router's SUB connects
    assert settings.endpoint == "tcp://[::ffff:127.0.0.1]:5555"
