"""The simulator's paged KV cache: N blocks of B tokens, prefix reuse by chained block key.

Full prompt blocks carry their `kvcache.hashing` key and are shared by every sequence whose
prompt starts the same way. When the last sequence using a keyed block ends, the block stays
resident (cached) on an LRU list and is evicted, oldest first, only when a new allocation needs
room. Partial blocks and generated tokens use private (unkeyed) blocks, reserved at admission;
the moment a private block is full of computed KV it becomes a keyed block (`commit`), shared at
once and cached when the sequence ends, as vLLM caches a block as soon as it is full and the
engines keep a finished request's full blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Allocation", "BlockPool"]


@dataclass(frozen=True, slots=True)
class Allocation:
    """Blocks one sequence holds: its keyed prompt blocks and a count of private blocks.

    `stored` are the keys this allocation added to the cache and `evicted` the keys it pushed
    out (what a KV-event publisher reports as BlockStored / BlockRemoved).
    """

    keys: tuple[int, ...]
    private: int
    cached_blocks: int
    stored: tuple[int, ...] = ()
    evicted: tuple[int, ...] = ()


class BlockPool:
    """Block accounting with LRU eviction of unreferenced cached blocks. Not thread-safe."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs: dict[int, int] = {}  # resident keyed block → sequences using it
        self._lru: OrderedDict[int, None] = OrderedDict()  # resident, unreferenced; oldest first
        self._private = 0
        self.evictions = 0

    @property
    def used(self) -> int:
        """Blocks referenced by running sequences (cached-but-free blocks count as free)."""
        return len(self._refs) - len(self._lru) + self._private

    @property
    def cached(self) -> int:
        """Resident keyed blocks, referenced or not."""
        return len(self._refs)

    def usage(self) -> float:
        return self.used / self.num_blocks

    def match(self, keys: Sequence[int]) -> int:
        """How many leading `keys` are resident (the reusable prefix, in blocks)."""
        n = 0
        refs = self._refs
        for key in keys:
            if key not in refs:
                break
            n += 1
        return n

    def _needed(self, keys: Sequence[int], private: int) -> tuple[int, int]:
        """(blocks to take from the free pool, cached blocks this allocation would pin)."""
        refs, lru = self._refs, self._lru
        fresh = sum(1 for k in keys if k not in refs)
        pinned = sum(1 for k in set(keys) if k in lru)
        return fresh + private, pinned

    def can_allocate(self, keys: Sequence[int], private: int) -> bool:
        need, pinned = self._needed(keys, private)
        free = self.num_blocks - len(self._refs) - self._private
        return free + len(self._lru) - pinned >= need

    def allocate(self, keys: Sequence[int], private: int) -> Allocation:
        """Take blocks for `keys` (shared where resident) and `private` unkeyed blocks.

        Raises MemoryError when `can_allocate` is false: callers check first.
        """
        if not self.can_allocate(keys, private):
            raise MemoryError("KV cache full")
        refs, lru = self._refs, self._lru
        cached = self.match(keys)
        need, _ = self._needed(keys, private)
        for k in keys:
            if k in refs:
                refs[k] += 1
                lru.pop(k, None)
        evicted = []
        while self.num_blocks - len(refs) - self._private < need:
            victim, _ = lru.popitem(last=False)
            del refs[victim]
            evicted.append(victim)
        self.evictions += len(evicted)
        stored = []
        for k in keys:
            if k not in refs:
                refs[k] = 1
                stored.append(k)
        self._private += private
        return Allocation(tuple(keys), private, cached, tuple(stored), tuple(evicted))

    def commit(self, key: int) -> bool:
        """A running sequence filled one of its private blocks: the block becomes keyed `key`,
        referenced by that sequence (release it with `free(alloc, committed=...)`). A `key`
        already resident keeps its one block (refreshed in the LRU line when unreferenced) and
        the private block stays private. Returns whether `key` entered the cache (what a
        KV-event publisher reports as BlockStored)."""
        refs, lru = self._refs, self._lru
        if key in refs:
            if key in lru:
                lru.move_to_end(key)
            return False
        if self._private <= 0:
            raise ValueError("commit without a private block to fill")
        refs[key] = 1
        self._private -= 1
        return True

    def free(self, alloc: Allocation, committed: Sequence[int] = ()) -> None:
        """Release a sequence's blocks; keyed ones stay cached, last block first in line to go.

        `committed` are the keys `commit` added for this sequence (its generated tokens' full
        blocks, in chain order): they join the eviction line ahead of the prompt's blocks.
        """
        refs, lru = self._refs, self._lru
        self._private -= alloc.private - len(committed)
        for k in (*reversed(committed), *reversed(alloc.keys)):
            left = refs[k] - 1
            refs[k] = left
            if left == 0:
                lru[k] = None
