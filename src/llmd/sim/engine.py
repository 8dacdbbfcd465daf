"""The simulated engine: admission, continuous batching, KV blocks and the latency model.

A request becomes a `Sequence` (one per request; its `n` choices decode in lockstep). It waits
in a bounded FIFO queue until `max_num_seqs` has room for its choices and the block pool can
hold its prompt and outputs (the simulator knows each choice's length in advance, so it
reserves exactly what the sequence will use and never preempts). Then `prefill()` pays for the
uncached prompt tokens and every `step()` emits one token per unfinished choice. Each block a
choice's output fills enters the prefix cache as soon as its KV is computed (keys chained on
from the prompt's, so a later prompt that repeats prompt + reply hits them) and stays there
when the sequence ends, as vLLM and SGLang keep every full block whose KV they computed. With
`kv_events` (a `KvEventRecorder`), every block the cache takes in or evicts is reported with
the engine's own hash, computed alongside the cache's key, one block at a time.

The phases are separate calls so the P/D roles reuse them: a prefill leg runs `prefill()` and
pins its prompt blocks (`Engine.pin`) past the sequence; a decode leg whose KV arrives from
elsewhere calls `receive_kv()` instead of `prefill()`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from collections.abc import Sequence as Sequence_
from contextlib import asynccontextmanager
from dataclasses import dataclass

from llmd.errors import BadRequestError, RequestShedError
from llmd.kvcache import BlockHasher, Tokenizer, block_hashes, chain_root
from llmd.sim._logprobs import LogprobModel
from llmd.sim.blocks import Allocation, BlockPool
from llmd.sim.config import SimConfig
from llmd.sim.kv_events import KvEventRecorder
from llmd.sim.metrics import SimMetrics
from llmd.sim.text import Choice, Vocabulary

__all__ = ["Engine", "GenRequest", "Sequence", "TokenEvent"]


@dataclass(frozen=True, slots=True)
class GenRequest:
    """What to generate, in tokens. `max_tokens` None means "up to max_model_len"."""

    prompt_ids: list[int]
    max_tokens: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    cache_salt: str | None = None
    """vLLM's `cache_salt`: the prompt's blocks are shared only with prompts of the same salt."""


@dataclass(frozen=True, slots=True)
class TokenEvent:
    index: int
    token_id: int
    text: str
    finish_reason: str | None


class Engine:
    """One simulated model server's scheduler and cache. All methods run on one event loop."""

    def __init__(self, cfg: SimConfig, tokenizer: Tokenizer, metrics: SimMetrics,
                 clock: Callable[[], float] = time.monotonic,
                 kv_events: KvEventRecorder | None = None) -> None:
        self.cfg = cfg
        self.kv_events = kv_events
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.clock = clock
        self.pool = BlockPool(cfg.kv_cache_blocks, cfg.block_size)
        self.hasher = BlockHasher.for_model(cfg.served_name, cfg.block_size)
        self.vocab = Vocabulary(tokenizer)
        self.logprobs = LogprobModel(self.vocab, tokenizer)
        self._waiting: deque[Sequence] = deque()
        self._running = 0
        self.idle = asyncio.Event()
        """Set while nothing runs or waits (graceful shutdown waits on it)."""
        self.idle.set()
        metrics.bind(self)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return self._running

    def kv_usage(self) -> float:
        return self.pool.usage()

    def check(self, req: GenRequest) -> int:
        """Validate lengths as vLLM does; returns the effective max_tokens. BadRequestError."""
        cfg, prompt = self.cfg, len(req.prompt_ids)
        if prompt == 0:
            raise BadRequestError("the prompt is empty", param="prompt")
        if req.n > cfg.max_num_seqs:
            raise BadRequestError(f"n={req.n} exceeds max_num_seqs={cfg.max_num_seqs}", param="n")
        max_tokens = req.max_tokens
        if max_tokens is None:
            max_tokens = cfg.max_model_len - prompt
        if prompt + max(max_tokens, 1) > cfg.max_model_len:
            raise BadRequestError(
                f"This model's maximum context length is {cfg.max_model_len} tokens. However, "
                f"you requested {prompt + max_tokens} tokens ({prompt} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the messages or "
                "completion.", param="messages")
        return max_tokens

    def prepare(self, req: GenRequest) -> Sequence:
        """Validate `req` (BadRequestError: too long, more choices than `max_num_seqs`, more
        blocks than the cache has) and build its sequence, not admitted yet."""
        return Sequence(self, req, self.check(req))

    @asynccontextmanager
    async def sequence(self, req: GenRequest | Sequence) -> AsyncIterator[Sequence]:
        """Admit `req` (waiting in the queue if needed) and release its blocks when done.

        Raises RequestShedError (429) when the waiting queue is full and BadRequestError when
        the request could never fit in the KV cache.
        """
        seq = req if isinstance(req, Sequence) else self.prepare(req)
        try:
            await self._admit(seq)
            yield seq
        finally:
            self._release(seq)

    async def _admit(self, seq: Sequence) -> None:
        if not self._waiting and self._fits(seq):
            self._start(seq)
            return
        if len(self._waiting) >= self.cfg.max_waiting:
            raise RequestShedError(
                f"the waiting queue is full ({self.cfg.max_waiting} requests); retry later")
        seq.admitted = asyncio.get_running_loop().create_future()
        self._waiting.append(seq)
        await seq.admitted

    def _fits(self, seq: Sequence) -> bool:
        return (self._running + seq.n <= self.cfg.max_num_seqs
                and self.pool.can_allocate(seq.keys, seq.private_blocks))

    def _start(self, seq: Sequence) -> None:
        seq.alloc = self.pool.allocate(seq.keys, seq.private_blocks)
        if self.kv_events is not None:
            seq.admitted_digest(self.kv_events.allocated(seq.prompt_ids, seq.keys, seq.alloc,
                                                         seq.cache_salt))
        self._running += seq.n
        self.idle.clear()
        seq.started_s = self.clock()
        self.metrics.queue_time.observe(seq.started_s - seq.arrival_s)

    def _release(self, seq: Sequence) -> None:
        if seq.alloc is not None:
            self.pool.free(seq.alloc, seq.committed)
            seq.alloc = None
            self._running -= seq.n
        elif seq.admitted is not None:
            # Left while waiting (client gone, cancelled): its slot in the queue goes too.
            seq.admitted.cancel()
            if seq in self._waiting:
                self._waiting.remove(seq)
        self._pump()
        if self._running == 0 and not self._waiting:
            self.idle.set()

    def _pump(self) -> None:
        """Start waiting sequences in arrival order while the head fits (no overtaking)."""
        waiting = self._waiting
        while waiting:
            seq = waiting[0]
            if seq.admitted is not None and seq.admitted.done():
                waiting.popleft()  # cancelled while queued; its task releases nothing
                continue
            if not self._fits(seq):
                break
            waiting.popleft()
            self._start(seq)
            if seq.admitted is not None:
                seq.admitted.set_result(None)

    def pin(self, keys: Sequence_[int]) -> Allocation:
        """Keep the resident blocks `keys` (a running sequence's prompt) past that sequence,
        as a prefill server holds KV for its decode peer. Undo with `unpin`. Resident blocks
        are neither stored nor evicted: nothing to report as a KV event."""
        return self.pool.allocate(keys, 0)

    def unpin(self, alloc: Allocation) -> None:
        self.pool.free(alloc)
        self._pump()

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def itl_s(self) -> float:
        cfg = self.cfg
        return (cfg.itl_ms + cfg.itl_per_seq_ms * self._running) * cfg.time_scale / 1000


class Sequence:
    """One admitted request: prefill once, then `step()` until `finished`."""

    def __init__(self, engine: Engine, req: GenRequest, max_tokens: int) -> None:
        cfg = engine.cfg
        self.engine = engine
        self.n = req.n
        self.prompt_ids = req.prompt_ids
        self.prompt_tokens = len(req.prompt_ids)
        self.max_tokens = max_tokens
        self.arrival_s = engine.clock()
        self.started_s = self.arrival_s
        self.first_token_s: float | None = None
        self._last_token_s = self.arrival_s
        self.admitted: asyncio.Future[None] | None = None
        self.alloc: Allocation | None = None
        self.cached_tokens = 0
        self.choices = [self._choice(engine, req, i) for i in range(req.n)]
        self._live = list(self.choices)  # choices not finished yet
        block = cfg.block_size
        self.cache_salt = req.cache_salt
        hasher = engine.hasher
        if req.cache_salt:
            root = chain_root(engine.cfg.served_name, cache_salt=req.cache_salt)
            hasher = BlockHasher(block, root)
        self.keys = hasher.hashes(req.prompt_ids)
        # vLLM always recomputes the prompt's last token, so a fully cached prompt reuses one
        # block less than it stored.
        self._matchable = (self.prompt_tokens - 1) // block
        full = len(self.keys)
        self.private_blocks = sum(
            -(-(self.prompt_tokens + c.length) // block) - full for c in self.choices)
        self.committed: list[int] = []
        """Keys of the output blocks this sequence put in the cache (released with it)."""
        tail = self.keys[-1] if self.keys else hasher.root
        self._chains = [_Chain(tail) for _ in self.choices]
        if full + self.private_blocks > cfg.kv_cache_blocks:
            raise BadRequestError(
                f"the request needs {full + self.private_blocks} KV blocks but the cache has "
                f"{cfg.kv_cache_blocks}; lower max_tokens or n", param="max_tokens")

    def _choice(self, engine: Engine, req: GenRequest, index: int) -> Choice:
        cfg = engine.cfg
        seed = Choice.seed_for(req.prompt_ids, req.seed, cfg.seed, index)
        if req.ignore_eos:
            length, reason = self.max_tokens, "length"
        else:
            eos = (seed ^ 0x9E3779B97F4A7C15) % (cfg.eos_max_tokens - cfg.eos_min_tokens + 1)
            eos += cfg.eos_min_tokens
            if eos >= self.max_tokens:
                length, reason = self.max_tokens, "length"
            else:
                length, reason = eos, "stop"
        return Choice(index, engine.vocab, seed, max(length, 1), reason, req.stop)

    @property
    def finished(self) -> bool:
        return not self._live

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)

    async def prefill(self) -> None:
        """Pay for the prompt tokens not found in the cache (the first token comes with it)."""
        engine, cfg = self.engine, self.engine.cfg
        assert self.alloc is not None, "prefill before admission"
        self.cached_tokens = min(self.alloc.cached_blocks, self._matchable) * cfg.block_size
        uncached = self.prompt_tokens - self.cached_tokens
        engine.metrics.on_prefill(self.prompt_tokens, self.cached_tokens)
        engine.metrics.on_computed(uncached)
        ms = cfg.prefill_overhead_ms + cfg.prefill_per_token_ms * uncached
        started = engine.clock()
        await engine._pause(ms * cfg.time_scale / 1000)
        if engine.metrics.prefill_time is not None:  # the engine's own prefill histogram
            engine.metrics.prefill_time.observe(engine.clock() - started)

    def local_hit_tokens(self) -> int:
        """Prompt tokens this server has cached already (what a KV transfer can skip)."""
        assert self.alloc is not None, "asked before admission"
        return min(self.alloc.cached_blocks, self._matchable) * self.engine.cfg.block_size

    async def receive_kv(self, *, transferred_as_cached: bool) -> int:
        """Instead of `prefill()`: the prompt's uncached KV arrives from a prefill server.

        Pays the transfer of the tokens not cached here; returns how many were transferred.
        `usage.cached_tokens` then reports local hits, plus the transferred tokens when the
        engine counts those as cached (vLLM).
        """
        engine, cfg = self.engine, self.engine.cfg
        local = self.local_hit_tokens()
        moved = self.prompt_tokens - local
        self.cached_tokens = local + moved if transferred_as_cached else local
        engine.metrics.on_prefill(self.prompt_tokens, local)
        engine.metrics.on_transfer(received=moved)
        ms = cfg.kv_transfer_overhead_ms + cfg.kv_transfer_per_token_ms * moved
        await engine._pause(ms * cfg.time_scale / 1000)
        return moved

    async def step(self) -> list[TokenEvent]:
        """One decode step: a token for every unfinished choice. The first step is the prefill's
        own token (no ITL wait)."""
        engine = self.engine
        metrics = engine.metrics
        if self.first_token_s is not None:
            await engine._pause(engine.itl_s())
        events = []
        stepped = self._live
        for c in stepped:
            tid, text = c.step()
            events.append(TokenEvent(c.index, tid, text, c.finish_reason))
        for c in stepped:
            self._fill_blocks(c, self._chains[c.index])
        if any(ev.finish_reason is not None for ev in events):
            self._live = [c for c in self._live if c.finish_reason is None]
        now = engine.clock()
        if self.first_token_s is None:
            self.first_token_s = now
            metrics.ttft.observe(now - self.arrival_s)
        else:
            gap = now - self._last_token_s
            for _ in events:
                metrics.itl.observe(gap)
        self._last_token_s = now
        metrics.on_tokens(len(events))
        if self.finished:
            metrics.e2e.observe(now - self.arrival_s)
            metrics.on_success()
        return events

    def admitted_digest(self, digest: bytes | None) -> None:
        """The engine hash of the prompt's last full block, where every output chain starts."""
        for chain in self._chains:
            chain.digest = digest

    def _fill_blocks(self, c: Choice, chain: _Chain) -> None:
        """Commit the block `c` filled this step, if any: only tokens whose KV was computed
        count (the prompt and every generated token but the last, which is never fed back), so
        a prefill leg's one token fills none."""
        engine = self.engine
        block = engine.cfg.block_size
        full = len(self.keys)
        computed = self.prompt_tokens + len(c.ids) - 1
        end = (full + chain.done + 1) * block
        while end <= computed:
            tokens = self._block_tokens(c, end - block, end)
            [key] = block_hashes(tokens, block, chain.key)
            stored = engine.pool.commit(key)
            if stored:
                self.committed.append(key)
            if engine.kv_events is not None:
                chain.digest = engine.kv_events.output_block(
                    chain.digest, key, tokens, full + chain.done, stored, self.cache_salt)
            chain.key = key
            chain.done += 1
            end += block

    def _block_tokens(self, c: Choice, start: int, end: int) -> list[int]:
        prompt = self.prompt_tokens
        head = self.prompt_ids[start:prompt] if start < prompt else []
        return head + c.ids[max(0, start - prompt):end - prompt]


class _Chain:
    """One choice's output blocks so far: the last block's cache key and engine digest."""

    __slots__ = ("digest", "done", "key")

    def __init__(self, key: int) -> None:
        self.key = key
        self.digest: bytes | None = None
        self.done = 0
