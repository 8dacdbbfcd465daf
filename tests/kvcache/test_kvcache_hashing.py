"""Chained block hashes: full blocks only, chained, seeded by the model name, stable."""

from __future__ import annotations

import pytest
import xxhash

from llmd.kvcache import BlockHasher, block_hashes, root_hash


def test_full_blocks_only_and_max_blocks() -> None:
    h = BlockHasher.for_model("m", 4)
    assert h.hashes([1, 2, 3]) == []
    assert len(h.hashes(list(range(11)))) == 2
    assert h.hashes(list(range(16)), max_blocks=3) == h.hashes(list(range(16)))[:3]


def test_keys_are_chained_prefix_keys() -> None:
    h = BlockHasher.for_model("m", 4)
    a = h.hashes([1, 2, 3, 4, 5, 6, 7, 8])
    b = h.hashes([9, 2, 3, 4, 5, 6, 7, 8])
    assert a[1] != b[1], "block 1's key must depend on block 0"
    assert h.hashes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])[:2] == a


def test_seed_is_the_model_name_and_the_formula_is_stable() -> None:
    toks = list(range(8))
    assert BlockHasher.for_model("a", 4).hashes(toks) != BlockHasher.for_model("b", 4).hashes(toks)
    parent = xxhash.xxh64_intdigest(b"model")
    assert root_hash("model") == parent
    raw = parent.to_bytes(8, "little") + b"".join(t.to_bytes(4, "little") for t in range(4))
    assert block_hashes(toks, 4, parent)[0] == xxhash.xxh64_intdigest(raw)


def test_bad_block_size() -> None:
    with pytest.raises(ValueError):
        BlockHasher.for_model("m", 0)
