"""SGLang's KV events (0.5.23): `KVEventsConfig`, `ZmqEventPublisher`'s socket rule, the page
hash chain (`hash_page`, `hash_str_to_int64`) and the events its radix cache records."""

from __future__ import annotations

import hashlib
import struct
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

__all__ = ["SGLangBlockHasher", "SGLangKvEvents", "SGLangKvEventsConfig"]

_SALT_PREFIX = b"sglang-cache-salt-v1\0"
_NAMESPACE_PREFIX = b"sglang-kv-event-namespace-v1"
_U32_MAX = 0xFFFFFFFF


class SGLangKvEventsConfig(BaseModel):
    """SGLang's `KVEventsConfig` (srt/disaggregation/kv_events.py): no `enable_kv_cache_events`
    key, publishing is off unless `publisher` is "zmq". llmd refuses unknown keys (SGLang's
    pydantic model would drop them, so a misspelt key silently changes nothing), negative sizes
    and an unbounded queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publisher: Literal["null", "zmq"] = "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    buffer_steps: int = Field(10_000, ge=0)
    hwm: int = Field(100_000, ge=0)
    max_queue_size: int = Field(100_000, ge=1)
    topic: str = ""
    format: Literal["default", "dynamo"] = "default"
    """`dynamo` namespaces the published hashes of salted (and LoRA) chains."""
    bind: bool | None = None
    """An explicit bind (true) or connect (false) overrides the endpoint rule."""


def _namespace_seed(extra_key: str | None, cache_salt: str | None) -> bytes:
    """`kv_event_namespace_seed`: each part is 0x00 when absent, else 0x01, its UTF-8 length
    (8 bytes little-endian) and the UTF-8 bytes."""
    d = hashlib.sha256(_NAMESPACE_PREFIX)
    for part in (extra_key, cache_salt):
        if part is None:
            d.update(b"\x00")
        else:
            raw = part.encode()
            d.update(b"\x01" + len(raw).to_bytes(8, "little") + raw)
    return d.digest()


class SGLangBlockHasher:
    """`hash_page`: SHA-256(prior digest || token ids as uint32 little-endian), the first page
    without a prior unless the chain is salted (prior = SHA-256("sglang-cache-salt-v1\\0" +
    salt)). Published as the first 8 digest bytes, a signed big-endian int64
    (`hash_str_to_int64`); the `dynamo` format then namespaces a salted chain's values
    (`namespaced_block_hash`)."""

    __slots__ = ("_dynamo",)

    def __init__(self, hash_format: str = "default") -> None:
        self._dynamo = hash_format == "dynamo"

    def digests(self, tokens: Sequence[int], block_size: int, parent: bytes | None = None,
                salt: str | None = None) -> list[bytes]:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        if parent is None and salt:
            parent = hashlib.sha256(_SALT_PREFIX + salt.encode()).digest()
        prior = parent or b""
        pack = struct.Struct(f"<{block_size}I").pack
        out: list[bytes] = []
        for start in range(0, len(tokens) // block_size * block_size, block_size):
            page = tokens[start:start + block_size]
            if max(page) > _U32_MAX:
                # SGLang switches such pages to a tagged uint64 layout, which llmd does not
                # reproduce: no tokenizer has ids this large.
                raise ValueError(f"token id {max(page)} does not fit in uint32")
            prior = hashlib.sha256(prior + pack(*page)).digest()
            out.append(prior)
        return out

    def event_hash(self, digest: bytes, salt: str | None = None) -> int:
        value = int.from_bytes(digest[:8], "big", signed=True)
        if self._dynamo and salt:
            value = self.namespaced(value, extra_key=None, cache_salt=salt)
        return value

    @staticmethod
    def namespaced(value: int, *, extra_key: str | None, cache_salt: str | None) -> int:
        """`namespaced_block_hash(value, kv_event_namespace_seed(extra_key, cache_salt))`: how
        SGLang publishes a LoRA chain (its `extra_key`, when a LoRA name is registered for
        it) and, in the `dynamo` format, a salted one; unchanged when both are None."""
        if extra_key is None and cache_salt is None:
            return value
        seed = _namespace_seed(extra_key, cache_salt)
        mixed = hashlib.sha256(seed + value.to_bytes(8, "big", signed=True)).digest()
        return int.from_bytes(mixed[:8], "big", signed=True)


class SGLangKvEvents:
    """SGLang's KV-event dialect (`SGLangAdapter.kv_events`)."""

    hash_form: ClassVar[HashForm] = "high64-signed"
    # SGLang before the tagged maps (msgspec array_like): lora_id ended the oldest BlockStored;
    # later releases added medium and a `metadata` map carrying cache_salt.
    stored_fields: ClassVar[tuple[str, ...]] = (
        "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
        "metadata")
    removed_fields: ClassVar[tuple[str, ...]] = ("block_hashes", "medium")
    default_endpoint: ClassVar[str] = "tcp://*:5557"
    medium: ClassVar[str] = "GPU"
    clears_on_start: ClassVar[bool] = True  # the radix cache's constructor resets it
    removed_per_block: ClassVar[bool] = False  # one BlockRemoved per evicted radix node

    def parse_config(self, raw: str | Mapping[str, Any]) -> KvEventsSettings:
        cfg = load_kv_events_config(raw, SGLangKvEventsConfig)
        return KvEventsSettings(
            enabled=cfg.publisher == "zmq", endpoint=cfg.endpoint,
            replay_endpoint=cfg.replay_endpoint, buffer_steps=cfg.buffer_steps, hwm=cfg.hwm,
            max_queue_size=cfg.max_queue_size, topic=cfg.topic, bind=cfg.bind,
            hash_format=cfg.format)

    def serve_config(self, endpoint: str, topic: str) -> dict[str, Any]:
        # No `enable_kv_cache_events`: not a key of SGLang's model.
        return {"publisher": "zmq", "endpoint": endpoint, "topic": topic}

    def binds(self, settings: KvEventsSettings) -> bool:
        if settings.bind is not None:
            return settings.bind
        ep = settings.endpoint
        return ("*" in ep or "::" in ep or "0.0.0.0" in ep
                or ep.startswith(("ipc://", "inproc://")))

    def subscribe(self, settings: KvEventsSettings, host: str) -> SubscribeSpec:
        return subscribe_spec(settings.endpoint, self.binds(settings), host)

    def publisher_endpoint(self, settings: KvEventsSettings, *, dp_rank: int = 0,
                           tp_rank: int = 0, pp_rank: int = 0, cp_rank: int = 0,
                           dp_attention: bool = False) -> str | None:
        # is_kv_publisher_rank: one publisher per independent KV cache (pp, attention-TP and
        # attention-CP rank 0); select_kv_publisher_dp_rank: the port is raised by the
        # attention-DP rank under DP attention, else by the DP rank.
        if not settings.enabled or pp_rank != 0 or tp_rank != 0 or cp_rank != 0:
            return None
        return offset_endpoint_port(settings.endpoint, dp_rank)

    def hasher(self, settings: KvEventsSettings, hash_seed: str | None = None
               ) -> SGLangBlockHasher:
        return SGLangBlockHasher(settings.hash_format)  # PYTHONHASHSEED plays no part

    def stored_event(self, hashes: Sequence[int], parent: int | None, token_ids: Sequence[int],
                     block_size: int, *, salt: str | None = None, first_block: bool = False
                     ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "BlockStored", "block_hashes": list(hashes), "parent_block_hash": parent,
            "token_ids": list(token_ids), "block_size": block_size, "lora_id": None,
            "medium": self.medium}
        if salt:
            event["cache_salt"] = salt  # every page of a salted radix key carries it
        return event

    def removed_event(self, hashes: Sequence[int]) -> dict[str, Any]:
        return {"type": "BlockRemoved", "block_hashes": list(hashes), "medium": self.medium}

    def cleared_event(self) -> dict[str, Any]:
        return {"type": "AllBlocksCleared"}

    def batch(self, ts: float, events: Sequence[dict[str, Any]], dp_rank: int = 0
              ) -> list[Any]:
        return [ts, list(events), dp_rank]
