"""Tokenizers: a deterministic built-in one that needs no files, and HF `tokenizers` from a file.

Both turn text into token ids the same way on every machine and every run, so block hashes
computed by a simulator, the EPP and a benchmark agree without sharing state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import xxhash

from llmd.errors import ConfigError

__all__ = ["BuiltinTokenizer", "HFTokenizer", "Tokenizer", "load_tokenizer"]


class Tokenizer(Protocol):
    """Text ↔ token ids. `encode` is pure and deterministic; `decode` inverts it where it can."""

    name: str
    vocab_size: int
    bos_token: str
    eos_token: str

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; `add_special_tokens` prepends BOS where the tokenizer has one."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens skipped)."""
        ...


# GPT-2's pre-tokenizer pattern (also Llama-3's, less its digit grouping and case folding):
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# in `re` syntax (\p{L} ~ [^\W\d_], \p{N} ~ \d; exact on ASCII). One space belongs to the word
# after it; other whitespace (newlines, the rest of a run of spaces) is a piece of its own. So a
# text that starts with " word" tokenizes the same after any prefix: the pieces of
# prefix + " word ..." are the prefix's pieces then the text's, which is what lets a resent chat
# history ("<|assistant|>\n" + reply) hit the blocks cached when the reply was generated.
_PIECE = re.compile(r" ?[^\W\d_]+|'(?:[stmd]|re|ve|ll)| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")
# Hashed pieces common in prompts (chat template whitespace and punctuation), looked up rather
# than hashed on every encode; their ids are the hashed ids, so this changes speed only.
_COMMON = ("\n", "\n\n", " ", "  ", "\t", ".", ",", ":", "!", "?", "<", ">", "</", "<|", "|>",
           " (", ")", "-", "'", '"', " \"", "s", "assistant", "user", "system")

# Ids below this are the fixed vocabulary (specials, then `_WORDS` with a leading space); every
# other piece maps to a stable id in [_FIXED, vocab_size) by xxhash64 of its UTF-8 bytes.
_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
_WORDS = tuple(
    (
        "the of and to in is that it for on with as was at by be this are from or an have not "
        "but they which one you were all we there can has more when will would their if so what "
        "about out up into time than them only other some could these two may then do first any "
        "like now my such its over also new after most made through where much your way well "
        "down should because each just those people how too little state good very make world "
        "still own see men work long get here between both life being under never day same "
        "another know while last might us great old year off come since against go came right "
        "used take three cache token block prefix model server request stream engine queue batch "
        "latency decode prefill router picker gateway metric score answer question simulated"
    ).split()
)


class BuiltinTokenizer:
    """A file-free tokenizer: GPT-2's regex pieces (words and punctuation runs with at most one
    leading space; other whitespace apart), with a fixed vocabulary of common words and xxhash64
    ids for everything else.

    Deterministic across processes and Python versions. `decode` restores the text of fixed-vocab
    ids exactly (the simulator generates only those) and writes hashed ids as `<id>`.
    """

    name = "builtin"
    bos_token = "<s>"
    eos_token = "</s>"

    def __init__(self, vocab_size: int = 1 << 17) -> None:
        fixed = len(_SPECIALS) + len(_WORDS)
        if vocab_size <= fixed * 2:
            raise ConfigError(
                f"builtin tokenizer: vocab_size must be > {fixed * 2}, got {vocab_size}")
        self.vocab_size = vocab_size
        self._pieces: tuple[str, ...] = _SPECIALS + tuple(" " + w for w in _WORDS)
        self._ids = {p: i for i, p in enumerate(self._pieces)}
        self._fixed = len(self._pieces)
        self._hashed = vocab_size - self._fixed
        for piece in _COMMON:
            self._ids.setdefault(piece, self._fixed + xxhash.xxh64_intdigest(piece.encode())
                                 % self._hashed)
        self.bos_id = self._ids["<s>"]
        self.eos_id = self._ids["</s>"]

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        known, fixed, hashed = self._ids, self._fixed, self._hashed
        intdigest = xxhash.xxh64_intdigest
        ids = [known[p] if p in known else fixed + intdigest(p.encode()) % hashed
               for p in _PIECE.findall(text)]
        return [self.bos_id, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int]) -> str:
        pieces, specials = self._pieces, len(_SPECIALS)
        out = []
        for tid in ids:
            if tid < specials:
                continue
            out.append(pieces[tid] if tid < len(pieces) else f"<{tid}>")
        return "".join(out)


class HFTokenizer:
    """A Hugging Face `tokenizer.json` loaded with the `tokenizers` library (no network)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as _Tok

        self.path = Path(path)
        try:
            self._tok = _Tok.from_file(str(self.path))
        except Exception as exc:  # the Rust side raises a bare Exception for every failure
            raise ConfigError(
                f"--tokenizer {self.path}: cannot load tokenizer.json: {exc}") from exc
        self.name = str(self.path)
        self.vocab_size = self._tok.get_vocab_size()
        config = _read_tokenizer_config(self.path)
        self.bos_token = str(config.get("bos_token") or "<s>")
        self.eos_token = str(config.get("eos_token") or "</s>")

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


def _read_tokenizer_config(path: Path) -> dict[str, object]:
    import json

    cfg = path.with_name("tokenizer_config.json")
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_tokenizer(path: str | Path | None) -> Tokenizer:
    """`HFTokenizer(path)` for a `tokenizer.json` (or a directory holding one), else builtin."""
    if path is None or str(path) == "":
        return BuiltinTokenizer()
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ConfigError(f"--tokenizer {path}: no such file (expected a tokenizer.json)")
    return HFTokenizer(p)
