"""The precise EPP tokenizes exactly as the simulators do, or precise routing matches nothing:
`ChunkedTokenizer` (cut at spaces a byte-level BPE never merges across) must give the
whole-text encoding's ids, for `llmd bench compare`'s prompts and for text that tries to break
it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmd.bench.output import build_workload
from llmd.kvcache import ChunkedTokenizer, HFTokenizer, PromptTokenizer, load_prompt_tokenizer


def chunked(tokenizer: Path | None) -> PromptTokenizer:
    return load_prompt_tokenizer(tokenizer, chunked=True)


TRICKY = [
    "word " * 400,
    "x  y   z \n\n a\tb " * 200,  # runs of whitespace, tabs, newlines
    " ".join(f"it's {i}'ll {i}.5% ({i}) -- ok?! " for i in range(150)),
    "naïve café 東京 über straße " * 150 + "end",
    "a" * 3000 + " b " + "c" * 1500,  # long words: few places to cut
    "<s> special </s> tokens <unk> in text " * 120,
]


def test_chunked_ids_equal_the_whole_texts(shared_dir: Path) -> None:
    tiny = shared_dir / "fixtures" / "tiny-llama"
    whole = load_prompt_tokenizer(tiny)
    fast = chunked(tiny)
    assert isinstance(fast.tokenizer, ChunkedTokenizer)
    wl = build_workload("shared-prefix", str(tiny), {
        "num_groups": 3, "num_prompts_per_group": 4, "system_prompt_len": 1024,
        "question_len": 64, "output_len": 4})
    texts = [r.prompt or "" for r in wl.requests] + TRICKY
    for text in texts * 2:  # the second pass is served from the cache
        assert fast.completion_ids(text) == whole.completion_ids(text)
        messages = [{"role": "system", "content": text}, {"role": "user", "content": "hi"}]
        assert fast.chat_ids(messages) == whole.chat_ids(messages)


def test_a_tokenizer_that_may_merge_across_spaces_is_not_chunked(shared_dir: Path,
                                                                 tmp_path: Path) -> None:
    tiny = shared_dir / "fixtures" / "tiny-llama"
    spec = json.loads((tiny / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / name).write_text((tiny / name).read_text())
    assert isinstance(chunked(tmp_path).tokenizer, HFTokenizer)
    assert type(chunked(None).tokenizer).__name__ == "BuiltinTokenizer"


def test_a_difference_from_the_whole_text_turns_chunking_off(shared_dir: Path) -> None:
    cache = chunked(shared_dir / "fixtures" / "tiny-llama").tokenizer
    assert isinstance(cache, ChunkedTokenizer)
    cache.CHECK_EVERY = 1
    real = cache.base.encode

    def merging(text: str, *, add_special_tokens: bool = True) -> list[int]:
        return [len(text)] if len(text) > 600 else real(text,
                                                      add_special_tokens=add_special_tokens)

    cache.base.encode = merging  # type: ignore[method-assign]
    text = "word " * 400
    assert cache.encode(text) == [len(text)]  # the whole text's answer, not the chunks'
    assert not cache.enabled


@pytest.mark.parametrize("n", [0, 1, 5])
def test_short_texts_are_encoded_whole(shared_dir: Path, n: int) -> None:
    tiny = shared_dir / "fixtures" / "tiny-llama"
    text = "short text " * n
    assert chunked(tiny).completion_ids(text) == \
        load_prompt_tokenizer(tiny).completion_ids(text)
