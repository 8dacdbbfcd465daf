"""The data keys plugins exchange through the request's `CycleState`, and their value types.

Neutral ground: producers and consumers import the key from here, never from each other, so
either side can be replaced (an approximate or a precise prefix index) without touching the
other. A plugin's private data (the approximate producer's block hashes) stays in its own
module under a private key.

- `PREFIX_MATCH` (`prefix-match`, a `PrefixMatch`): produced by `approx-prefix-cache-producer`
  (the default producer) or another prefix index; consumed by `prefix-cache-scorer`,
  `no-hit-lru-scorer` and `prefix-based-pd-decider`.
- `DECODE_PICK` (`decode-pick`, an `Endpoint`): produced by `disagg-profile-handler` and
  `pd-profile-handler`; consumed by `decode-engine-filter`.
- `INFLIGHT_LOAD` (`inflight-load`, an `InflightLoad`): produced by `inflight-load-producer`
  (the default producer); consumed by `token-load-scorer`, `active-request-scorer` and
  `prefix-cache-affinity-filter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from llmd.epp.cycle import DataKey
from llmd.epp.datastore import Endpoint, EndpointId

__all__ = ["DECODE_PICK", "INFLIGHT_LOAD", "PREFIX_MATCH", "BlockGrid", "EndpointLoad",
           "InflightLoad", "PrefixMatch"]


class BlockGrid(NamedTuple):
    """How one endpoint's cache cuts the request: `block_tokens` tokens per block, which
    makes `total_blocks` blocks of the (possibly truncated) prompt."""

    block_tokens: int
    total_blocks: int


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """How much of one request's prompt each candidate endpoint already holds in its KV cache,
    counted in whole leading blocks (a greedy match that stops at the first missing block).

    Engine- and index-neutral: an approximate index (character blocks, as llm-d's
    `approx-prefix-cache-producer`) and a precise one (KV events over token-id block keys)
    both fill it. `block_tokens`/`total_blocks` are the grid the index used for the request;
    `grids` holds the endpoints whose own block size differs (auto-tuned, or reported by the
    engine). Endpoints missing from `matched` hold nothing.
    """

    block_tokens: int
    total_blocks: int
    matched: Mapping[EndpointId, float]
    """Leading blocks held; a precise index weighs a block held only in a slower tier (CPU)
    below 1, so this may be fractional."""
    grids: Mapping[EndpointId, BlockGrid] = field(default_factory=dict)
    prompt_tokens: int | None = None
    """The prompt's length in tokens when the producer tokenized it (a precise index); None
    when it did not (consumers then estimate, as llm-d does, from the characters)."""

    def grid(self, ep_id: EndpointId) -> BlockGrid:
        own = self.grids.get(ep_id)
        return BlockGrid(self.block_tokens, self.total_blocks) if own is None else own

    def matched_blocks(self, ep_id: EndpointId) -> float:
        return self.matched.get(ep_id, 0)

    def cached_tokens(self, ep_id: EndpointId) -> int:
        """Matched blocks × block size in tokens (llm-d's hit length; a trailing partial
        block counts whole, so this can exceed the prompt's estimated length)."""
        own = self.grids.get(ep_id)
        return int(self.matched.get(ep_id, 0) * (self.block_tokens if own is None
                                                 else own.block_tokens))

    def ratio(self, ep_id: EndpointId) -> float:
        """Matched over total blocks, 0..1 (0 for an empty prompt)."""
        own = self.grids.get(ep_id)
        total = self.total_blocks if own is None else own.total_blocks
        return self.matched.get(ep_id, 0) / total if total else 0.0

    @property
    def any_hit(self) -> bool:
        """Whether any candidate holds at least the first block."""
        return any(self.matched.values())


PREFIX_MATCH: DataKey[PrefixMatch] = DataKey("prefix-match", PrefixMatch)
"""Per candidate, the request's leading blocks it holds; filled before filtering."""

DECODE_PICK: DataKey[Endpoint] = DataKey("decode-pick", Endpoint)
"""The decode profile's first target, put by a decode-first P/D handler before it runs the
prefill profile (so a filter there can pair prefill with decode)."""


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """What one endpoint is working on for this EPP: requests in flight and the uncached prompt
    tokens sent to it that it has not prefilled yet (llm-d's `InFlightLoad`)."""

    requests: int = 0
    tokens: float = 0.0


_IDLE = EndpointLoad()


@dataclass(frozen=True, slots=True)
class InflightLoad:
    """Per candidate endpoint: its in-flight load, and how many of this request's prompt tokens
    it would have to prefill (those it has not cached: llm-d's `UncachedRequestTokens`)."""

    loads: Mapping[EndpointId, EndpointLoad]
    request_tokens: Mapping[EndpointId, int] = field(default_factory=dict)

    def of(self, ep_id: EndpointId) -> EndpointLoad:
        return self.loads.get(ep_id, _IDLE)

    def uncached(self, ep_id: EndpointId) -> int:
        return self.request_tokens.get(ep_id, 0)


INFLIGHT_LOAD: DataKey[InflightLoad] = DataKey("inflight-load", InflightLoad)
"""Per candidate, its in-flight requests and prefill tokens; filled before filtering."""
