"""`llmd up` as a real process and `LocalStack` in-process: simulators + EPP + Envoy on loopback,
started, answering through the gateway, and stopped without orphans (also when a child fails)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket

import aiohttp
import openai
import pytest
from _cli import llmd_process, read_until

from llmd._proc import ChildError
from llmd.errors import ConfigError
from llmd.gateway import LocalStack, StackSpec
from llmd.gateway.stack import engines_from_flag
from llmd.sim import SERVED_BY_HEADER


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _decisions(http: aiohttp.ClientSession, metrics_url: str) -> float:
    async with http.get(metrics_url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmd_epp_decisions_total{"))


@pytest.mark.parametrize(("mode", "replicas"), [("buffered", 1), ("full-duplex", 2)])
async def test_llmd_up_serves_openai_through_the_gateway_and_ctrl_c_stops_all(
        mode: str, replicas: int) -> None:
    """Also `--epp-replicas 2`: both replicas listed, and both decide (round robin)."""
    async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                            "--time-scale", "0", "--ext-proc-mode", mode,
                            "--epp-replicas", str(replicas)) as proc:
        out = (await read_until(proc, r"Ctrl-C stops every process", 60))[1]
        rows = re.findall(r"│ (\S+)\s*│ (\w+)\s*│ (\S+)\s*│\s*(\d+) │ (\w+)", out)
        assert [r[1] for r in rows] == ["gateway", *["picker"] * replicas,
                                        "vllm", "vllm", "sglang", "sglang"]
        assert [r[0] for r in rows[1:1 + replicas]] == (
            ["epp"] if replicas == 1 else ["epp-0", "epp-1"])
        gateway = rows[0][2]
        assert f'OpenAI(base_url="{gateway}/v1"' in out and f"curl -N {gateway}/v1/" in out
        sims = {r[2].removeprefix("http://") for r in rows[1 + replicas:]}
        async with openai.AsyncOpenAI(base_url=gateway + "/v1", api_key="none",
                                      max_retries=0) as client:
            for _ in range(2 * replicas):
                raw = await client.chat.completions.with_raw_response.create(
                    model="llmd-sim", messages=[{"role": "user", "content": "Hello"}],
                    max_tokens=4)
                assert raw.headers[SERVED_BY_HEADER] in sims
                assert raw.parse().choices[0].message.content
        metrics = re.findall(r"epp\S* metrics: (\S+)", out)
        assert len(metrics) == replicas, out
        async with aiohttp.ClientSession() as http:
            assert all([await _decisions(http, url) > 0 for url in metrics])
        admin = re.search(r"Envoy admin: (\S+)", out)
        assert admin, out
        async with aiohttp.ClientSession() as http, http.get(
                admin[1] + "/config_dump") as resp:
            dump = await resp.text()
        if mode == "full-duplex":
            assert "FULL_DUPLEX_STREAMED" in dump
        else:
            assert "BUFFERED" in dump and "FULL_DUPLEX_STREAMED" not in dump
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    assert all(_gone(int(r[3])) for r in rows), "a child outlived llmd up"


async def test_llmd_up_port_taken_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        async with llmd_process("up", "--gateway-port", str(port), "--base-port", "0") as proc:
            async with asyncio.timeout(30):
                out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert f"gateway: cannot listen on 127.0.0.1:{port} (already in use)" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("flag", "message"), [
    pytest.param(["--engines", "tgi"], "'tgi' is not an engine", id="unknown-engine"),
    pytest.param(["--failure-mode", "Maybe"], "failure_mode", id="bad-failure-mode"),
    pytest.param(["--ext-proc-mode", "streamed"], "ext_proc_mode", id="bad-ext-proc-mode"),
    pytest.param(["--epp-replicas", "0"], "epp_replicas", id="no-epp-replicas"),
    pytest.param(["--endpoint", "nohost"], "--endpoint 'nohost': 'nohost' is not "
                 "http://HOST:PORT or HOST:PORT", id="bad-endpoint"),
    pytest.param(["--endpoint", "127.0.0.1:1,engine=tgi"], "engine 'tgi' is not one of",
                 id="bad-endpoint-engine"),
])
async def test_llmd_up_bad_flags_exit_2(flag: list[str], message: str) -> None:
    async with llmd_process("up", *flag) as proc:
        async with asyncio.timeout(30):
            out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2 and message in out and "Traceback" not in out


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("vllm,sglang", ("vllm", "vllm", "sglang", "sglang"), id="per-engine"),
    pytest.param("sglang=1,vllm=3", ("sglang", "vllm", "vllm", "vllm"), id="counts"),
    pytest.param("vllm=0,sglang", ("sglang", "sglang"), id="zero-of-one"),
])
def test_engines_flag(text: str, expected: tuple[str, ...]) -> None:
    assert engines_from_flag(text, 2) == expected


def test_engines_flag_errors() -> None:
    with pytest.raises(ConfigError, match="at least one simulator"):
        engines_from_flag("vllm=0")
    with pytest.raises(ConfigError, match="whole number"):
        engines_from_flag("vllm=two")


async def test_round_robin_stack_without_epp_spreads_over_the_fleet(engine: str) -> None:
    spec = StackSpec(engines=(engine,) * 2, time_scale=0, epp=False)
    async with LocalStack(spec) as stack, aiohttp.ClientSession() as http:
        assert stack.epp is None
        seen = set()
        for _ in range(4):
            async with http.post(stack.url + "/v1/completions", json={
                    "model": spec.model, "prompt": "same prompt", "max_tokens": 2}) as resp:
                assert resp.status == 200
                seen.add(resp.headers[SERVED_BY_HEADER])
    assert seen == {ep.address for ep in stack.endpoints}


async def test_a_child_failing_at_start_stops_the_others() -> None:
    events: list[tuple[str, str]] = []
    spec = StackSpec(engines=("vllm", "sglang"), time_scale=0, epp_args=("--no-such-flag",))
    stack = LocalStack(spec, on_progress=lambda name, state: events.append((name, state)))
    with pytest.raises(ChildError, match=r"(?s)epp exited \(exit code 2\).*no-such-flag"):
        async with stack:
            pass
    assert ("sim-vllm-0", "ready") in events and ("epp", "starting") in events
    assert stack.children and all(c.proc.returncode is not None for c in stack.children)


async def test_a_bad_epp_config_fails_before_anything_starts() -> None:
    spec = StackSpec(engines=("vllm",), time_scale=0,
                     epp_config_text="apiVersion: llm-d.ai/v1alpha1\nkind: Nope\n")
    stack = LocalStack(spec)
    with pytest.raises(ConfigError, match="Nope"):
        async with stack:
            pass
    assert not stack.children


async def test_llmd_up_restarts_a_killed_simulator_and_shows_it() -> None:
    async with llmd_process("up", "--engines", "vllm=1,sglang=1", "--gateway-port", "0",
                            "--base-port", "0", "--time-scale", "0") as proc:
        out = (await read_until(proc, r"Ctrl-C stops every process", 60))[1]
        rows = re.findall(r"│ (\S+)\s*│ (\w+)\s*│ (\S+)\s*│\s*(\d+) │ (\w+)", out)
        name, _, url, pid, _ = next(r for r in rows if r[1] == "sglang")
        os.kill(int(pid), signal.SIGKILL)
        later = (await read_until(proc, rf"(?s){name} restarted.*?└", 30))[1]
        assert f"{name} exited: killed by SIGKILL; restarting in 0.1 s" in later
        row = next(line for line in later.splitlines() if line.startswith(f"│ {name} "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[2] == url and cells[3] != pid and cells[4:] == ["healthy", "1"]
        async with aiohttp.ClientSession() as http, http.get(url + "/health") as resp:
            assert resp.status == 200  # back on its port
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0


async def test_llmd_up_fronts_existing_servers(engine: str) -> None:
    """`llmd up --endpoint ...`: no simulators of its own, the EPP and Envoy in front of servers
    that already run (here simulators started by the test, standing in for real engines)."""
    from llmd.sim import SimConfig, running_sim

    cfg = SimConfig(engine=engine, model="served", port=0, time_scale=0)  # type: ignore[arg-type]
    async with running_sim(cfg) as a, running_sim(cfg) as b:
        flags = [f"127.0.0.1:{s.port},engine={engine}" for s in (a, b)]
        async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                                *(x for f in flags for x in ("--endpoint", f))) as proc:
            out = (await read_until(proc, r"Ctrl-C stops every process", 60))[1]
            assert "sim-" not in out and "your servers" in out
            rows = re.findall(r"│ (\S+)\s*│ (\w+)\s*│ (\S+)\s*│\s*(\S+) │ (\w+)", out)
            assert [r[4] for r in rows[2:]] == ["external", "external"], out
            served = set()
            async with aiohttp.ClientSession() as http:
                for _ in range(8):
                    async with http.post(rows[0][2] + "/v1/completions", json={
                            "model": "served", "prompt": "hi", "max_tokens": 2}) as resp:
                        assert resp.status == 200
                        served.add(resp.headers[SERVED_BY_HEADER])
            assert served <= {f"127.0.0.1:{s.port}" for s in (a, b)} and served
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(20):
                assert await proc.wait() == 0


def test_epp_replicas_take_four_ports_each_after_the_fleet() -> None:
    spec = StackSpec(engines=("vllm", "sglang"), base_port=8100, gateway_port=8080,
                     epp_replicas=2)
    assert spec.fixed_ports()[3:] == [
        ("epp-0 ext_proc", 8102), ("epp-0 grpc health", 8103), ("epp-0 metrics", 8104),
        ("epp-0 replica sync", 8105),
        ("epp-1 ext_proc", 8106), ("epp-1 grpc health", 8107), ("epp-1 metrics", 8108),
        ("epp-1 replica sync", 8109)]
    one = StackSpec(engines=("vllm",), base_port=8100, epp_replicas=1)
    assert [name for name, _ in one.fixed_ports()][-3:] == [
        "epp ext_proc", "epp grpc health", "epp metrics"]  # one EPP: no sync port
    with pytest.raises(ValueError, match="the EPP replicas' 16 ports"):
        StackSpec(engines=("vllm",), base_port=65530, epp_replicas=4)
