"""Chained block hashes over token ids: the one block key of llmd.

A prompt's token ids are cut into full blocks of `block_size` tokens (a trailing partial block
has no key). Block i's key is

    key_i = xxh64(le_u64(key_{i-1}) || le_u32(tok) for tok in block_i, seed=0)

with key_{-1} = xxh64(model name) (a LoRA adapter's name replaces the model name), so a key
names the whole prefix up to its block, not the block's tokens alone. The simulator's KV cache,
its KV events and the EPP's precise prefix index all use this function, so their keys agree
without sharing state.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

__all__ = ["BlockHasher", "block_hashes", "root_hash"]

_U64 = struct.Struct("<Q")
_LITTLE = sys.byteorder == "little"


def root_hash(model: str) -> int:
    """The chain's parent for block 0: xxhash64 of the model (or LoRA) name."""
    return xxhash.xxh64_intdigest(model.encode())


def block_hashes(tokens: Sequence[int], block_size: int, parent: int,
                 max_blocks: int | None = None) -> list[int]:
    """Keys of the full blocks of `tokens` (at most `max_blocks`), chained from `parent`."""
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    full = len(tokens) // block_size
    if max_blocks is not None:
        full = min(full, max_blocks)
    if full == 0:
        return []
    ids = array("I", tokens[: full * block_size])
    if not _LITTLE:
        ids.byteswap()
    raw = ids.tobytes()
    step = block_size * 4
    keys = []
    digest, pack = xxhash.xxh64_intdigest, _U64.pack
    for i in range(full):
        parent = digest(pack(parent) + raw[i * step:(i + 1) * step])
        keys.append(parent)
    return keys


@dataclass(frozen=True, slots=True)
class BlockHasher:
    """`block_hashes` bound to one model (or LoRA) name and block size."""

    block_size: int
    root: int

    @classmethod
    def for_model(cls, model: str, block_size: int) -> BlockHasher:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        return cls(block_size, root_hash(model))

    def hashes(self, tokens: Sequence[int], max_blocks: int | None = None) -> list[int]:
        return block_hashes(tokens, self.block_size, self.root, max_blocks)
