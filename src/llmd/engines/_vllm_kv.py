"""vLLM's KV events (0.32): `KVEventsConfig`, `ZmqEventPublisher`'s socket rule, the `sha256`
block hash (`prefix_caching_hash_algo`'s default) and the events `BlockPool` publishes."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmd.engines.kv_events import (
    HashForm,
    KvEventsSettings,
    SubscribeSpec,
    load_kv_events_config,
    offset_endpoint_port,
    subscribe_spec,
)

__all__ = ["VllmKvEvents", "VllmKvEventsConfig", "vllm_none_hash"]

_MASK64 = (1 << 64) - 1
_DEFAULT_NONE_HASH_SEED = "vllm-none-hash"
# vllm/utils/hashing.py pickles with HIGHEST_PROTOCOL, which is 5 on every CPython llmd runs on.
_PICKLE_PROTOCOL = 5


class VllmKvEventsConfig(BaseModel):
    """vLLM's `KVEventsConfig` (vllm/config/kv_events.py): the same keys and defaults; unknown
    keys are errors, as in vLLM. Unlike vLLM, negative sizes are refused up front (vLLM would fail
    later building its queue or buffer) and the queue is always bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_kv_cache_events: bool = False
    publisher: Literal["null", "zmq"] | None = None
    """None resolves to "zmq" when events are enabled, else "null" (vLLM's `__post_init__`)."""
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = Field(10_000, ge=0)
    hwm: int = Field(100_000, ge=0)
    max_queue_size: int = Field(100_000, ge=1)
    topic: str = ""


def vllm_none_hash(seed: str | None = None) -> bytes:
    """vLLM's `NONE_HASH` for `sha256`: sha256 of the pickled `PYTHONHASHSEED` when set, else of
    the fixed "vllm-none-hash" (`resolve_none_hash_seed`), so unseeded processes agree."""
    return _sha256_pickle(seed if seed is not None else _DEFAULT_NONE_HASH_SEED)


def _sha256_pickle(obj: object) -> bytes:
    return hashlib.sha256(pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)).digest()


class VllmBlockHasher:
    """`hash_block_tokens(sha256, parent, tokens, extra)`: sha256(pickle((parent digest or
    NONE_HASH, tuple(tokens), extra_keys))), chained on full digests; `cache_salt` is block 0's
    extra key `(("cache_salt", salt),)`. Published as the digest's low 64 bits
    (`maybe_convert_block_hash`)."""

    __slots__ = ("_none",)

    def __init__(self, hash_seed: str | None = None) -> None:
        self._none = vllm_none_hash(hash_seed)

    def digests(self, tokens: Sequence[int], block_size: int, parent: bytes | None = None,
                salt: str | None = None) -> list[bytes]:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        out: list[bytes] = []
        first = parent is None
        prev = self._none if parent is None else parent
        dumps, sha = pickle.dumps, hashlib.sha256
        for start in range(0, len(tokens) // block_size * block_size, block_size):
            extra = (("cache_salt", salt),) if first and salt else None
            block = tuple(tokens[start:start + block_size])
            prev = sha(dumps((prev, block, extra), protocol=_PICKLE_PROTOCOL)).digest()
            out.append(prev)
            first = False
        return out

    def event_hash(self, digest: bytes, salt: str | None = None) -> int:
        return int.from_bytes(digest, "big") & _MASK64


class VllmKvEvents:
    """vLLM's KV-event dialect (`VllmAdapter.kv_events`)."""

    hash_form: ClassVar[HashForm] = "low64"
    # The array-encoded events vLLM sent before #42892 (msgspec array_like, fields in order).
    stored_fields: ClassVar[tuple[str, ...]] = (
        "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
        "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
        "kv_cache_spec_sliding_window", "locality", "ownership", "session_id")
    removed_fields: ClassVar[tuple[str, ...]] = (
        "block_hashes", "medium", "group_idx", "locality", "ownership")
    default_endpoint: ClassVar[str] = "tcp://*:5557"
    medium: ClassVar[str] = "GPU"
    clears_on_start: ClassVar[bool] = False  # only `reset_prefix_cache` clears, at the next step
    removed_per_block: ClassVar[bool] = True  # BlockPool emits one BlockRemoved per hash

    def parse_config(self, raw: str | Mapping[str, Any]) -> KvEventsSettings:
        cfg = load_kv_events_config(raw, VllmKvEventsConfig)
        publisher = cfg.publisher or ("zmq" if cfg.enable_kv_cache_events else "null")
        return KvEventsSettings(
            enabled=cfg.enable_kv_cache_events and publisher == "zmq", endpoint=cfg.endpoint,
            replay_endpoint=cfg.replay_endpoint, buffer_steps=cfg.buffer_steps, hwm=cfg.hwm,
            max_queue_size=cfg.max_queue_size, topic=cfg.topic)

    def serve_config(self, endpoint: str, topic: str) -> dict[str, Any]:
        return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": endpoint,
                "topic": topic}

    def binds(self, settings: KvEventsSettings) -> bool:
        # ZmqEventPublisher._is_bind_endpoint: a substring test, so any IPv6 literal binds too.
        ep = settings.endpoint
        return "*" in ep or "::" in ep or ep.startswith(("ipc://", "inproc://"))

    def subscribe(self, settings: KvEventsSettings, host: str) -> SubscribeSpec:
        return subscribe_spec(settings.endpoint, self.binds(settings), host)

    def publisher_endpoint(self, settings: KvEventsSettings, *, dp_rank: int = 0,
                           tp_rank: int = 0, pp_rank: int = 0, cp_rank: int = 0,
                           dp_attention: bool = False) -> str | None:
        # The scheduler (one per data-parallel engine core) publishes; workers never do.
        if not settings.enabled:
            return None
        return offset_endpoint_port(settings.endpoint, dp_rank)

    def hasher(self, settings: KvEventsSettings, hash_seed: str | None = None
               ) -> VllmBlockHasher:
        return VllmBlockHasher(hash_seed)

    def stored_event(self, hashes: Sequence[int], parent: int | None, token_ids: Sequence[int],
                     block_size: int, *, salt: str | None = None, first_block: bool = False
                     ) -> dict[str, Any]:
        # Key order and the always-present nulls as vLLM 0.32 sends them; extra_keys is per
        # block and untagged (`to_event_extra_keys`), the salt on block 0 only.
        extra: list[list[str] | None] = [None] * len(hashes)
        if salt and first_block and extra:
            extra[0] = [salt]
        return {"type": "BlockStored", "block_hashes": list(hashes),
                "parent_block_hash": parent, "token_ids": list(token_ids),
                "block_size": block_size, "lora_id": None, "medium": self.medium,
                "lora_name": None, "extra_keys": extra, "group_idx": 0,
                "kv_cache_spec_kind": "full_attention"}

    def removed_event(self, hashes: Sequence[int]) -> dict[str, Any]:
        return {"type": "BlockRemoved", "block_hashes": list(hashes), "medium": self.medium,
                "group_idx": 0}

    def cleared_event(self) -> dict[str, Any]:
        return {"type": "AllBlocksCleared"}

    def batch(self, ts: float, events: Sequence[dict[str, Any]], dp_rank: int = 0
              ) -> list[Any]:
        return [ts, list(events), dp_rank]
