"""The cache-hit share an oracle router reaches on a given fleet, by replaying the workload.

Definition (also in docs/benchmarks.md): the requests are replayed in the order the benchmark
sent them against N copies of the simulator's own KV block pool (`llmd.sim.blocks.BlockPool`,
same block size, same number of blocks, same block keys as the simulators compute from the same
tokenizer and model name, same LRU eviction). The oracle sees every pool's exact contents and
sends each request to the pool holding the longest cached prefix of it; a request no pool has
seen goes to the pool with the fewest resident blocks (the most room), which spreads the groups
evenly. Hits are counted with the simulator's own rule (whole blocks, never the prompt's last
token). Requests are replayed one at a time, so running sequences never compete with cached
blocks for room: that, and perfect knowledge, make the replay an upper bound for any real router
on this fleet whenever the fleet can hold every group's prefix (and a strong heuristic bound
when it cannot). Like the simulators, a finished request leaves the full blocks of its output
cached (they take room and are evicted before its prompt's blocks); the oracle gives them keys no
prompt can match, which is exact for workloads that never resend a reply (shared-prefix, random)
and makes the bound a little low for multi-turn chat. `first_seen_share` is the looser bound of
an infinite cache: only the first request of each distinct block misses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from llmd.bench.workload import BenchRequest
from llmd.kvcache import BlockHasher, Tokenizer, render_chat
from llmd.sim.blocks import BlockPool

__all__ = ["OracleReplay", "OracleResult", "oracle_hit_share", "prompt_ids"]


@dataclass(frozen=True, slots=True)
class OracleResult:
    share: float
    """Oracle-routed replay: cached prompt tokens / prompt tokens."""
    first_seen_share: float
    """Infinite-cache bound: every block after its first appearance is a hit."""
    prompt_tokens: int
    pools: int
    blocks_per_pool: int
    block_size: int


def prompt_ids(req: BenchRequest, tokenizer: Tokenizer) -> list[int]:
    """Token ids exactly as the simulator computes them for this request."""
    if req.messages is not None:
        text = render_chat(req.messages, bos=tokenizer.bos_token, eos=tokenizer.eos_token)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(req.prompt or "")


class OracleReplay:
    """The fleet's pools, kept across `replay` calls (a ladder's stages run back to back)."""

    def __init__(self, tokenizer: Tokenizer, *, pools: int, blocks_per_pool: int,
                 block_size: int, model: str) -> None:
        self.tokenizer = tokenizer
        self.hasher = BlockHasher.for_model(model, block_size)
        self.fleet = [BlockPool(blocks_per_pool, block_size) for _ in range(pools)]
        self.block_size = block_size
        self.blocks_per_pool = blocks_per_pool
        self._seen: set[int] = set()
        # block keys are xxhash64 values (>= 0): negative ones never match a prompt
        self._reply_keys = itertools.count(-1, -1)

    def replay(self, requests: Sequence[BenchRequest]) -> OracleResult:
        fleet, bs = self.fleet, self.block_size
        total = cached = first_seen = 0
        for req in requests:
            ids = prompt_ids(req, self.tokenizer)
            keys = self.hasher.hashes(ids)
            matchable = (len(ids) - 1) // bs
            best = max(range(len(fleet)),
                       key=lambda i: (fleet[i].match(keys), -fleet[i].cached, -i))
            pool = fleet[best]
            hit = min(pool.match(keys), matchable)
            private = -(-(len(ids) + req.max_tokens) // bs) - len(keys)
            if pool.can_allocate(keys, private):
                # the output's full blocks past the prompt's, as the simulator keeps them
                # (`ignore_eos`: exactly max_tokens, the last one's KV never computed)
                reply_blocks = (len(ids) - len(keys) * bs + req.max_tokens - 1) // bs
                alloc = pool.allocate(keys, private)
                reply = [k for k in (next(self._reply_keys) for _ in range(reply_blocks))
                         if pool.commit(k)]  # each fills one of the private blocks
                pool.free(alloc, reply)
            total += len(ids)
            cached += hit * bs
            known = 0
            for k in keys:
                if k not in self._seen:
                    break
                known += 1
            first_seen += min(known, matchable) * bs
            self._seen.update(keys)
        return OracleResult(cached / total if total else 0.0,
                            first_seen / total if total else 0.0, total, len(fleet),
                            self.blocks_per_pool, bs)


def oracle_hit_share(requests: Sequence[BenchRequest], tokenizer: Tokenizer, *, pools: int,
                     blocks_per_pool: int, block_size: int, model: str) -> OracleResult:
    """One replay of `requests` from empty caches (see the module docstring)."""
    return OracleReplay(tokenizer, pools=pools, blocks_per_pool=blocks_per_pool,
                        block_size=block_size, model=model).replay(requests)
