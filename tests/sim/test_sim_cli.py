"""`llmd sim` as a real process: what a user runs (`llmd up`: tests/gateway/test_up.py)."""

from __future__ import annotations

import asyncio
import signal

import openai
from _cli import llmd_process, read_until
from _hostile import BODIES, exchange, raw_request


async def test_llmd_sim_cli_answers_openai_streaming_chat(engine: str) -> None:
    async with llmd_process("sim", "--engine", engine, "--port", "0",
                            "--time-scale", "0.1") as proc:
        m, _ = await read_until(proc, r"listening on ([\d.]+):(\d+)")
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
    async with llmd_process("sim", "--engine", "tgi") as proc:
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2 and "engine" in out and "'vllm'" in out


async def test_llmd_sim_logs_no_traceback_for_hostile_input(engine: str) -> None:
    """Issue 12 end to end: a real `llmd sim` answers hostile requests (bodies, 70 KB and 200
    headers, not HTTP at all) below 500 and its whole output holds no traceback."""
    async with llmd_process("sim", "--engine", engine, "--port", "0",
                            "--time-scale", "0") as proc:
        m, seen = await read_until(proc, r"listening on ([\d.]+):(\d+)")
        host, port = m.group(1), int(m.group(2))
        raws = [raw_request("POST", str(p.values[0]), p.values[1]) for p in BODIES
                if isinstance(p.values[1], bytes)]
        raws += [raw_request("POST", "/v1/completions", b"{}", ("x-big: " + "a" * 70_000,)),
                 raw_request("GET", "/", b"", tuple(f"x-h{i}: a" for i in range(200))),
                 b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
        for raw in raws:
            answer = await asyncio.to_thread(exchange, host, port, raw)
            assert 200 <= int(answer.split(b" ", 2)[1]) < 500, answer[:300]
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            seen += (await proc.stdout.read()).decode()
            assert await proc.wait() == 0
    assert "Traceback" not in seen and "ERROR" not in seen, seen
