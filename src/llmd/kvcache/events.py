"""KV-cache events from vLLM and SGLang, decoded into engine-neutral types.

The wire, both engines: one ZMQ message per batch of 3 frames, `[topic (UTF-8), seq (8 bytes
big-endian unsigned, +1 per batch), payload]`; the payload is msgpack `[ts, events, dp_rank]`
or, from older releases, `[ts, events]` (a map `{ts, events, data_parallel_rank |
attn_dp_rank}` is read too). An event is a map tagged by `type` (vLLM >= 0.2x, SGLang 0.5) or
a positional array `[type, field, ...]` in the dialect's field order (older releases: trailing
fields may be missing). Unknown keys and extra trailing fields are ignored.

Block hashes are normalised into one integer key space per engine (`normalize_hash`): the
space the engine's own hash function produces, so a hash computed from token ids equals the one
decoded from the wire. vLLM sends the low 64 bits of its digest as an unsigned integer (or the
digest's bytes), SGLang the first 8 bytes as a signed int64.

Nothing here raises anything but `EventDecodeError`: a malformed message raises it whole; a
malformed event inside a good batch is left out of `EventBatch.events` and listed in
`EventBatch.errors`, so one bad event costs only itself. A consumer counts and skips both.

The dialect comes from the engine adapter (`llmd.engines.get_adapter(name).kv_events`), whose
`subscribe()` also says whether the subscriber binds or connects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import msgpack  # type: ignore[import-untyped]  # no stubs ship with msgpack

from llmd.errors import LlmdError

__all__ = [
    "END_SEQ",
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "EventBatch",
    "EventDecodeError",
    "EventDialect",
    "HashForm",
    "KvEvent",
    "decode_batch",
    "decode_event",
    "decode_message",
    "decode_replay",
    "normalize_hash",
    "replay_request",
]

HashForm = Literal["low64", "high64-signed"]
"""`low64`: the last 8 bytes of the digest, unsigned (vLLM); `high64-signed`: the first 8
bytes, signed int64 (SGLang)."""

END_SEQ = b"\xff" * 8
"""The sequence frame that ends a replay answer (-1 as a signed 8-byte integer)."""

_MASK64 = (1 << 64) - 1
_MAX_SEQ = (1 << 63) - 1


class EventDialect(Protocol):
    """What decoding needs from an engine (`adapter.kv_events` is one)."""

    hash_form: ClassVar[HashForm]
    stored_fields: ClassVar[tuple[str, ...]]
    removed_fields: ClassVar[tuple[str, ...]]


class EventDecodeError(LlmdError, ValueError):
    """A KV-event message or event that cannot be decoded; the text says what and where."""


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Full blocks entered the engine's cache, in chain order.

    `engine_hashes` are normalised (`normalize_hash`); `parent` is the hash of the block before
    the first one (None: the first is block 0 of its sequence, or the engine re-announces a
    prefix). `token_ids` are the tokens of the blocks (`block_size` each). `extra_keys` has one
    entry per block (vLLM: untagged LoRA name, multimodal pairs, cache salt), `cache_salt` the
    salt SGLang names; `lora_id`/`lora_name` the adapter. The rest is engine metadata, None
    when not sent.
    """

    engine_hashes: tuple[int, ...]
    parent: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: tuple[tuple[Any, ...] | None, ...] | None = None
    cache_salt: str | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Blocks left the engine's cache. An engine may remove a hash it stored twice twice."""

    engine_hashes: tuple[int, ...]
    medium: str | None = None
    group_idx: int | None = None


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """Every block of the engine's cache is gone (no `BlockRemoved` follows)."""


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One published batch: `seq` from the message (-1 when decoded from a bare payload), `ts`
    the engine's wall-clock time, `dp_rank` the data-parallel rank (None: not sent). `errors`
    are the events that could not be decoded (left out of `events`)."""

    ts: float
    events: tuple[KvEvent, ...]
    dp_rank: int | None
    seq: int
    topic: str = ""
    errors: tuple[EventDecodeError, ...] = ()


def normalize_hash(raw: object, form: HashForm) -> int:
    """One engine's block hash as an integer in that engine's key space.

    `low64`: an integer masked to its unsigned low 64 bits (a signed int64 is cast), bytes read
    as their last 8 bytes big-endian. `high64-signed`: an integer cast to signed int64, bytes
    read as their first 8 bytes big-endian signed. Integers outside [-2**63, 2**64), booleans,
    empty bytes and other types raise `EventDecodeError`.
    """
    if isinstance(raw, bool) or not isinstance(raw, int | bytes):
        raise EventDecodeError(f"a block hash must be an integer or bytes, got "
                               f"{type(raw).__name__}")
    if isinstance(raw, bytes):
        if not raw:
            raise EventDecodeError("a block hash is empty bytes")
        if form == "low64":
            return int.from_bytes(raw[-8:], "big")
        return int.from_bytes(raw[:8], "big", signed=True)
    if not -(1 << 63) <= raw <= _MASK64:
        raise EventDecodeError(f"block hash {raw} does not fit in 64 bits")
    if form == "low64":
        return raw & _MASK64
    return raw - (1 << 64) if raw >= 1 << 63 else raw


def decode_message(frames: Sequence[bytes], dialect: EventDialect) -> EventBatch:
    """Decode one PUB message `[topic, seq, payload]` (what a SUB socket's `recv_multipart`
    returns). Raises `EventDecodeError` for a wrong frame count, a topic that is not UTF-8, a
    sequence frame that is not 8 bytes, or a payload `decode_batch` refuses."""
    if len(frames) != 3:
        raise EventDecodeError(f"a KV-event message has 3 frames, got {len(frames)}")
    topic, seq, payload = (bytes(f) for f in frames)
    return decode_batch(payload, dialect, seq=_seq(seq), topic=_topic(topic))


def decode_replay(frames: Sequence[bytes], dialect: EventDialect) -> EventBatch | None:
    """Decode one answer to `replay_request` as a DEALER receives it: `[b"", topic, seq,
    payload]`, or `[b"", seq, payload]` from SGLang releases without the topic. Returns None
    for the end marker (`END_SEQ`) after the last buffered batch."""
    parts = [bytes(f) for f in frames]
    if len(parts) not in (3, 4) or parts[0] != b"":
        raise EventDecodeError(f"a replay answer is [b'', (topic,) seq, payload], got "
                               f"{len(parts)} frames")
    topic, seq, payload = parts[1:] if len(parts) == 4 else [b"", *parts[1:]]
    if seq == END_SEQ:
        return None
    return decode_batch(payload, dialect, seq=_seq(seq), topic=_topic(topic))


def replay_request(start_seq: int) -> list[bytes]:
    """What a DEALER sends to an engine's replay ROUTER to get every buffered batch from
    `start_seq` on (then the end marker)."""
    if not 0 <= start_seq <= _MAX_SEQ:
        raise ValueError(f"start_seq must be in [0, 2**63), got {start_seq}")
    return [b"", start_seq.to_bytes(8, "big")]


def decode_batch(payload: bytes, dialect: EventDialect, *, seq: int = -1, topic: str = ""
                 ) -> EventBatch:
    """Decode one msgpack payload; a malformed event goes to `errors`, a malformed batch raises
    `EventDecodeError`."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ...)
        raise EventDecodeError(f"payload is not msgpack: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, Mapping):
        ts, events = obj.get("ts"), obj.get("events")
        rank = obj.get("data_parallel_rank", obj.get("attn_dp_rank"))
    elif isinstance(obj, list) and len(obj) >= 2:
        ts, events = obj[0], obj[1]
        rank = obj[2] if len(obj) > 2 else None
    else:
        raise EventDecodeError("a batch is [ts, events] or [ts, events, dp_rank], got "
                               f"{_what(obj)}")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise EventDecodeError(f"batch ts must be a number, got {_what(ts)}")
    if not isinstance(events, list):
        raise EventDecodeError(f"batch events must be an array, got {_what(events)}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise EventDecodeError(f"batch dp_rank must be an integer, got {_what(rank)}")
    good: list[KvEvent] = []
    bad: list[EventDecodeError] = []
    for i, raw in enumerate(events):
        try:
            good.append(decode_event(raw, dialect))
        except EventDecodeError as exc:
            bad.append(EventDecodeError(f"event {i}: {exc}"))
    return EventBatch(float(ts), tuple(good), rank, seq, topic, tuple(bad))


def decode_event(raw: object, dialect: EventDialect) -> KvEvent:
    """One event, a `type`-tagged map or a positional array; `EventDecodeError` otherwise."""
    kind: object
    if isinstance(raw, list):
        if not raw or not isinstance(raw[0], str):
            raise EventDecodeError("a positional event starts with its type name")
        kind, values = raw[0], raw[1:]
        names = {"BlockStored": dialect.stored_fields,
                 "BlockRemoved": dialect.removed_fields}.get(kind, ())
        fields: Mapping[Any, Any] = dict(zip(names, values, strict=False))
    elif isinstance(raw, Mapping):
        kind, fields = raw.get("type"), raw
    else:
        raise EventDecodeError(f"an event is a map or an array, got {_what(raw)}")
    if kind == "BlockStored":
        return _stored(fields, dialect.hash_form)
    if kind == "BlockRemoved":
        return BlockRemoved(_hashes(fields, dialect.hash_form), _opt_str(fields, "medium"),
                            _opt_int(fields, "group_idx"))
    if kind == "AllBlocksCleared":
        return AllBlocksCleared()
    raise EventDecodeError(f"unknown event type {kind!r}")


def _stored(f: Mapping[Any, Any], form: HashForm) -> BlockStored:
    hashes = _hashes(f, form)
    parent = f.get("parent_block_hash")
    tokens = f.get("token_ids")
    if not isinstance(tokens, list) or not all(
            type(t) is int and t >= 0 for t in tokens):
        raise EventDecodeError("BlockStored token_ids must be an array of token ids")
    size = f.get("block_size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise EventDecodeError(f"BlockStored block_size must be a positive integer, got "
                               f"{_what(size)}")
    extra = f.get("extra_keys")
    if extra is not None and not isinstance(extra, list):
        raise EventDecodeError("BlockStored extra_keys must be an array")
    keys = None if extra is None else tuple(_frozen_key(k) for k in extra)
    lora_name = _opt_str(f, "lora_name")
    salt: object = f.get("cache_salt")
    metadata = f.get("metadata")
    if salt is None and isinstance(metadata, Mapping):
        salt = metadata.get("cache_salt")  # SGLang releases that nested it
    if salt is None and parent is None and keys and keys[0]:
        salt = _salt_from_extra_keys(keys[0], lora_name)
    return BlockStored(
        engine_hashes=hashes,
        parent=None if parent is None else _hash(parent, form, "parent_block_hash"),
        token_ids=tuple(tokens),
        block_size=size,
        lora_id=_opt_int(f, "lora_id"),
        medium=_opt_str(f, "medium"),
        lora_name=lora_name,
        extra_keys=keys,
        cache_salt=salt if isinstance(salt, str) else None,
        group_idx=_opt_int(f, "group_idx"),
        kv_cache_spec_kind=_opt_str(f, "kv_cache_spec_kind"),
        kv_cache_spec_sliding_window=_opt_int(f, "kv_cache_spec_sliding_window"),
        session_id=_opt_str(f, "session_id"),
    )


def _salt_from_extra_keys(block0: tuple[Any, ...], lora_name: str | None) -> str | None:
    """vLLM names no salt: block 0's untagged extra keys hold, in order, the LoRA name (when
    `lora_name` is set), multimodal `(id, offset)` pairs, the cache salt, prompt-embeds digests
    (bytes) (`generate_block_hash_extra_keys`, `to_event_extra_keys`): the salt is the string
    after the LoRA name."""
    strings = [k for k in block0 if isinstance(k, str)]
    if lora_name is not None and strings[:1] == [lora_name]:
        strings = strings[1:]
    return strings[0] if strings else None


def _hashes(f: Mapping[Any, Any], form: HashForm) -> tuple[int, ...]:
    raw = f.get("block_hashes")
    if not isinstance(raw, list):
        raise EventDecodeError(f"block_hashes must be an array, got {_what(raw)}")
    return tuple(_hash(h, form, "block_hashes") for h in raw)


def _hash(raw: object, form: HashForm, where: str) -> int:
    try:
        return normalize_hash(raw, form)
    except EventDecodeError as exc:
        raise EventDecodeError(f"{where}: {exc}") from None


def _frozen_key(key: object) -> tuple[Any, ...] | None:
    """One block's extra keys as a hashable tuple (nested arrays become tuples)."""
    if key is None:
        return None
    if not isinstance(key, list):
        raise EventDecodeError(f"an extra_keys entry must be an array or null, got "
                               f"{_what(key)}")
    return tuple(_frozen(k) for k in key)


def _frozen(value: object) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        raise EventDecodeError("extra_keys may not hold maps")
    return value


def _opt_int(f: Mapping[Any, Any], key: str) -> int | None:
    value = f.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventDecodeError(f"{key} must be an integer or null, got {_what(value)}")
    return value


def _opt_str(f: Mapping[Any, Any], key: str) -> str | None:
    value = f.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventDecodeError(f"{key} must be a string or null, got {_what(value)}")
    return value


def _seq(frame: bytes) -> int:
    if len(frame) != 8:
        raise EventDecodeError(f"the sequence frame has 8 bytes, got {len(frame)}")
    return int.from_bytes(frame, "big")


def _topic(frame: bytes) -> str:
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        raise EventDecodeError("the topic frame is not UTF-8") from None


def _what(value: object) -> str:
    return "null" if value is None else type(value).__name__
