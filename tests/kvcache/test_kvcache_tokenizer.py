"""Tokenizers and chat rendering: deterministic built-in, HF tokenizer.json, tiny-llama template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmd.errors import ConfigError
from llmd.kvcache import BuiltinTokenizer, HFTokenizer, load_tokenizer, render_chat


@pytest.fixture(scope="module")
def tiny_llama(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "tiny-llama" / "tokenizer.json"


def test_builtin_is_stable_across_processes() -> None:
    text = "Hello, the world of tokens: prefix-caching 42!"
    here = BuiltinTokenizer().encode(text)
    code = ("from llmd.kvcache import BuiltinTokenizer; "
            f"print(BuiltinTokenizer().encode({text!r}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert str(here) == other
    assert here[0] == BuiltinTokenizer().bos_id
    assert len(here) == 13  # BOS Hello , _the _world _of _tokens : _prefix - caching _42 !


def test_builtin_pieces_and_decode() -> None:
    tok = BuiltinTokenizer()
    assert tok.encode("a b", add_special_tokens=False) != tok.encode("ab", add_special_tokens=False)
    ids = tok.encode(" the cache and the model", add_special_tokens=False)
    assert len(ids) == 5 and tok.decode(ids) == " the cache and the model"
    assert all(0 <= t < tok.vocab_size for t in tok.encode("ünïcödé ✓ text\n\tmore"))
    assert tok.encode("") == [tok.bos_id]


# GPT-2's pre-tokenizer regex, run by the `tokenizers` library (onig, real \p{L}/\p{N} classes).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.mark.parametrize("text", [
    pytest.param("<s><|user|>\nHi there</s>\n<|assistant|>\n the cache", id="chat-template"),
    pytest.param("a  b\n\n  c\t\td   ", id="runs-of-whitespace"),
    pytest.param("x\r\n y  \n", id="crlf-and-trailing"),
    pytest.param("don't we'll x_y __init__ 3.14 ... !!", id="contractions-punctuation"),
    pytest.param("abc123def 42abc, (foo)-bar", id="letters-digits"),
])
def test_builtin_splits_like_gpt2(text: str) -> None:
    from tokenizers import Regex, pre_tokenizers

    gpt2 = [p for p, _ in pre_tokenizers.Split(Regex(GPT2_PATTERN), "isolated")
            .pre_tokenize_str(text)]
    tok = BuiltinTokenizer()
    pieces = [tok.encode(p, add_special_tokens=False) for p in gpt2]
    assert all(len(ids) == 1 for ids in pieces), gpt2
    assert tok.encode(text, add_special_tokens=False) == [ids[0] for ids in pieces]


@pytest.mark.parametrize("prefix", ["<|assistant|>\n", "text  ", "end\n\n", "x", "!", "'", ""])
def test_builtin_prefix_then_words_keeps_both_tokenizations(prefix: str) -> None:
    # A reply of " word" pieces (what the simulator generates) re-encodes to the same ids after
    # any prefix, so a resent history hits the blocks cached for the reply.
    tok = BuiltinTokenizer()
    reply = " the cache token block model"
    ids = tok.encode(reply, add_special_tokens=False)
    assert tok.decode(ids) == reply
    assert tok.encode(prefix + reply) == tok.encode(prefix) + ids


def test_hf_tokenizer_from_file(tiny_llama: Path) -> None:
    tok = load_tokenizer(tiny_llama)
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == 2048
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>"
    ids = tok.encode("hello world")
    assert ids[0] == 1 and tok.decode(ids) == "hello world"
    assert load_tokenizer(tiny_llama.parent).encode("hi") == tok.encode("hi")


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    assert isinstance(load_tokenizer(None), BuiltinTokenizer)
    with pytest.raises(ConfigError, match="no such file"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(ConfigError, match="cannot load tokenizer.json"):
        load_tokenizer(bad)


def test_chat_template_matches_tiny_llama() -> None:
    # ../shared/fixtures/tiny-llama/chat_template.jinja rendered by hand for these messages.
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                             {"type": "image_url", "image_url": {"url": "x"}},
                                             {"type": "text", "text": "there"}]}]
    assert render_chat(messages) == (
        "<s><|system|>\nBe brief.</s>\n<|user|>\nHi there</s>\n<|assistant|>\n")
    alone = render_chat(messages[:1], add_generation_prompt=False)
    assert alone == "<s><|system|>\nBe brief.</s>\n"
    with pytest.raises(ValueError, match="role"):
        render_chat([{"content": "x"}])
