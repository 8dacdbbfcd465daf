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

Tokenizing is most of a decision's cost; with a tokenizer that allows it, prompts that share a
prefix tokenize only their own tail (`kvcache.ChunkedTokenizer`).

With `speculativeIndexing`, the endpoint just picked counts as holding the request's blocks
for `speculativeTTL` (unless its events confirm them earlier), so a burst of requests sharing
a new prefix goes to one endpoint before its first event arrives.

llm-d parameters accepted for compatibility but not needed here: `tokenProcessorConfig.
hashSeed` and `hashAlgorithm` (request keys are llmd's own; engine hashes are mapped, never
reproduced, so no `PYTHONHASHSEED` alignment is needed) and `kvEventsConfig.concurrency`.
"""

from __future__ import annotations

import asyncio
import logging
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
        self.prompts: PromptTokenizer = load_prompt_tokenizer(params.tokenizer, chunked=True)
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


class PrecisePrefixCacheScorer(PrecisePrefixCacheProducer):
    """llm-d's older `precise-prefix-cache-scorer`: the producer that also scores each
    candidate by its matched leading blocks over the prompt's blocks."""

    type: ClassVar[str] = "precise-prefix-cache-scorer"

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> dict[EndpointId, float]:
        match = request.state.get(PREFIX_MATCH)
        if match is None:
            return {}
        return {ep.id: match.ratio(ep.id) for ep in pool.candidates}
