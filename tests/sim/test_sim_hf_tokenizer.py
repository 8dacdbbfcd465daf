"""The simulator with a real tokenizer.json (tiny-llama): prompts counted as the engine would."""

from __future__ import annotations

from pathlib import Path

import openai
from _simtools import StartSim

from llmd.kvcache import load_tokenizer, render_chat


async def test_sim_with_hf_tokenizer(start_sim: StartSim, shared_dir: Path) -> None:
    path = shared_dir / "fixtures" / "tiny-llama" / "tokenizer.json"
    sim = await start_sim(tokenizer=str(path))
    tok = load_tokenizer(path)
    messages = [{"role": "user", "content": "What is prefix caching?"}]
    expected = len(tok.encode(render_chat(messages), add_special_tokens=False))
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="llmd-sim", messages=messages, max_tokens=10, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = "", None
        async for chunk in stream:
            usage = chunk.usage or usage
            text += "".join(ch.delta.content or "" for ch in chunk.choices)
        comp = await c.completions.create(model="llmd-sim", prompt="hello world", max_tokens=1)
    assert usage is not None and usage.prompt_tokens == expected
    assert usage.completion_tokens == 10
    assert text.strip() and "<" not in text  # real words, decoded by the HF tokenizer
    assert comp.usage is not None and comp.usage.prompt_tokens == len(tok.encode("hello world"))
