"""`llmd sim` as a real process: what a user runs (`llmd up`: tests/gateway/test_up.py)."""

from __future__ import annotations

import asyncio
import signal

import openai
from _cli import llmd_process, read_until


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
