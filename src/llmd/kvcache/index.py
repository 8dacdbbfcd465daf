"""The precise prefix index: which endpoint holds which prefix blocks, as its engine reported.

Keys are llmd's request-side block keys (`hashing.block_hashes`: an xxh64 chain over token ids,
`block_size` tokens a block, rooted in the model, LoRA and cache salt, see `chain_root`), so a
request is matched by tokenizing it and hashing its blocks; no engine's own hash function is
reproduced. Each engine's block hashes are mapped onto those keys when it announces a block:
`stored()` gets the engine's hashes, the parent's engine hash and the blocks' token ids,
resolves the parent's request key through the map (an unknown parent: the event is skipped and
counted) and computes the keys from the tokens. An engine block of `k × block_size` tokens maps
to `k` consecutive keys; an engine block size that is not a multiple of `block_size` cannot be
mapped and is skipped (counted) too.

Per endpoint and per storage tier (`medium`: GPU, CPU, ...) each key holds a reference count,
because engines announce the same block more than once (vLLM stores and removes a hash
repeatedly); a key counts as held while any tier holds it. `removed()` and `cleared()` undo,
`drop_endpoint()` forgets an endpoint that left the pool. Memory is bounded per endpoint: past
`max_blocks_per_endpoint` engine blocks, the oldest are forgotten (counted).

`match()` walks a request's keys from block 0 and stops at the first key an endpoint does not
hold: the matched length per endpoint, weighted by tier (llm-d's LongestPrefix: GPU 1.0, CPU
0.8, the best tier per block). Speculative entries (`speculate()`) stand for blocks an endpoint
will hold once the request just sent there is prefilled; they count as GPU blocks until they
expire (`ttl_s`) or the engine's own `stored()` confirms them.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import xxhash

from llmd.kvcache.hashing import block_hashes, root_hash

__all__ = ["DEFAULT_TIER_WEIGHTS", "IndexStats", "PrefixIndex", "SkipReason", "chain_root"]

DEFAULT_TIER_WEIGHTS: Mapping[str, float] = {"GPU": 1.0, "CPU": 0.8, "CPU_PINNED": 0.8}
"""llm-d's tier weights; a tier not listed weighs `other_tier_weight` (0.5)."""

SkipReason = str
"""Why an event was not indexed: "unknown-parent", "misaligned", "malformed"."""

_U64 = struct.Struct("<Q")


def chain_root(model: str, *, lora_name: str | None = None, cache_salt: str | None = None
               ) -> int:
    """The request-side parent of block 0: the LoRA adapter's name replaces the model's, and a
    cache salt is mixed in (a salted request never matches another salt's blocks)."""
    root = root_hash(lora_name or model)
    if cache_salt:
        root = xxhash.xxh64_intdigest(_U64.pack(root) + cache_salt.encode())
    return root


@dataclass
class IndexStats:
    """Counters since start: blocks indexed, events skipped by reason, blocks forgotten."""

    stored_blocks: int = 0
    removed_blocks: int = 0
    evicted_blocks: int = 0
    skipped: dict[SkipReason, int] = field(default_factory=dict)

    def skip(self, reason: SkipReason) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class _Holder:
    """One endpoint's blocks: engine hash → its request keys, tier references per key."""

    __slots__ = ("block_tokens", "engine", "held", "refs", "speculative", "weight")

    def __init__(self) -> None:
        self.block_tokens = 0  # the engine's block size, from its last BlockStored (0: none)
        # engine hash → request keys, in arrival order (oldest first, for the memory bound)
        self.engine: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        # engine hash → medium → references
        self.refs: dict[int, dict[str, int]] = {}
        # request key → medium → engine blocks holding it there
        self.held: dict[int, dict[str, int]] = {}
        # request key → its best tier's weight, kept with `held` so match() does one lookup
        self.weight: dict[int, float] = {}
        # request key → expiry (monotonic seconds)
        self.speculative: dict[int, float] = {}

    def hold(self, keys: Iterable[int], medium: str, delta: int,
             weight_of: Callable[[str], float]) -> None:
        held, weight = self.held, self.weight
        for key in keys:
            media = held.get(key)
            if media is None:
                media = held[key] = {}
            before = media.get(medium, 0)
            count = before + delta
            if count > 0:
                media[medium] = count
                if before > 0:
                    continue  # the key's tiers did not change
            else:
                media.pop(medium, None)
                if not media:
                    del held[key]
                    del weight[key]
                    continue
            weight[key] = max(map(weight_of, media))


class PrefixIndex:
    """See the module docstring. Not thread-safe: one event loop owns it."""

    def __init__(self, block_size: int, *, max_blocks_per_endpoint: int = 1_000_000,
                 tier_weights: Mapping[str, float] = DEFAULT_TIER_WEIGHTS,
                 other_tier_weight: float = 0.5, ttl_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.block_size = block_size
        self.max_blocks = max_blocks_per_endpoint
        self.tier_weights = dict(tier_weights)
        self.other_tier_weight = other_tier_weight
        self.ttl_s = ttl_s
        self.clock = clock
        self.stats = IndexStats()
        self._endpoints: dict[str, _Holder] = {}

    # ---- what engines report -------------------------------------------------------------

    def stored(self, endpoint: str, engine_hashes: Sequence[int], parent: int | None,
               token_ids: Sequence[int], engine_block_size: int, root: int,
               medium: str = "GPU") -> SkipReason | None:
        """Index blocks an engine announced (`parent`: the engine hash of the block before the
        first, None for a prompt's first block). Returns why it was skipped, or None."""
        ep = self._endpoints.setdefault(endpoint, _Holder())
        n = len(engine_hashes)
        if n == 0:
            return None
        if not token_ids:  # a tier change of known blocks (vLLM CPU offload): reuse the map
            mapped = [(h, ep.engine.get(h)) for h in engine_hashes]
            if any(known is None for _, known in mapped):
                return self._skip("unknown-parent")
            for h, known in mapped:
                assert known is not None
                self._ref(ep, h, known, medium)
            return None
        if engine_block_size % self.block_size or len(token_ids) != n * engine_block_size:
            return self._skip("misaligned" if engine_block_size % self.block_size
                              else "malformed")
        if parent is None:
            chain = root
        else:
            parent_keys = ep.engine.get(parent)
            if not parent_keys:
                return self._skip("unknown-parent")
            chain = parent_keys[-1]
        chained = block_hashes(token_ids, self.block_size, chain)
        ep.block_tokens = engine_block_size
        per = engine_block_size // self.block_size
        for i, h in enumerate(engine_hashes):
            own = tuple(chained[i * per:(i + 1) * per])
            known = ep.engine.get(h)
            if known is not None and known != own:
                # The same engine hash for other tokens: trust the newer announcement.
                self._forget(ep, h)
            self._ref(ep, h, own, medium)
            for key in own:
                ep.speculative.pop(key, None)  # confirmed
        self.stats.stored_blocks += n
        self._bound(ep)
        return None

    def removed(self, endpoint: str, engine_hashes: Sequence[int], medium: str = "GPU"
                ) -> None:
        """The engine evicted these blocks from `medium` (unknown hashes are ignored)."""
        ep = self._endpoints.get(endpoint)
        if ep is None:
            return
        for h in engine_hashes:
            media = ep.refs.get(h)
            ref = media.get(medium, 0) if media else 0
            keys = ep.engine.get(h)
            if not ref or keys is None or media is None:
                continue
            if ref > 1:
                media[medium] = ref - 1
                continue
            del media[medium]
            ep.hold(keys, medium, -1, self._tier_weight)
            self.stats.removed_blocks += 1
            if not media:
                del ep.refs[h]
                del ep.engine[h]

    def cleared(self, endpoint: str) -> None:
        """The engine dropped every block (a cache reset, or a fresh event stream)."""
        if endpoint in self._endpoints:
            self._endpoints[endpoint] = _Holder()

    def drop_endpoint(self, endpoint: str) -> None:
        """The endpoint left the pool: nothing of it stays."""
        self._endpoints.pop(endpoint, None)

    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def blocks(self, endpoint: str) -> int:
        """Engine blocks currently indexed for `endpoint`."""
        ep = self._endpoints.get(endpoint)
        return len(ep.engine) if ep else 0

    def engine_block_tokens(self, endpoint: str) -> int:
        """The endpoint's engine block size in tokens, as its events report it (0: unknown)."""
        ep = self._endpoints.get(endpoint)
        return ep.block_tokens if ep else 0

    # ---- what the scheduler asks -----------------------------------------------------------

    def request_keys(self, token_ids: Sequence[int], root: int,
                     max_blocks: int | None = None) -> list[int]:
        """The request-side keys of a prompt's full blocks."""
        return block_hashes(token_ids, self.block_size, root, max_blocks)

    def match(self, keys: Sequence[int], endpoints: Iterable[str]) -> dict[str, float]:
        """Per endpoint, the tier-weighted length of the leading run of `keys` it holds
        (0 for an endpoint the index does not know)."""
        now = self.clock()
        out: dict[str, float] = {}
        for name in endpoints:
            ep = self._endpoints.get(name)
            total = 0.0
            if ep is not None:
                weight, spec = ep.weight, ep.speculative
                for key in keys:
                    w = weight.get(key)
                    if w is not None:
                        total += w
                    elif spec.get(key, 0.0) > now:
                        total += 1.0
                    else:
                        break
            out[name] = total
        return out

    def speculate(self, endpoint: str, keys: Sequence[int]) -> None:
        """Count `keys` as held by `endpoint` for `ttl_s` (the request was just sent there)."""
        ep = self._endpoints.setdefault(endpoint, _Holder())
        until = self.clock() + self.ttl_s
        spec = ep.speculative
        for key in keys:
            if key not in ep.held:
                spec[key] = until
        if len(spec) > self.max_blocks:  # expired first, then the oldest
            now = self.clock()
            for key in [k for k, t in spec.items() if t <= now]:
                del spec[key]
            while len(spec) > self.max_blocks:
                del spec[next(iter(spec))]

    # ---- internals -------------------------------------------------------------------------

    def _tier_weight(self, medium: str) -> float:
        return self.tier_weights.get(medium, self.other_tier_weight)

    def _skip(self, reason: SkipReason) -> SkipReason:
        self.stats.skip(reason)
        return reason

    def _ref(self, ep: _Holder, h: int, keys: tuple[int, ...], medium: str) -> None:
        ep.engine[h] = keys
        ep.engine.move_to_end(h)
        media = ep.refs.setdefault(h, {})
        ref = media.get(medium, 0)
        media[medium] = ref + 1
        if ref == 0:
            ep.hold(keys, medium, +1, self._tier_weight)

    def _forget(self, ep: _Holder, h: int) -> None:
        keys = ep.engine.pop(h, ())
        for medium in ep.refs.pop(h, {}):
            ep.hold(keys, medium, -1, self._tier_weight)

    def _bound(self, ep: _Holder) -> None:
        while len(ep.engine) > self.max_blocks:
            oldest = next(iter(ep.engine))
            self._forget(ep, oldest)
            self.stats.evicted_blocks += 1
