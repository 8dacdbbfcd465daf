"""Deterministic output: seeded word choices, emitted one token at a time, with stop strings.

The same prompt, seed and choice index always give the same text and token ids. Words are
pre-tokenized once per tokenizer, so generation never tokenizes or decodes on the hot path.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass

import xxhash

from llmd.kvcache import Tokenizer

__all__ = ["Choice", "Vocabulary"]

# Every word is in the built-in tokenizer's fixed vocabulary, so its decode is exact.
_WORDS = (
    "the of and to in is that it for on with as was at by be this are from or an have not but "
    "they which one you all we there can has more when will would their if so what about out up "
    "into time than them only other some could these two may then do first any like now such "
    "over also new after most made through where much way well down should because each just "
    "those people how too little state good very make world still own see work long get here "
    "between both life being under never day same another know while last might great old year "
    "cache token block prefix model server request stream engine queue batch latency decode "
    "prefill router picker gateway metric score answer question simulated"
).split()


@dataclass(frozen=True, slots=True)
class _Word:
    ids: tuple[int, ...]
    pieces: tuple[str, ...]  # text each token adds


class Vocabulary:
    """The words the simulator answers with, as (token id, text piece) sequences."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        words = []
        for w in _WORDS:
            ids = tokenizer.encode(" " + w, add_special_tokens=False)
            if not ids:
                continue
            pieces, prev = [], ""
            for k in range(1, len(ids) + 1):
                text = tokenizer.decode(ids[:k])
                pieces.append(text[len(prev):] if text.startswith(prev) else text)
                prev = text
            words.append(_Word(tuple(ids), tuple(pieces)))
        if not words:
            raise ValueError("tokenizer produced no tokens for the answer vocabulary")
        self.words: tuple[_Word, ...] = tuple(words)
        self.pieces: dict[int, str] = {}
        """Token id → the text it adds, for every token the simulator generates."""
        for word in words:
            for tid, piece in zip(word.ids, word.pieces, strict=True):
                self.pieces.setdefault(tid, piece)


class Choice:
    """One output choice: yields tokens until its length, or a stop string, ends it.

    `length` is the number of tokens it will generate at most (min of max_tokens and the
    seeded EOS length); `finish_reason` is "length" when max_tokens cut it, else "stop".
    Text that could still turn into a stop string is held back until it cannot. `ids` are the
    generated token ids (all of them: a stop string cuts the text, not the tokens).
    """

    __slots__ = ("index", "seed", "length", "_eos_reason", "_rng", "_vocab", "_word", "_pos",
                 "_stop", "_hold", "text", "emitted", "tokens", "ids", "finish_reason")

    def __init__(self, index: int, vocab: Vocabulary, seed: int, length: int, eos_reason: str,
                 stop: tuple[str, ...]) -> None:
        self.index = index
        self.seed = seed
        self.length = length
        self._eos_reason = eos_reason
        self._rng = random.Random(seed)
        self._vocab = vocab.words
        self._word: _Word | None = None
        self._pos = 0
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.emitted = 0
        self.tokens = 0
        self.ids: list[int] = []
        self.finish_reason: str | None = None

    @staticmethod
    def seed_for(prompt_ids: list[int], seed: int | None, server_seed: int, index: int) -> int:
        """A request `seed` wins; else the prompt's ids decide (same prompt, same answer)."""
        if seed is not None:
            base = seed
        else:
            base = xxhash.xxh64_intdigest(array("Q", prompt_ids).tobytes(), seed=server_seed)
        return base * 1_000_003 + index

    def step(self) -> tuple[int, str]:
        """Generate one token; returns (token id, text newly safe to emit)."""
        word = self._word
        if word is None or self._pos >= len(word.ids):
            word = self._word = self._rng.choice(self._vocab)
            self._pos = 0
        tid, piece = word.ids[self._pos], word.pieces[self._pos]
        self._pos += 1
        self.tokens += 1
        self.ids.append(tid)
        self.text += piece
        if self._stop:
            # Text before `emitted` was checked already (the hold-back covers straddling matches).
            start = self.emitted
            cut = min((i for i in (self.text.find(s, start) for s in self._stop) if i >= 0),
                      default=-1)
            if cut >= 0:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                return tid, self._flush()
        if self.tokens >= self.length:
            self.finish_reason = self._eos_reason
            return tid, self._flush()
        safe = len(self.text) - self._hold
        if safe <= self.emitted:
            return tid, ""
        out = self.text[self.emitted:safe]
        self.emitted = safe
        return tid, out

    def _flush(self) -> str:
        out = self.text[self.emitted:]
        self.emitted = len(self.text)
        return out
