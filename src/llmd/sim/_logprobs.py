"""Seeded log-probabilities for the simulator's tokens, in the OpenAI / vLLM response shapes.

There is no model, so each position gets a made-up but consistent distribution: the same
(seed, position) always gives the same values, whatever `k` is asked. Probabilities are drawn
by stick-breaking (rank i takes 50-97% of what ranks < i left), so they are descending and sum
to less than 1; logprobs are their logs (<= 0). The sampled token takes a seeded rank (usually
0); when a top-k list is asked (k > 0) it always contains the sampled token, in place of the
k-th entry if its rank is lower. The other entries are distinct tokens of the answer
vocabulary.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from llmd.kvcache import Tokenizer
from llmd.sim.text import Vocabulary

__all__ = [
    "MAX_LOGPROBS",
    "LogprobModel",
    "TokenLogprob",
    "chat_logprobs",
    "completion_logprobs",
]

MAX_LOGPROBS = 20
"""vLLM's default `max_logprobs`: `logprobs` / `top_logprobs` above it are a 400."""

_RANKS = MAX_LOGPROBS
_KEY = struct.Struct("<QQ")
_PROMPT_SALT = 0x5EED_0F_9A0B7


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One position: the token's text and logprob, and the top-k (text, logprob), descending."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


class LogprobModel:
    """Logprobs for generated tokens (seeded by their choice) and prompt tokens (echo)."""

    def __init__(self, vocab: Vocabulary, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._pieces = vocab.pieces
        seen: set[str] = set()
        pool: list[tuple[int, str]] = []
        for tid, piece in vocab.pieces.items():
            if piece and piece not in seen:
                seen.add(piece)
                pool.append((tid, piece))
        tid = 0
        while len(pool) <= _RANKS and tid < tokenizer.vocab_size:  # a tiny answer vocabulary
            piece = tokenizer.decode([tid])
            if piece and piece not in seen:
                seen.add(piece)
                pool.append((tid, piece))
            tid += 1
        self._pool = pool

    def text(self, token_id: int) -> str:
        """The text one token stands for."""
        piece = self._pieces.get(token_id)
        return piece if piece is not None else self._tokenizer.decode([token_id])

    def one(self, seed: int, pos: int, token_id: int, k: int) -> TokenLogprob:
        """Position `pos` of the sequence seeded `seed`, where `token_id` was chosen."""
        rng = random.Random(xxhash.xxh64_intdigest(_KEY.pack(seed % 2**64, pos)))
        rank = min(int(rng.expovariate(1.5)), _RANKS - 1)
        left, probs = 1.0, []
        for i in range(_RANKS):
            p = left * rng.uniform(0.5, 0.97 if i == 0 else 0.9)
            probs.append(p)
            left -= p
        alts = rng.sample(self._pool, min(len(self._pool), _RANKS + 1))
        token = self.text(token_id)
        logprob = math.log(probs[rank])
        if k <= 0:
            return TokenLogprob(token, logprob, ())
        others = [piece for tid, piece in alts if tid != token_id and piece != token]
        top: list[tuple[str, float]] = []
        for i in range(min(k, _RANKS)):
            if i == rank or (i == k - 1 and rank > i):
                top.append((token, logprob))
            elif others:
                top.append((others.pop(0), math.log(probs[i])))
        return TokenLogprob(token, logprob, tuple(top))

    def generated(self, seed: int, ids: Sequence[int], k: int, start: int = 0
                  ) -> list[TokenLogprob]:
        """Logprobs of a choice's tokens `ids`, the first at output position `start`."""
        return [self.one(seed, start + i, tid, k) for i, tid in enumerate(ids)]

    def prompt(self, prompt_ids: Sequence[int], k: int) -> list[TokenLogprob | None]:
        """Prompt logprobs (echo): None for the first token, which nothing predicts."""
        seed = xxhash.xxh64_intdigest(struct.pack(f"<{len(prompt_ids)}Q", *prompt_ids),
                                      seed=_PROMPT_SALT)
        out: list[TokenLogprob | None] = [None]
        out += [self.one(seed, i, tid, k) for i, tid in enumerate(prompt_ids) if i > 0]
        return out


def completion_logprobs(entries: Sequence[TokenLogprob | None], model: LogprobModel,
                        prompt_ids: Sequence[int], offset: int = 0) -> dict[str, Any]:
    """The completions shape: `{tokens, token_logprobs, top_logprobs, text_offset}`.

    A None entry is a prompt's first token (its text from `prompt_ids`). `top_logprobs` holds
    None where no top-k was asked (logprobs=0), as vLLM answers.
    """
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for i, e in enumerate(entries):
        token = model.text(prompt_ids[i]) if e is None else e.token
        tokens.append(token)
        values.append(None if e is None else e.logprob)
        tops.append(dict(e.top) if e is not None and e.top else None)
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
            "text_offset": offsets}


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """The chat shape: `{content: [{token, logprob, bytes, top_logprobs: [...]}]}`."""
    return {"content": [
        {"token": e.token, "logprob": e.logprob, "bytes": list(e.token.encode()),
         "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                          for t, lp in e.top]}
        for e in entries]}
