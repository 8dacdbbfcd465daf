"""The precise producer's request keys: reusing the last similar prompt's keys changes
nothing."""

from __future__ import annotations

import random
from pathlib import Path

from llmd.epp.plugins import PrecisePrefixCacheProducer
from llmd.kvcache import ChunkedTokenizer, chain_root


def test_reused_request_keys_equal_freshly_hashed_ones() -> None:
    """Keys reused from the last prompt with the same first block are the keys the index would
    hash for the prompt: shared prefixes of every length, other roots (model, salt), prompts
    shorter than the one before, partial blocks, the match limit."""
    p = PrecisePrefixCacheProducer("p", PrecisePrefixCacheProducer.Params.model_validate(
        {"maxPrefixBlocksToMatch": 20}))
    rng = random.Random(3)
    base = [rng.randrange(1000) for _ in range(400)]
    roots = [chain_root("m"), chain_root("m", cache_salt="s"), chain_root("other")]
    for _ in range(300):
        cut = rng.randrange(0, 400)
        ids = base[:cut] + [rng.randrange(1000) for _ in range(rng.randrange(0, 80))]
        root = rng.choice(roots)
        assert p._request_keys(ids, root) == p.index.request_keys(ids, root, 20)


def test_the_producer_tokenizes_chunk_by_chunk_where_it_can(shared_dir: Path) -> None:
    params = PrecisePrefixCacheProducer.Params.model_validate(
        {"tokenizer": str(shared_dir / "fixtures" / "tiny-llama")})
    assert isinstance(PrecisePrefixCacheProducer("p", params).prompts.tokenizer, ChunkedTokenizer)
