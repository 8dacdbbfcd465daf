"""Request → token ids as the engine computes them: the tiny-llama model directory's chat
template rendered as transformers renders it, and its tokenizer, give the ids real vLLM 0.32
computed (expected values from `transformers.AutoTokenizer.from_pretrained(tiny-llama)`:
`apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)` then encode without
special tokens, and `tok(prompt).input_ids`, in the vLLM CPU venv, 2026-12-06)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.errors import ConfigError
from llmd.kvcache import BuiltinTokenizer, render_chat
from llmd.kvcache.prompts import ChatTemplate, load_prompt_tokenizer

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is a KV cache? Explain prefix caching in two lines."}]
RENDERED = ("<s><|system|>\nYou are terse.</s>\n<|user|>\nWhat is a KV cache? Explain prefix "
            "caching in two lines.</s>\n<|assistant|>\n")
CHAT_IDS = [1, 31, 95, 86, 92, 1099, 80, 95, 33, 202, 60, 532, 562, 269, 272, 265, 17, 2, 202, 31,
            95, 88, 522, 95, 33, 202, 58, 75, 276, 314, 270, 1124, 57, 1250, 34, 724, 83, 320, 266,
            1284, 1014, 386, 304, 303, 1498, 837, 17, 2, 202, 31, 95, 68, 316, 752, 769, 95, 33,
            202]
PROMPT = "The quick brown fox jumps over the lazy dog."
PROMPT_IDS = [1, 2040, 224, 993, 403, 300, 2032, 81, 285, 82, 91, 803, 88, 331, 86, 1237, 295,
              751, 93, 92, 817, 74, 17]


def test_tiny_llama_gives_the_ids_transformers_and_vllm_give(shared_dir: Path) -> None:
    model = shared_dir / "fixtures" / "tiny-llama"
    assert ChatTemplate.from_dir(model).render(MESSAGES) == RENDERED
    prompts = load_prompt_tokenizer(model)
    assert prompts.chat_ids(MESSAGES) == CHAT_IDS
    assert prompts.completion_ids(PROMPT) == PROMPT_IDS
    assert prompts.completion_ids([5, 6, 7]) == [5, 6, 7]


def test_the_builtin_format_is_the_simulators() -> None:
    prompts = load_prompt_tokenizer(None)
    tok = BuiltinTokenizer()
    assert prompts.chat_ids(MESSAGES) == tok.encode(
        render_chat(MESSAGES, bos=tok.bos_token, eos=tok.eos_token), add_special_tokens=False)
    assert prompts.completion_ids(PROMPT) == tok.encode(PROMPT)


def test_templates_render_like_transformers(tmp_path: Path) -> None:
    source = ("{% for m in messages %}{{ m['role'] | tojson }}:{{ m['content'] }}\n"
              "{% if loop.index > 5 %}{% break %}{% endif %}{% endfor %}"
              "{% if messages | length > 9 %}{{ raise_exception('too long') }}{% endif %}")
    template = ChatTemplate(source)
    assert template.render([{"role": "a<b", "content": "x"}]) == '"a<b":x\n'
    with pytest.raises(ValueError, match="too long"):
        template.render([{"role": "u", "content": "x"}] * 10)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": {"content": "<B>"}, "chat_template": [{"name": "default", '
        '"template": "{{ bos_token }}{{ messages[0].content }}"}]}')
    assert ChatTemplate.from_dir(tmp_path).render([{"role": "u", "content": "hi"}]) == "<B>hi"


def test_missing_or_broken_templates_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no chat template"):
        ChatTemplate.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="not a valid jinja2 template"):
        ChatTemplate("{% for %}")
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        load_prompt_tokenizer(tmp_path)


@pytest.mark.parametrize("model", ["tiny-llama", None])
def test_a_huge_prompt_is_read_only_as_far_as_max_tokens(shared_dir: Path,
                                                         model: str | None) -> None:
    """Only the prefix that can matter is encoded, and what comes back is exactly the full
    encoding's first tokens: the cut never changes a token that is returned."""
    prompts = load_prompt_tokenizer(shared_dir / "fixtures" / model if model else None)
    text = " ".join(f"word{i % 97} is number {i}," for i in range(20_000))  # ~500k chars
    full = prompts.completion_ids(text)
    for max_tokens in (10, 1000, len(full) - 1, len(full) + 5):
        cut = prompts.completion_ids(text, max_tokens)
        assert cut == full[:len(cut)] and len(cut) <= max_tokens
        assert len(cut) >= min(max_tokens, len(full)) - 64
    messages = [{"role": "user", "content": text}]
    assert prompts.chat_ids(messages, 500) == prompts.chat_ids(messages)[:500]
    assert prompts.completion_ids(list(range(50)), 8) == list(range(8))
