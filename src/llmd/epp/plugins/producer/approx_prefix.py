"""`approx-prefix-cache-producer`: llm-d's approximate prefix index, over characters.

The prompt (completions text, or the compact JSON of chat `messages`) is cut into blocks of
`blockSizeTokens × 4` bytes, at most `maxPrefixBlocksToMatch` of them (or
`maxPrefixTokensToMatch / blockSizeTokens`, llm-d v1's cap in tokens, when set), trailing
partial block included. Block hashes are chained xxhash64: the seed is xxh64(model +
cache_salt), each block hashes its bytes followed by the previous hash as 8 little-endian
bytes. Each endpoint has an LRU of block hashes (capacity `lruCapacityPerServer`); a request
matches an endpoint greedily, up to the first block it lacks. The LRU is updated after the
decision, for the endpoints that were actually chosen (the primary profile's endpoint and, with
P/D, the prefill profile's: llm-d indexes the profile named `prefill`; llmd indexes every non-
primary profile's endpoint, which is the same thing for the profiles llmd's handlers run, and
still right when the prefill profile is renamed), never while scoring.

With `dataLayer.crossReplica`, the blocks recorded after each decision are also handed to the
replica sync (`publish`), which sends them to the peer replicas; theirs arrive through
`learn()` (`syncCrossReplicaState: false` keeps this producer's index local).

With `autoTune`, an endpoint that reports its KV block size (vLLM `block_size`, SGLang
`page_size`) and block count is matched with blocks of that many tokens × 4 characters and an
LRU of that many blocks, as llm-d does; others keep the configured values.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import xxhash
from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKey, DataKeys
from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot
from llmd.epp.plugins.base import SchedulingResult
from llmd.epp.plugins.keys import PREFIX_MATCH, BlockGrid, PrefixMatch
from llmd.epp.request import InferenceRequest

__all__ = ["ApproxPrefixCacheProducer", "block_hashes"]


@dataclass(frozen=True, slots=True)
class _Chains:
    """This producer's own per-request data: the block hashes it matched, to record on the
    chosen endpoints after the decision (`by_endpoint`: endpoints with their own block size)."""

    hashes: tuple[int, ...]
    by_endpoint: Mapping[EndpointId, tuple[int, ...]]

    def of(self, ep_id: EndpointId) -> tuple[int, ...]:
        return self.by_endpoint.get(ep_id, self.hashes)


_CHAINS: DataKey[_Chains] = DataKey("approx-prefix-hashes", _Chains)
"""Private to this producer: no other plugin reads block hashes (a precise index has none)."""


def block_hashes(prompt: str, model: str, block_chars: int, max_blocks: int,
                 cache_salt: str = "") -> tuple[int, ...]:
    """Chained xxhash64 of the prompt's blocks (see the module docstring)."""
    data = prompt.encode()[: block_chars * max_blocks]
    prev = xxhash.xxh64_intdigest((model + cache_salt).encode())
    out = []
    for start in range(0, len(data), block_chars):
        block = data[start : start + block_chars]
        prev = xxhash.xxh64_intdigest(block + prev.to_bytes(8, "little"))
        out.append(prev)
    return tuple(out)


class ApproxPrefixCacheProducer:
    """Fills `PREFIX_MATCH` before filtering; records the chosen endpoints' blocks after the
    decision (a DataProducer and a PreRequest hook)."""

    type: ClassVar[str] = "approx-prefix-cache-producer"
    produces: ClassVar[DataKeys] = (PREFIX_MATCH,)
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        block_size_tokens: int = Field(default=16, gt=0, description="tokens per block (× 4 chars)")
        max_prefix_blocks_to_match: int = Field(default=256, gt=0)
        max_prefix_tokens_to_match: int = Field(
            default=0, ge=0, description="llm-d v1: the cap in tokens (blocks = tokens / "
            "blockSizeTokens); wins over maxPrefixBlocksToMatch when > 0")
        lru_capacity_per_server: int = Field(default=31250, gt=0, description="blocks per endpoint")
        auto_tune: bool = Field(default=False, description="use each endpoint's reported "
                                "KV block size and block count")
        sync_cross_replica_state: bool = Field(
            default=True, description="with dataLayer.crossReplica: share this index's "
            "picks with the peer replicas (llm-d's per-plugin opt-out)")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        self._block_chars = params.block_size_tokens * 4
        tokens = params.max_prefix_tokens_to_match
        self._max_blocks = (max(tokens // params.block_size_tokens, 1) if tokens
                            else params.max_prefix_blocks_to_match)
        self._index: dict[EndpointId, OrderedDict[int, None]] = {}
        self._generation = -1
        self.publish: Callable[[EndpointId, tuple[int, ...]], None] | None = None
        """Set by the replica sync: called with each (endpoint, blocks) this replica records."""

    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        by_size: dict[int, tuple[int, ...]] = {}

        def chain(block_chars: int) -> tuple[int, ...]:
            if block_chars not in by_size:
                by_size[block_chars] = block_hashes(
                    request.prompt, request.model, block_chars, self._max_blocks,
                    request.cache_salt)
            return by_size[block_chars]

        hashes = chain(self._block_chars)
        matched: dict[EndpointId, int] = {}
        chains: dict[EndpointId, tuple[int, ...]] = {}
        grids: dict[EndpointId, BlockGrid] = {}
        for ep in pool.candidates:
            own = hashes
            if self.params.auto_tune and (size := self._block_chars_of(ep)) != self._block_chars:
                own = chains[ep.id] = chain(size)
                grids[ep.id] = BlockGrid(size // 4, len(own))
            lru = self._index.get(ep.id)
            n = 0
            if lru:
                for h in own:
                    if h not in lru:
                        break
                    n += 1
            matched[ep.id] = n
        request.state.put(PREFIX_MATCH, PrefixMatch(
            self.params.block_size_tokens, len(hashes), matched, grids))
        request.state.put(_CHAINS, _Chains(hashes, chains))

    def _block_chars_of(self, ep: Endpoint) -> int:
        size = ep.metrics.block_size
        return size * 4 if size else self._block_chars

    def _capacity_of(self, ep: Endpoint) -> int:
        blocks = ep.metrics.total_blocks if self.params.auto_tune else None
        return blocks or self.params.lru_capacity_per_server

    def pre_request(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        chains = request.state.get(_CHAINS)
        if chains is None or not chains.hashes:
            return
        if pool.generation != self._generation:
            self._prune(pool)
        chosen = [result.destination]
        chosen += [r.targets[0] for name, r in result.results.items()
                   if name != result.primary and r.targets]
        for ep in chosen:
            hashes = chains.of(ep.id)
            self.record(ep.id, hashes, self._capacity_of(ep))
            if self.publish is not None:
                self.publish(ep.id, hashes)

    def learn(self, ep: Endpoint, hashes: tuple[int, ...]) -> None:
        """A peer replica recorded `hashes` on `ep` (never published again)."""
        self.record(ep.id, hashes, self._capacity_of(ep))

    def export(self) -> Iterator[tuple[EndpointId, tuple[int, ...]]]:
        """Every endpoint's blocks, least recent first (a snapshot for a late peer)."""
        for ep_id, lru in list(self._index.items()):
            yield ep_id, tuple(lru)

    def record(self, ep_id: EndpointId, hashes: tuple[int, ...], capacity: int | None = None
               ) -> None:
        """Mark `hashes` as cached on `ep_id` (most recent last), evicting the oldest blocks."""
        lru = self._index.setdefault(ep_id, OrderedDict())
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        cap = capacity or self.params.lru_capacity_per_server
        while len(lru) > cap:
            lru.popitem(last=False)

    def _prune(self, pool: PoolSnapshot) -> None:
        # Per-endpoint state leaves with the endpoint (the pool snapshot holds every endpoint).
        live = pool.ids()
        for ep_id in [k for k in self._index if k not in live]:
            del self._index[ep_id]
        self._generation = pool.generation
