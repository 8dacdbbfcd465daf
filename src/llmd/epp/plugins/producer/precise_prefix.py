"""Precise prefix-cache routing from the engines' own KV events, for vLLM and SGLang alike.

`precise-prefix-cache-producer` (llm-d v1's name) fills `PREFIX_MATCH` from a
`llmd.kvcache.PrefixIndex` that `llmd.epp.kv_events` keeps in step with every endpoint's KV
events, so `prefix-cache-scorer`, `no-hit-lru-scorer` and the P/D decider read what each engine
really holds (evictions included) instead of a guess from past routing.
`precise-prefix-cache-scorer` (llm-d's older name) is the same producer that also scores:
matched leading blocks over the prompt's blocks.

Per request the prompt is tokenized in the EPP, as the engine does it (`kvcache.prompts`: the
tokenizer and chat template of the model directory `tokenizer`, or llmd's built-in tokenizer
and chat format, which the simulators use), and cut into `tokenProcessorConfig.blockSize`
token blocks whose llmd request keys the index matches: no render pool, for SGLang as for
vLLM. Engine block sizes must be multiples of `blockSize` (16 divides both engines' usual
sizes: vLLM 16, SGLang pages of 16 or 64).

Tokenizing is most of a decision's cost (a 1k-token prompt takes about a millisecond with a
byte-level BPE `tokenizer.json`, most of it the pre-tokenizer's regex). Where the tokenizer's
pieces provably never cross a single space between two non-space characters (a byte-level
pre-tokenizer with the GPT-2 regex, no normalizer, no added token that holds a space or strips
one), the text is cut at such spaces about every 512 characters and each chunk's ids are kept
in an LRU cache: prompts that share a prefix (a system prompt, a conversation's history) then
tokenize only their own tail, with the ids a whole-text encoding gives. One call in 256 is
checked against the whole-text encoding; a difference turns the cache off (logged).

With `speculativeIndexing`, the endpoint just picked counts as holding the request's blocks
for `speculativeTTL` (unless its events confirm them earlier), so a burst of requests sharing
a new prefix goes to one endpoint before its first event arrives.

llm-d parameters accepted for compatibility but not needed here: `tokenProcessorConfig.
hashSeed` and `hashAlgorithm` (request keys are llmd's own; engine hashes are mapped, never
reproduced, so no `PYTHONHASHSEED` alignment is needed) and `kvEventsConfig.concurrency`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from prometheus_client import Counter
from pydantic import AliasChoices, Field

from llmd.config import LlmdModel, PositiveDuration
from llmd.epp.cycle import DataKey, DataKeys
from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.kv_events import KvEventsFollower, SubscribeSettings
from llmd.epp.plugins.base import PluginContext, SchedulingResult
from llmd.epp.plugins.keys import PREFIX_MATCH, PrefixMatch
from llmd.epp.request import InferenceRequest
from llmd.kvcache import (
    HFTokenizer,
    PrefixIndex,
    PromptTokenizer,
    chain_root,
    load_prompt_tokenizer,
)

__all__ = ["PrecisePrefixCacheProducer", "PrecisePrefixCacheScorer"]

log = logging.getLogger(__name__)


class _TokenProcessor(LlmdModel):
    block_size: int = Field(16, gt=0, validation_alias=AliasChoices(
        "blockSize", "blockSizeTokens", "block_size"),
        description="tokens per block of the index (a divisor of the engines' block size)")
    hash_seed: str = Field("", description="accepted for llm-d; llmd's keys need no seed")
    hash_algorithm: Literal["xxh64", "fnv64a", "sha256", "sha256_cbor"] = "xxh64"


class _PodDiscovery(LlmdModel):
    socket_port: int = Field(5557, gt=0, lt=65536)


class _KvEvents(LlmdModel):
    topic_filter: str = "kv@"
    concurrency: int = Field(4, gt=0, description="accepted for llm-d (one event loop here)")
    discover_pods: bool = True
    pod_discovery_config: _PodDiscovery = Field(default_factory=_PodDiscovery)
    zmq_endpoint: str | None = Field(None, description="centralized mode: bind here, engines "
                                     "connect")
    engine_type: Literal["vllm", "sglang"] | None = Field(
        None, description="every endpoint's event dialect; default: its engine-type label")


class _InMemory(LlmdModel):
    size: int = Field(1_000_000, gt=0, description="engine blocks kept per endpoint")
    pod_cache_size: int = Field(10, gt=0, description="accepted for llm-d")


class _KvBlockIndex(LlmdModel):
    in_memory_config: _InMemory = Field(default_factory=_InMemory)
    enable_metrics: bool = True


class _Indexer(LlmdModel):
    kv_block_index_config: _KvBlockIndex = Field(default_factory=_KvBlockIndex)


class PreciseParams(LlmdModel):
    token_processor_config: _TokenProcessor = Field(default_factory=_TokenProcessor)
    indexer_config: _Indexer = Field(default_factory=_Indexer)
    kv_events_config: _KvEvents = Field(default_factory=_KvEvents)
    speculative_indexing: bool = False
    speculative_ttl: PositiveDuration = Field(2.0, alias="speculativeTTL",
                                   description="seconds, or a duration like `2s`")
    tokenizer: str | None = Field(
        None, description="llmd: model directory (tokenizer.json and its chat template) the "
        "endpoints serve; default: the built-in tokenizer and chat format of `llmd sim`")
    max_prefix_blocks_to_match: int = Field(
        4096, gt=0, description="llmd: blocks of a prompt matched at most (and tokenized: "
        "a longer prompt's tail is not read)")



@dataclass(frozen=True, slots=True)
class _Keys:
    """This producer's own per-request data: the request's block keys and token count."""

    keys: tuple[int, ...]
    tokens: int


_KEYS: DataKey[_Keys] = DataKey("precise-prefix-keys", _Keys)


class PrecisePrefixCacheProducer:
    """Fills `PREFIX_MATCH` from the engines' KV events (a data producer, a pre-request hook
    for speculative entries, and a background task that follows the events)."""

    type: ClassVar[str] = "precise-prefix-cache-producer"
    produces: ClassVar[DataKeys] = (PREFIX_MATCH,)
    consumes: ClassVar[DataKeys] = ()
    Params = PreciseParams

    def __init__(self, name: str, params: PreciseParams) -> None:
        self.name, self.params = name, params
        self.block_size = params.token_processor_config.block_size
        self.index = PrefixIndex(
            self.block_size,
            max_blocks_per_endpoint=params.indexer_config.kv_block_index_config
            .in_memory_config.size,
            ttl_s=params.speculative_ttl)
        self.prompts: PromptTokenizer = load_prompt_tokenizer(params.tokenizer)
        if isinstance(self.prompts.tokenizer, HFTokenizer) and _ChunkCache.applies(
                self.prompts.tokenizer):
            self.prompts = PromptTokenizer(_ChunkCache(self.prompts.tokenizer),
                                           self.prompts.render)
        self._max_tokens = params.max_prefix_blocks_to_match * self.block_size
        # (root, first block's tokens) -> the last such prompt's token ids and request keys
        self._recent: OrderedDict[tuple[int, tuple[int, ...]],
                                  tuple[Sequence[int], list[int]]] = OrderedDict()
        self._recent_tokens = 0
        self._hits: Counter | None = None

    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        ids = self._token_ids(request.body)
        root = chain_root(request.model, cache_salt=request.cache_salt or None)
        keys = self._request_keys(ids, root)
        matched = self.index.match(keys, (ep.id for ep in pool.candidates)) if keys else {}
        # A prompt cut at the match limit may be longer: let consumers estimate its length.
        known = 0 < len(ids) < self._max_tokens
        request.state.put(PREFIX_MATCH, PrefixMatch(self.block_size, len(keys), matched,
                                                    prompt_tokens=len(ids) if known else None))
        request.state.put(_KEYS, _Keys(tuple(keys), len(ids)))

    def pre_request(self, request: InferenceRequest, result: SchedulingResult,
                    pool: PoolSnapshot) -> None:
        own = request.state.get(_KEYS)
        match = request.state.get(PREFIX_MATCH)
        if own is None or not own.keys:
            return
        chosen = [result.destination.id]
        chosen += [r.targets[0].id for n, r in result.results.items()
                   if n != result.primary and r.targets]
        if self._hits is not None and match is not None:
            dest = result.destination.id
            self._hits.labels(dest).inc(self._expected_hit(match.cached_tokens(dest),
                                                           own.tokens, dest))
        if self.params.speculative_indexing:
            for ep_id in chosen:
                self.index.speculate(ep_id, own.keys)

    def _request_keys(self, ids: Sequence[int], root: int) -> list[int]:
        """`index.request_keys`, reusing the keys of the last prompt that began with the same
        block under the same root as far as the two prompts' tokens agree (prompts of a group
        share a long prefix: only their own blocks are hashed)."""
        bs, limit = self.block_size, self.params.max_prefix_blocks_to_match
        if len(ids) < bs:
            return []
        head = (root, tuple(ids[:bs]))
        recent = self._recent.pop(head, None)
        same = 0
        if recent is not None:
            self._recent_tokens -= len(recent[0])
            same = _shared_blocks(ids, recent[0], bs, len(recent[1]))
        if same == 0:
            keys = self.index.request_keys(ids, root, limit)
        else:
            assert recent is not None
            keys = recent[1][:same]
            if same < limit:
                keys += self.index.request_keys(ids[same * bs:], keys[-1], limit - same)
        kept = ids if len(ids) <= len(keys) * bs else ids[:len(keys) * bs]
        self._recent[head] = (kept, keys)
        self._recent_tokens += len(kept)
        while len(self._recent) > _RECENT_PROMPTS or self._recent_tokens > _RECENT_TOKENS:
            self._recent_tokens -= len(self._recent.popitem(last=False)[1][0])
        return keys

    def _expected_hit(self, matched_tokens: int, prompt_tokens: int, dest: EndpointId) -> int:
        """The prompt tokens `dest` will serve from its cache, counted as the engines count
        `prefix_cache_hits`: whole engine blocks, and never the prompt's last token (both
        engines compute at least one)."""
        unit = self.index.engine_block_tokens(dest) or self.block_size
        return min(matched_tokens, max(prompt_tokens - 1, 0)) // unit * unit

    async def run(self, context: PluginContext, stop: asyncio.Event) -> None:
        events = self.params.kv_events_config
        if self.params.indexer_config.kv_block_index_config.enable_metrics:
            self._hits = Counter(
                "llmd_epp_precise_prefix_hit_tokens",
                "Prompt tokens the precise index expected the chosen endpoint to serve from "
                "its prefix cache (whole engine blocks, never the prompt's last token)",
                ["endpoint"], registry=context.registry)
        settings = SubscribeSettings(
            topic_filter=events.topic_filter, discover_pods=events.discover_pods,
            socket_port=events.pod_discovery_config.socket_port,
            zmq_endpoint=events.zmq_endpoint, engine_type=events.engine_type)
        await KvEventsFollower(self.index, settings, context.registry).run(context.pool, stop)

    def _token_ids(self, body: Mapping[str, Any]) -> Sequence[int]:
        """The prompt's token ids as the engine computes them; [] when there is no prompt the
        tokenizer can read (the request then matches nothing and is scored on load)."""
        try:
            if "messages" in body and isinstance(body["messages"], list):
                return self.prompts.chat_ids(body["messages"], self._max_tokens)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
                prompt = prompt[0]  # a batch: each prompt is its own sequence; match the first
            if isinstance(prompt, str) or (isinstance(prompt, list)
                                           and all(isinstance(t, int) for t in prompt)):
                return self.prompts.completion_ids(prompt, self._max_tokens)
        except ValueError as exc:  # the chat template refused the messages
            log.debug("%s: cannot tokenize the request: %s", self.name, exc)
        return []


_RECENT_PROMPTS = 64
_RECENT_TOKENS = 256 * 1024
"""Prompts whose request keys are kept for reuse: one per distinct first block and root, 64 at
most, with 256k token ids in all (about 10 MiB)."""


def _shared_blocks(a: Sequence[int], b: Sequence[int], block: int, most: int) -> int:
    """How many leading whole blocks of `block` tokens `a` and `b` have in common (at most
    `most`): a binary search whose slices compare in C."""
    lo, hi = 0, min(len(a) // block, len(b) // block, most)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo * block:mid * block] == b[lo * block:mid * block]:
            lo = mid
        else:
            hi = mid - 1
    return lo


_CUT = re.compile(r"(?<=[!-~]) (?=[!-~])")
"""A single space between two printable ASCII characters: with the GPT-2 pre-tokenizer regex
(`'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`) every piece
before it ends at the character before it (no piece but the whitespace runs holds a space,
and those need whitespace before it), and the piece after it starts with it (every ` ?` piece
takes one leading space), so encoding the text on each side apart gives the same pieces."""


class _ChunkCache:
    """A `Tokenizer` that encodes long texts chunk by chunk, with an LRU cache of chunks (see
    the module docstring); only for tokenizers `applies` accepts."""

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


class PrecisePrefixCacheScorer(PrecisePrefixCacheProducer):
    """llm-d's older `precise-prefix-cache-scorer`: the producer that also scores each
    candidate by its matched leading blocks over the prompt's blocks."""

    type: ClassVar[str] = "precise-prefix-cache-scorer"

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> dict[EndpointId, float]:
        match = request.state.get(PREFIX_MATCH)
        if match is None:
            return {}
        return {ep.id: match.ratio(ep.id) for ep in pool.candidates}
