"""KV-event decoding against what real engines sent (../shared/fixtures/kv-events): every
frame and replay answer decodes, in the maps the engines send today and in the positional
arrays of older releases, and every stored hash is the engine's own hash of the blocks' tokens
(vLLM 72/72, SGLang 19/19 per capture), as the fixtures' verify_hashes.py find.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import msgpack
import pytest
from _kvfixtures import FRAME_FILES, REPLAY_FILES, expected_hashes, frames_of, lines

from llmd.engines import get_adapter
from llmd.kvcache import (
    END_SEQ,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventDecodeError,
    decode_batch,
    decode_event,
    decode_message,
    decode_replay,
    normalize_hash,
    replay_request,
)

STORED_HASHES = {"vllm/frames.jsonl": 72, "sglang/frames.jsonl": 19,
                 "sglang/frames_dynamo.jsonl": 19, "sglang/frames_python_treecore.jsonl": 19}
FRAME_IDS = [f for _, f, _, _ in FRAME_FILES]


def _positional(event: dict[str, Any], engine: str) -> list[Any]:
    """An event as the engine's older array encoding carried it (trailing nulls dropped)."""
    dialect = get_adapter(engine).kv_events
    kind = event["type"]
    names = {"BlockStored": dialect.stored_fields,
             "BlockRemoved": dialect.removed_fields}.get(kind, ())
    fields = dict(event)
    if "cache_salt" in fields and "metadata" in names:
        fields["metadata"] = {"cache_salt": fields["cache_salt"]}
    values = [fields.get(name) for name in names]
    while values and values[-1] is None:
        values.pop()
    return [kind, *values]


def _decoded_live(root: Path, name: str, engine: str, positional: bool) -> list[EventBatch]:
    dialect = get_adapter(engine).kv_events
    batches = []
    for rec in lines(root, name):
        if positional:
            ts, events = rec["decoded"][0], rec["decoded"][1]
            payload = msgpack.packb([ts, [_positional(e, engine) for e in events]])
            batches.append(decode_batch(payload, dialect, seq=rec["seq"], topic=rec["topic"]))
        else:
            batches.append(decode_message(frames_of(rec), dialect))
    return batches


@pytest.mark.parametrize(("engine", "name", "steps", "fmt"), FRAME_FILES, ids=FRAME_IDS)
def test_every_live_frame_decodes_as_sent(shared_dir: Path, engine: str, name: str, steps: str,
                                          fmt: str) -> None:
    records = lines(shared_dir, name)
    batches = _decoded_live(shared_dir, name, engine, positional=False)
    assert [b.seq for b in batches] == list(range(len(records)))
    form = get_adapter(engine).kv_events.hash_form
    for rec, batch in zip(records, batches, strict=True):
        ts, events, rank = rec["decoded"]
        assert (batch.topic, batch.ts, batch.dp_rank, batch.errors) == (rec["topic"], ts, rank, ())
        assert [type(e).__name__ for e in batch.events] == [e["type"] for e in events]
        for raw, ev in zip(events, batch.events, strict=True):
            if isinstance(ev, BlockStored):
                assert ev.engine_hashes == tuple(normalize_hash(h, form)
                                                 for h in raw["block_hashes"])
                assert ev.token_ids == tuple(raw["token_ids"])
                assert (ev.block_size, ev.medium) == (raw["block_size"], "GPU")
                assert ev.session_id == raw.get("session_id")
            elif isinstance(ev, BlockRemoved):
                assert ev.engine_hashes == tuple(raw["block_hashes"])


@pytest.mark.parametrize("positional", [False, True], ids=["maps", "positional"])
@pytest.mark.parametrize(("engine", "name", "steps", "fmt"), FRAME_FILES, ids=FRAME_IDS)
def test_stored_hashes_are_the_engines_own(shared_dir: Path, engine: str, name: str,
                                           steps: str, fmt: str, positional: bool) -> None:
    expected = expected_hashes(engine, lines(shared_dir, steps), fmt)
    stored: set[int] = set()
    matched = removed = 0
    for batch in _decoded_live(shared_dir, name, engine, positional):
        assert batch.errors == ()
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                for j, h in enumerate(ev.engine_hashes):
                    block = expected[h]  # KeyError: a hash the engine would not compute
                    assert ev.token_ids[j * ev.block_size:(j + 1) * ev.block_size] == block.tokens
                    if j == 0 and ev.session_id is None:  # a re-announcement names no parent
                        assert ev.parent == block.parent
                    matched += 1
                    stored.add(h)
            elif isinstance(ev, BlockRemoved):
                assert set(ev.engine_hashes) <= stored
                removed += len(ev.engine_hashes)
    assert matched == STORED_HASHES[name]
    assert removed == (44 if engine == "vllm" else 14)


@pytest.mark.parametrize(("engine", "name", "steps", "fmt"), FRAME_FILES, ids=FRAME_IDS)
def test_both_encodings_decode_alike(shared_dir: Path, engine: str, name: str, steps: str,
                                     fmt: str) -> None:
    maps = _decoded_live(shared_dir, name, engine, positional=False)
    arrays = _decoded_live(shared_dir, name, engine, positional=True)
    for a, b in zip(maps, arrays, strict=True):
        assert b.dp_rank is None  # [ts, events]: the older batch had no rank
        assert len(a.events) == len(b.events)
        for x, y in zip(a.events, b.events, strict=True):
            if isinstance(x, BlockStored):
                assert isinstance(y, BlockStored)
                assert (x.engine_hashes, x.parent, x.token_ids, x.block_size, x.cache_salt) == (
                    y.engine_hashes, y.parent, y.token_ids, y.block_size, y.cache_salt)
            else:
                assert x == y


def test_salts_are_read_from_either_dialect(shared_dir: Path) -> None:
    vllm = _decoded_live(shared_dir, "vllm/frames.jsonl", "vllm", positional=False)
    salted = vllm[4].events[0]
    assert isinstance(salted, BlockStored)
    assert salted.extra_keys == (("tenant-a",), None, None)
    assert salted.cache_salt == "tenant-a"  # block 0's untagged extra key
    assert all(e.cache_salt is None for b in vllm[:4] for e in b.events
               if isinstance(e, BlockStored))
    sglang = _decoded_live(shared_dir, "sglang/frames.jsonl", "sglang", positional=False)
    ev = sglang[4].events[0]
    assert isinstance(ev, BlockStored) and ev.cache_salt == "tenant-a"
    assert isinstance(sglang[0].events[0], AllBlocksCleared)


@pytest.mark.parametrize(("engine", "name", "live"), REPLAY_FILES,
                         ids=[f for _, f, _ in REPLAY_FILES])
def test_replay_answers_decode_to_the_live_batches(shared_dir: Path, engine: str, name: str,
                                                   live: str) -> None:
    dialect = get_adapter(engine).kv_events
    by_seq = {b.seq: b for b in _decoded_live(shared_dir, live, engine, positional=False)}
    ends, starts = 0, set()
    for rec in lines(shared_dir, name):
        frames = [base64.b64decode(f) for f in rec["frames_b64"]]
        assert [base64.b64decode(f) for f in rec["request_frames_b64"]] == replay_request(
            rec["replay_start_seq"])
        batch = decode_replay(frames, dialect)
        if batch is None:
            ends += 1
            continue
        starts.add(rec["replay_start_seq"])
        assert batch.seq >= rec["replay_start_seq"]
        assert batch == by_seq[batch.seq]
    assert ends == len({r["replay_start_seq"] for r in lines(shared_dir, name)})
    assert starts


def test_older_replay_frames_without_topic() -> None:
    dialect = get_adapter("sglang").kv_events
    payload = msgpack.packb([1.0, [["BlockRemoved", [-5]]]])
    batch = decode_replay([b"", (7).to_bytes(8, "big"), payload], dialect)
    assert batch is not None and (batch.seq, batch.topic) == (7, "")
    assert batch.events == (BlockRemoved((-5,)),)
    assert decode_replay([b"", END_SEQ, b""], dialect) is None
    assert decode_replay([b"", b"", END_SEQ, b""], dialect) is None


@pytest.mark.parametrize(("raw", "form", "value"), [
    pytest.param(11080686542240178668, "low64", 11080686542240178668, id="vllm-uint64"),
    pytest.param(-1, "low64", (1 << 64) - 1, id="vllm-signed-cast"),
    pytest.param(bytes(range(32)), "low64", int.from_bytes(bytes(range(24, 32)), "big"),
                 id="vllm-digest-bytes-low-8"),
    pytest.param(-4348969804400360826, "high64-signed", -4348969804400360826, id="sglang-int64"),
    pytest.param((1 << 64) - 5, "high64-signed", -5, id="sglang-unsigned-cast"),
    pytest.param(b"\xff" * 8 + b"\x00" * 24, "high64-signed", -1, id="sglang-bytes-first-8"),
])
def test_hashes_normalise_to_one_space_per_engine(raw: object, form: Any, value: int) -> None:
    assert normalize_hash(raw, form) == value


@pytest.mark.parametrize("raw", [True, 1.5, "12", b"", 1 << 64, -(1 << 63) - 1, None])
def test_bad_hashes(raw: object) -> None:
    with pytest.raises(EventDecodeError):
        normalize_hash(raw, "low64")


def _payload(*events: Any) -> bytes:
    return bytes(msgpack.packb([1.5, list(events), 0]))


GOOD = {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU"}


@pytest.mark.parametrize("frames", [
    pytest.param([b"t", b"\x00" * 8], id="two-frames"),
    pytest.param([b"t", b"\x00" * 7, _payload()], id="short-seq"),
    pytest.param([b"\xff\xfe", b"\x00" * 8, _payload()], id="topic-not-utf8"),
    pytest.param([b"t", b"\x00" * 8, b"\xc1"], id="not-msgpack"),
    pytest.param([b"t", b"\x00" * 8, _payload() + b"\x00"], id="trailing-bytes"),
    pytest.param([b"t", b"\x00" * 8, msgpack.packb({"x": 1})], id="map-without-fields"),
    pytest.param([b"t", b"\x00" * 8, msgpack.packb([1.0])], id="one-element"),
    pytest.param([b"t", b"\x00" * 8, msgpack.packb(["now", []])], id="ts-not-number"),
    pytest.param([b"t", b"\x00" * 8, msgpack.packb([1.0, {}])], id="events-not-array"),
    pytest.param([b"t", b"\x00" * 8, msgpack.packb([1.0, [], "0"])], id="rank-not-int"),
])
def test_malformed_messages_raise(frames: list[bytes]) -> None:
    with pytest.raises(EventDecodeError):
        decode_message(frames, get_adapter("vllm").kv_events)


@pytest.mark.parametrize("event", [
    pytest.param({"type": "BlockUpdated", "block_hashes": [1]}, id="unknown-type"),
    pytest.param({"block_hashes": [1]}, id="no-type"),
    pytest.param(["Nope", 1], id="unknown-positional"),
    pytest.param([], id="empty-array"),
    pytest.param(7, id="scalar"),
    pytest.param({"type": "BlockRemoved"}, id="no-hashes"),
    pytest.param({"type": "BlockRemoved", "block_hashes": [1.5]}, id="float-hash"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [1, 2]},
                 id="no-block-size"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [[1, 2]],
                  "block_size": 1}, id="token-pairs"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [-1],
                  "block_size": 1}, id="negative-token"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [1],
                  "block_size": 0}, id="zero-block-size"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [1],
                  "block_size": 1, "lora_id": "x"}, id="lora-id-not-int"),
    pytest.param({"type": "BlockStored", "block_hashes": [1], "token_ids": [1],
                  "block_size": 1, "extra_keys": [{"a": 1}]}, id="extra-key-map"),
    pytest.param(["BlockStored", [1]], id="positional-too-short"),
])
def test_a_malformed_event_is_skipped_and_named(event: Any) -> None:
    dialect = get_adapter("vllm").kv_events
    with pytest.raises(EventDecodeError):
        decode_event(event, dialect)
    batch = decode_batch(_payload(GOOD, event, GOOD), dialect)
    assert batch.events == (BlockRemoved((1,), "GPU"),) * 2
    assert len(batch.errors) == 1 and str(batch.errors[0]).startswith("event 1: ")


def test_unknown_fields_are_ignored_and_trailing_fields_optional() -> None:
    dialect = get_adapter("sglang").kv_events
    stored = decode_event({"type": "BlockStored", "block_hashes": [1], "parent_block_hash": None,
                           "token_ids": [5, 6], "block_size": 2, "future_field": {"x": 1}},
                          dialect)
    assert stored == BlockStored((1,), None, (5, 6), 2)
    old = decode_event(["BlockStored", [1], 9, [5, 6], 2, None, "GPU", {"cache_salt": "s"},
                        "extra"], dialect)
    assert old == BlockStored((1,), 9, (5, 6), 2, medium="GPU", cache_salt="s")
    assert decode_event(["AllBlocksCleared"], dialect) == AllBlocksCleared()
    batch = decode_batch(msgpack.packb({"ts": 2, "events": [], "attn_dp_rank": 3}), dialect)
    assert (batch.ts, batch.events, batch.dp_rank, batch.seq) == (2.0, (), 3, -1)
