"""The precise prefix index on plain data: engine hashes mapped onto request keys, parents
resolved through the map, references per tier, evictions, resets, bounds, speculation."""

from __future__ import annotations

from llmd.kvcache.index import PrefixIndex, chain_root

ROOT = chain_root("m")


def _tokens(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def test_a_prompt_announced_in_engine_blocks_matches_its_request_keys() -> None:
    index = PrefixIndex(block_size=4)
    prompt = _tokens(16)
    # The engine's blocks are 8 tokens: 2 request blocks each. Hashes are the engine's own.
    assert index.stored("a", [901, 902], None, prompt, 8, ROOT) is None
    keys = index.request_keys(prompt, ROOT)
    assert len(keys) == 4
    assert index.match(keys, ["a", "b"]) == {"a": 4.0, "b": 0.0}
    # A longer request sharing the first 12 tokens matches 3 blocks.
    other = index.request_keys(prompt[:12] + _tokens(8, 900), ROOT)
    assert index.match(other, ["a"]) == {"a": 3.0}
    # A continuation announced later chains from its parent's engine hash.
    assert index.stored("a", [903], 902, _tokens(8, 116), 8, ROOT) is None
    longer = index.request_keys(prompt + _tokens(8, 116), ROOT)
    assert index.match(longer, ["a"]) == {"a": 6.0}
    assert (index.engine_block_tokens("a"), index.engine_block_tokens("b")) == (8, 0)


def test_unknown_parent_misaligned_and_malformed_are_skipped_and_counted() -> None:
    index = PrefixIndex(block_size=4)
    assert index.stored("a", [5], 77, _tokens(4), 4, ROOT) == "unknown-parent"
    assert index.stored("a", [5], None, _tokens(6), 6, ROOT) == "misaligned"
    assert index.stored("a", [5, 6], None, _tokens(4), 4, ROOT) == "malformed"
    assert index.stats.skipped == {"unknown-parent": 1, "misaligned": 1, "malformed": 1}
    assert index.blocks("a") == 0


def test_references_per_tier_removals_and_resets() -> None:
    index = PrefixIndex(block_size=4)
    keys = index.request_keys(_tokens(8), ROOT)
    index.stored("a", [1, 2], None, _tokens(8), 4, ROOT)
    index.stored("a", [1, 2], None, _tokens(8), 4, ROOT)  # announced twice (vLLM does)
    index.removed("a", [1, 2])
    assert index.match(keys, ["a"]) == {"a": 2.0}  # one reference left
    index.stored("a", [1, 2], None, [], 4, ROOT, medium="CPU")  # offloaded: no tokens
    assert index.match(keys, ["a"]) == {"a": 2.0}  # GPU and CPU: the best tier counts
    index.stored("a", [1], None, [], 4, ROOT, medium="DISK")  # a tier not listed: 0.5
    index.removed("a", [1, 2])
    index.removed("a", [1], medium="CPU")
    assert index.match(keys, ["a"]) == {"a": 1.3}  # DISK then CPU
    index.stored("a", [1], None, [], 4, ROOT, medium="CPU")
    index.removed("a", [1], medium="DISK")
    assert index.match(keys, ["a"]) == {"a": 1.6}  # CPU only: 0.8 a block
    index.removed("a", [2], medium="CPU")
    assert index.match(keys, ["a"]) == {"a": 0.8}
    index.cleared("a")
    assert index.match(keys, ["a"]) == {"a": 0.0} and index.blocks("a") == 0


def test_salt_and_lora_keep_their_own_chains() -> None:
    index = PrefixIndex(block_size=4)
    salted = chain_root("m", cache_salt="tenant-a")
    index.stored("a", [1], None, _tokens(4), 4, salted)
    assert index.match(index.request_keys(_tokens(4), ROOT), ["a"]) == {"a": 0.0}
    assert index.match(index.request_keys(_tokens(4), salted), ["a"]) == {"a": 1.0}
    assert chain_root("m", lora_name="l") != ROOT


def test_memory_is_bounded_and_endpoints_leave() -> None:
    index = PrefixIndex(block_size=4, max_blocks_per_endpoint=3)
    for i in range(5):
        parent = None if i == 0 else i - 1
        index.stored("a", [i], parent, _tokens(4, 4 * i), 4, ROOT)
    assert index.blocks("a") == 3 and index.stats.evicted_blocks == 2
    keys = index.request_keys(_tokens(20), ROOT)
    assert index.match(keys, ["a"]) == {"a": 0.0}  # block 0 was forgotten: no leading run
    index.drop_endpoint("a")
    assert index.endpoints() == []


def test_speculation_counts_until_it_expires_or_is_confirmed() -> None:
    now = [0.0]
    index = PrefixIndex(block_size=4, ttl_s=2.0, clock=lambda: now[0])
    keys = index.request_keys(_tokens(8), ROOT)
    index.speculate("a", keys)
    assert index.match(keys, ["a"]) == {"a": 2.0}
    now[0] = 3.0
    assert index.match(keys, ["a"]) == {"a": 0.0}
    index.speculate("a", keys)
    index.stored("a", [1, 2], None, _tokens(8), 4, ROOT)  # the engine confirms
    now[0] = 10.0
    assert index.match(keys, ["a"]) == {"a": 2.0}
