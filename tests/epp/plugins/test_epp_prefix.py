"""approx-prefix-cache-producer, prefix-cache-scorer and no-hit-lru-scorer on plain data."""

from __future__ import annotations

import xxhash
from _pool import ep, pool, req

from llmd.engines import EndpointMetrics
from llmd.epp import Endpoint, PoolSnapshot
from llmd.epp.plugins import (
    PREFIX_MATCH,
    ApproxPrefixCacheProducer,
    NoHitLruScorer,
    PrefixCacheScorer,
    PrefixMatch,
    ProfileResult,
    SchedulingResult,
)
from llmd.epp.plugins.producer.approx_prefix import block_hashes

A, B = ep(8001), ep(8002)


def _producer(**params: int) -> ApproxPrefixCacheProducer:
    return ApproxPrefixCacheProducer("p", ApproxPrefixCacheProducer.Params(**params))


def _match(producer: ApproxPrefixCacheProducer, prompt: str, p: PoolSnapshot) -> PrefixMatch:
    """What the producer puts in a fresh request's cycle state."""
    r = req(prompt=prompt)
    producer.produce(r, p)
    return r.state.require(PREFIX_MATCH, "test")


def _chosen(endpoint: object, prefill: object = None) -> SchedulingResult:
    results = {"decode": ProfileResult((endpoint,))}  # type: ignore[arg-type]
    if prefill is not None:
        results["prefill"] = ProfileResult((prefill,))  # type: ignore[arg-type]
    return SchedulingResult(results, primary="decode")


def test_block_hashes_are_chained_xxhash64_seeded_by_model() -> None:
    seed = xxhash.xxh64_intdigest(b"model")
    first = xxhash.xxh64_intdigest(b"abcd" + seed.to_bytes(8, "little"))
    second = xxhash.xxh64_intdigest(b"ef" + first.to_bytes(8, "little"))
    assert block_hashes("abcdef", "model", 4, 256) == (first, second)  # trailing partial block
    assert block_hashes("abcdef", "other", 4, 256)[0] != first
    assert len(block_hashes("x" * 100, "m", 4, 3)) == 3  # maxPrefixBlocksToMatch


def test_score_is_matched_over_total_blocks_and_index_follows_the_choice() -> None:
    producer = _producer(block_size_tokens=1)  # 4-character blocks
    scorer = PrefixCacheScorer("prefix", PrefixCacheScorer.Params())
    p = pool(A, B)
    first = req(prompt="aaaabbbbcccc")
    producer.produce(first, p)
    assert scorer.score(first, p) == {A.id: 0.0, B.id: 0.0}
    producer.pre_request(first, _chosen(A), p)

    second = req(prompt="aaaabbbbzzzzyyyy")  # shares 2 of its 4 blocks with what A holds
    producer.produce(second, p)
    assert scorer.score(second, p) == {A.id: 0.5, B.id: 0.0}


def test_prefill_endpoint_is_indexed_too() -> None:
    producer = _producer(block_size_tokens=1)
    p = pool(A, B)
    r = req(prompt="aaaabbbb")
    producer.produce(r, p)
    producer.pre_request(r, _chosen(A, prefill=B), p)
    assert _match(producer, "aaaabbbb", p).matched == {A.id: 2, B.id: 2}


def test_lru_capacity_evicts_oldest_blocks() -> None:
    producer = _producer(block_size_tokens=1, lru_capacity_per_server=2)
    p = pool(A)
    r = req(prompt="aaaabbbbcccc")
    producer.produce(r, p)
    producer.pre_request(r, _chosen(A), p)
    # The first block was evicted, so the greedy match stops at once.
    assert _match(producer, "aaaabbbbcccc", p).matched == {A.id: 0}


def test_removed_endpoint_state_is_pruned() -> None:
    producer = _producer(block_size_tokens=1)
    r = req(prompt="aaaa")
    producer.produce(r, pool(A, B))
    producer.pre_request(r, _chosen(B), pool(A, B))
    r2 = req(prompt="aaaa")
    producer.produce(r2, pool(A, generation=1))
    producer.pre_request(r2, _chosen(A), pool(A, generation=1))
    assert _match(producer, "aaaa", pool(A, B, generation=2)).matched == {A.id: 1, B.id: 0}


def test_no_hit_lru_spreads_cold_requests_and_is_neutral_when_warm() -> None:
    producer = _producer(block_size_tokens=1)
    lru = NoHitLruScorer("lru", NoHitLruScorer.Params())
    p = pool(A, B)
    cold = req(prompt="cold-one")
    producer.produce(cold, p)
    assert lru.score(cold, p) == {A.id: 1.0, B.id: 1.0}  # never used: both top
    lru.pre_request(cold, _chosen(A), p)
    producer.pre_request(cold, _chosen(A), p)

    cold2 = req(prompt="another unrelated")
    producer.produce(cold2, p)
    assert lru.score(cold2, p) == {A.id: 0.0, B.id: 1.0}  # A just took a cold request

    warm = req(prompt="cold-one")
    producer.produce(warm, p)
    assert lru.score(warm, p) == {A.id: 0.5, B.id: 0.5}


def test_auto_tune_uses_each_endpoints_block_size_and_capacity() -> None:
    def tuned(port: int, block_size: int, total_blocks: int) -> Endpoint:
        base = ep(port)
        return Endpoint(base.id, base.spec, EndpointMetrics(block_size=block_size,
                                                            total_blocks=total_blocks),
                        base.metrics_at)

    small, large = tuned(8001, 1, 2), tuned(8002, 2, 100)  # 4- and 8-character blocks
    producer = _producer(block_size_tokens=16, auto_tune=True)
    p = pool(small, large)
    r = req(prompt="aaaabbbbcccc")
    producer.produce(r, p)
    match = r.state.require(PREFIX_MATCH, "test")
    assert match.grid(small.id) == (1, 3) and match.grid(large.id) == (2, 2)
    assert (match.block_tokens, match.total_blocks) == (16, 1)  # the configured 64-char block
    producer.pre_request(r, _chosen(small, prefill=large), p)
    again = _match(producer, "aaaabbbbcccc", p)
    # small's LRU holds only its 2 newest blocks (total_blocks=2): the first was evicted.
    assert again.matched == {small.id: 0, large.id: 2}
    assert again.ratio(large.id) == 1.0 and again.cached_tokens(large.id) == 4
