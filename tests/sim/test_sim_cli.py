"""`llmd sim` and `llmd up` as real processes: what a user runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from llmd._proc import stop_process
from llmd.engines import get_adapter

LLMD = [sys.executable, "-c", "from llmd.cli import main; main()"]


@contextlib.asynccontextmanager
async def _process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(*LLMD, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        yield proc
    finally:
        await stop_process(proc, timeout_s=10)


async def _read_until(proc: asyncio.subprocess.Process, pattern: str, timeout_s: float = 30
                      ) -> tuple[re.Match[str], str]:
    assert proc.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"process exited before {pattern!r}; output:\n{seen}")
            seen += line
            m = re.search(pattern, seen)
            if m:
                return m, seen


async def test_llmd_sim_cli_answers_openai_streaming_chat(engine: str) -> None:
    async with _process("sim", "--engine", engine, "--port", "0", "--time-scale", "0.1") as proc:
        m, _ = await _read_until(proc, r"listening on ([\d.]+):(\d+)")
        url = f"http://{m.group(1)}:{m.group(2)}"
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as c:
            stream = await c.chat.completions.create(
                model="llmd-sim", messages=[{"role": "user", "content": "Hello!"}],
                max_tokens=8, stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                            if ch.choices])
        assert text.strip()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0


async def test_llmd_sim_rejects_bad_flags() -> None:
    async with _process("sim", "--engine", "tgi") as proc:
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2 and "engine" in out and "'vllm'" in out


async def test_llmd_up_starts_both_dialects_and_stops_them() -> None:
    async with _process("up", "--port-base", "0", "--time-scale", "0") as proc:
        _, out = await _read_until(proc, r"Ctrl-C stops every simulator")
        rows = re.findall(r"(sim-\w+-\d+)\s*│\s*(\w+)\s*│\s*(http://127\.0\.0\.1:\d+)\s*│"
                          r"\s*(/\w+)\s*│\s*(\d+)", out)
        assert [r[1] for r in rows] == ["vllm", "sglang"], out
        assert "curl -N" in out and "from openai import OpenAI" in out
        async with aiohttp.ClientSession() as http:
            for _, engine, url, health, _ in rows:
                assert health == get_adapter(engine).probes.liveness.path
                async with http.get(url + health) as resp:
                    assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    for pid in (int(r[4]) for r in rows):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_llmd_up_fails_cleanly_when_a_port_is_taken() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        # The vLLM sim gets the taken port; the SGLang one (port + 1) must be stopped too.
        async with _process("up", "--port-base", str(port)) as proc:
            async with asyncio.timeout(30):
                out = (await proc.communicate())[0].decode()
    assert proc.returncode != 0
    assert "sim-vllm-0" in out and "cannot listen on" in out
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port + 1)) != 0, "sglang sim left running"
