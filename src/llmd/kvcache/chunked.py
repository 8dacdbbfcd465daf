"""A tokenizer that encodes long texts chunk by chunk, with an LRU cache of chunks.

Tokenizing is most of a precise routing decision's cost (a 1k-token prompt takes about a
millisecond with a byte-level BPE `tokenizer.json`, most of it the pre-tokenizer's regex).
Where the tokenizer's pieces provably never cross a single space between two printable ASCII
characters (a byte-level pre-tokenizer with the GPT-2 regex, a BPE model, no normalizer, no
added token that holds a space or strips one, special tokens only in front), the text is cut at
such spaces about every 512 characters and each chunk's ids are kept in an LRU cache: prompts
that share a prefix (a system prompt, a conversation's history) then tokenize only their own
tail, with the ids a whole-text encoding gives. One call in 256 is checked against the
whole-text encoding; a difference turns chunking off (logged).
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence

from llmd.kvcache.tokenizer import HFTokenizer

__all__ = ["ChunkedTokenizer"]

log = logging.getLogger(__name__)

_CUT = re.compile(r"(?<=[!-~]) (?=[!-~])")
"""A single space between two printable ASCII characters: with the GPT-2 pre-tokenizer regex
(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`) every piece
before it ends at the character before it (no piece but the whitespace runs holds a space,
and those need whitespace before it), and the piece after it starts with it (every ` ?` piece
takes one leading space), so encoding the text on each side apart gives the same pieces."""


class ChunkedTokenizer:
    """A `Tokenizer` over `base` (see the module docstring); only for tokenizers `applies`
    accepts."""

    CHUNK_CHARS = 512
    CHECK_EVERY = 256

    def __init__(self, base: HFTokenizer, capacity: int = 4096) -> None:
        self.base = base
        self.name, self.vocab_size = base.name, base.vocab_size
        self.bos_token, self.eos_token = base.bos_token, base.eos_token
        self.capacity = capacity
        self.enabled = True
        self._calls = 0
        self._cache: OrderedDict[tuple[str, bool], list[int]] = OrderedDict()

    @staticmethod
    def applies(base: HFTokenizer) -> bool:
        """Whether `base` splits only where `_CUT` allows: no normalizer, the byte-level
        pre-tokenizer with its regex, a BPE model, no added token holding or stripping
        whitespace, and special tokens added only in front."""
        try:
            spec = json.loads(base.path.read_text())
        except (OSError, ValueError):
            return False
        pre = spec.get("pre_tokenizer") or {}
        if (spec.get("normalizer") is not None or pre.get("type") != "ByteLevel"
                or not pre.get("use_regex", True)
                or (spec.get("model") or {}).get("type") != "BPE"):
            return False
        for tok in spec.get("added_tokens") or []:
            content = str(tok.get("content", ""))
            if tok.get("lstrip") or tok.get("rstrip") or any(c.isspace() for c in content):
                return False
        plain = base.encode("chunk probe", add_special_tokens=False)
        special = base.encode("chunk probe", add_special_tokens=True)
        return special[len(special) - len(plain):] == plain

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if not self.enabled or len(text) < 2 * self.CHUNK_CHARS:
            return self.base.encode(text, add_special_tokens=add_special_tokens)
        ids: list[int] = []
        start, special = 0, add_special_tokens
        while start < len(text):
            cut = _CUT.search(text, start + self.CHUNK_CHARS)
            end = cut.start() if cut else len(text)
            ids += self._chunk(text[start:end], special)
            start, special = end, False
        self._calls += 1
        if self._calls % self.CHECK_EVERY == 0:
            whole = self.base.encode(text, add_special_tokens=add_special_tokens)
            if whole != ids:
                log.warning("%s: chunked tokenization differs from the whole text's; "
                            "tokenizing whole texts from now on", self.name)
                self.enabled = False
                return whole
        return ids

    def _chunk(self, chunk: str, special: bool) -> list[int]:
        key = (chunk, special)
        cache = self._cache
        ids = cache.get(key)
        if ids is None:
            ids = cache[key] = self.base.encode(chunk, add_special_tokens=special)
            if len(cache) > self.capacity:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.base.decode(ids)
