"""`llmd up --endpoint` in front of servers it did not start: two `llmd sim` processes started
by the test, one per engine, standing in for a real vLLM and a real SGLang server.

One `llmd up` process is shared by the module; the test that kills a server runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import pytest_asyncio
from _cli import llmd_process, read_until

from llmd.gateway import LocalStack, StackSpec
from llmd.sim import SERVED_BY_HEADER

pytestmark = pytest.mark.asyncio(loop_scope="module")
MODEL = "org/fronted-model"
KV_SOURCE = "x-llmd-kv-source"


@contextlib.asynccontextmanager
async def sim_process(engine: str, *args: str
                      ) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A real `llmd sim` process on an ephemeral port: (process, `host:port`)."""
    async with llmd_process("sim", "--engine", engine, "--model", MODEL, "--port", "0",
                            "--time-scale", "0", *args) as proc:
        m = (await read_until(proc, r"listening on (\S+):(\d+)", 30))[0]
        yield proc, f"{m[1]}:{m[2]}"


def child_cmdlines(pid: int) -> list[str]:
    """The command lines of `pid`'s direct children (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return out


@dataclass
class Fronted:
    up: asyncio.subprocess.Process
    out: str
    gateway: str
    sims: dict[str, tuple[asyncio.subprocess.Process, str]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fronted() -> AsyncIterator[Fronted]:
    async with sim_process("vllm") as vllm, sim_process("sglang") as sglang, llmd_process(
            "up", "--gateway-port", "0", "--base-port", "0", "--endpoint-wait-s", "10",
            "--endpoint", f"http://{vllm[1]}",
            "--endpoint", sglang[1].replace("127.0.0.1", "localhost")) as up:
        out = (await read_until(up, r"Ctrl-C stops every process", 60))[1]
        gateway = re.search(r"gateway\S*: (http://\S+)", out)
        assert gateway, out
        yield Fronted(up, out, gateway[1], {"vllm": vllm, "sglang": sglang})
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await up.wait() == 0


async def test_detects_each_servers_engine_and_model_and_starts_no_simulator(
        fronted: Fronted) -> None:
    out = fronted.out
    rows = re.findall(r"│ (\S+)\s*│ (\w+)\s*│ (\S+)\s*│\s*(\S+) │ (\w+)", out)
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("envoy", "gateway", "ready"), ("epp", "picker", "serving"),
        ("server-0", "vllm", "external"), ("server-1", "sglang", "external")], out
    vllm, sglang = fronted.sims["vllm"][1], fronted.sims["sglang"][1]
    assert (f"server-0 http://{vllm}: vllm (detected: /v1/models owned_by 'vllm', /metrics "
            f"has vllm:*), model '{MODEL}'") in out
    named = sglang.replace("127.0.0.1", "localhost")  # resolved to 127.0.0.1, IPv4 first
    assert f"server-1 │ sglang  │ http://{sglang} " in out
    assert (f"server-1 http://{named}: sglang (detected: /v1/models owned_by 'sglang', "
            "/metrics has sglang:*, /get_model_info answers, /get_server_info answers), "
            f"model '{MODEL}'\n") in out
    assert f'create(model="{MODEL}"' in out  # the examples use the detected model
    children = child_cmdlines(fronted.up.pid)
    assert len(children) == 2 and not any(" sim " in c for c in children), children
    assert any(" epp " in c for c in children) and any("envoy" in c for c in children)


async def test_both_servers_answer_through_the_gateway(fronted: Fronted) -> None:
    addresses = {address for _, address in fronted.sims.values()}
    seen: set[str] = set()
    async with openai.AsyncOpenAI(base_url=fronted.gateway + "/v1", api_key="none",
                                  max_retries=0, timeout=10) as client:
        for i in range(40):
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": f"question {i} " * 8}],
                max_tokens=3)
            assert raw.parse().choices[0].message.content
            seen.add(raw.headers[SERVED_BY_HEADER])
            if seen == addresses:
                break
        async with client.chat.completions.with_streaming_response.create(
                model=MODEL, messages=[{"role": "user", "content": "stream"}], max_tokens=4,
                stream=True) as resp:
            assert resp.headers[SERVED_BY_HEADER] in addresses
            assert [c async for c in await resp.parse()]
    assert seen == addresses


async def test_a_fronted_server_that_dies_leaves_the_other_serving(fronted: Fronted) -> None:
    proc, _ = fronted.sims["vllm"]
    survivor = fronted.sims["sglang"][1]
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    async with openai.AsyncOpenAI(base_url=fronted.gateway + "/v1", api_key="none",
                                  max_retries=0, timeout=10) as client:
        for i in range(12):
            raw = await client.completions.with_raw_response.create(
                model=MODEL, prompt=f"after the loss {i}", max_tokens=2)
            assert raw.headers[SERVED_BY_HEADER] == survivor
    assert fronted.up.returncode is None  # not a child of llmd up: nothing to restart


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _long_prompt(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(f"word{rng.randrange(10_000)}" for _ in range(120))


async def test_pd_in_front_of_prefill_and_decode_servers() -> None:
    """--pd: a sidecar of ours per decode server; vLLM's roles given, SGLang's detected from
    its /get_server_info (bootstrap port included)."""
    bootstrap = str(_free_port())
    async with sim_process("vllm", "--role", "prefill") as vp, \
            sim_process("vllm", "--role", "decode") as vd, \
            sim_process("sglang", "--role", "prefill",
                        "--disaggregation-bootstrap-port", bootstrap) as sp, \
            sim_process("sglang", "--role", "decode") as sd:
        spec = StackSpec(pd=True, external=(f"{vp[1]},role=prefill", f"{vd[1]},role=decode",
                                            f"http://{sp[1]}", f"http://{sd[1]}"))
        async with LocalStack(spec) as stack, openai.AsyncOpenAI(
                base_url=stack.url + "/v1", api_key="none", max_retries=0,
                timeout=20) as client:
            assert [s.role for s in stack.servers] == ["prefill", "decode", "prefill", "decode"]
            assert sorted(c.spec.name for c in stack.children) == [
                "envoy", "epp", "sidecar-server-1", "sidecar-server-3"]
            served: set[str] = set()
            for seed in range(30):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=_long_prompt(seed), max_tokens=3)
                assert raw.headers[KV_SOURCE] == "transfer"
                served.add(raw.headers[SERVED_BY_HEADER])
                if served == {vd[1], sd[1]}:
                    break
            assert served == {vd[1], sd[1]}
            argv = " ".join(stack.child("sidecar-server-3").spec.argv)
            assert f"--sglang-bootstrap-port {bootstrap}" in argv
            assert f"--prefill-allow {sp[1]}" in argv and vp[1] not in argv


async def test_an_unreachable_server_is_an_error_naming_it() -> None:
    port = _free_port()
    async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                            "--endpoint-wait-s", "0.5",
                            "--endpoint", f"127.0.0.1:{port},engine=vllm") as proc:
        async with asyncio.timeout(30):
            out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert (f"error: --endpoint '127.0.0.1:{port},engine=vllm': http://127.0.0.1:{port}"
            "/v1/models did not answer within 0.5 s") in out
    assert "Traceback" not in out


async def test_ctrl_c_while_waiting_for_a_server_stops_at_once() -> None:
    """A server that accepts but never answers (one still loading): Ctrl-C ends the wait."""
    loop = asyncio.get_running_loop()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        port = silent.getsockname()[1]
        async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                                "--endpoint", f"127.0.0.1:{port}") as proc:
            async with asyncio.timeout(20):
                conn, _ = await loop.sock_accept(silent)  # the probe is waiting
            conn.close()
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(10):
                out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
