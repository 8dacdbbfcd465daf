"""Each engine's KV-event dialect: its `--kv-events-config` model, the bind/connect rule, which
rank publishes where, the topic convention, its own block hash and its event fields."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from llmd.engines import (
    KvEventsSettings,
    SGLangBlockHasher,
    SGLangKvEventsConfig,
    VllmKvEventsConfig,
    get_adapter,
    kv_topic,
    parse_kv_topic,
    vllm_none_hash,
)
from llmd.errors import ConfigError

# vLLM 0.32's KVEventsConfig fields (vllm/config/kv_events.py) and SGLang 0.5.23's.
VLLM_FIELDS = {"enable_kv_cache_events", "publisher", "endpoint", "replay_endpoint",
               "buffer_steps", "hwm", "max_queue_size", "topic"}
SGLANG_FIELDS = {"publisher", "endpoint", "replay_endpoint", "buffer_steps", "hwm",
                 "max_queue_size", "topic", "format", "bind"}


def settings(engine: str, **fields: object) -> KvEventsSettings:
    base: dict[str, object] = {"publisher": "zmq"}
    if engine == "vllm":
        base["enable_kv_cache_events"] = True
    return get_adapter(engine).kv_events.parse_config({**base, **fields})


def test_the_models_have_the_engines_keys() -> None:
    assert set(VllmKvEventsConfig.model_fields) == VLLM_FIELDS
    assert set(SGLangKvEventsConfig.model_fields) == SGLANG_FIELDS


def test_defaults(engine: str) -> None:
    s = get_adapter(engine).kv_events.parse_config("{}")
    assert not s.enabled  # vLLM: events off; SGLang: publisher "null"
    assert (s.endpoint, s.replay_endpoint, s.buffer_steps, s.hwm, s.max_queue_size, s.topic) == (
        "tcp://*:5557", None, 10_000, 100_000, 100_000, "")


@pytest.mark.parametrize(("raw", "enabled"), [
    pytest.param({"enable_kv_cache_events": True}, True, id="enabled-publisher-resolves-zmq"),
    pytest.param({"enable_kv_cache_events": True, "publisher": "null"}, False, id="null"),
    pytest.param({"publisher": "zmq"}, False, id="zmq-without-enable"),
])
def test_vllm_publishes_only_when_enabled(raw: dict[str, object], enabled: bool) -> None:
    assert get_adapter("vllm").kv_events.parse_config(raw).enabled is enabled


def test_sglang_publishes_with_publisher_zmq() -> None:
    dialect = get_adapter("sglang").kv_events
    assert dialect.parse_config({"publisher": "zmq"}).enabled
    assert dialect.parse_config({"publisher": "zmq", "format": "dynamo"}).hash_format == "dynamo"


@pytest.mark.parametrize(("engine", "raw", "message"), [
    pytest.param("vllm", '{"endpiont": "tcp://*:1"}', "--kv-events-config: endpiont: unknown field",
                 id="vllm-unknown-key"),
    pytest.param("vllm", '{"publisher": "kafka"}', "--kv-events-config: publisher: 'kafka' is not",
                 id="vllm-publisher"),
    pytest.param("vllm", '{"buffer_steps": -1}', "--kv-events-config: buffer_steps:",
                 id="vllm-negative"),
    pytest.param("vllm", '{"max_queue_size": 0}', "--kv-events-config: max_queue_size:",
                 id="vllm-unbounded-queue"),
    pytest.param("sglang", '{"enable_kv_cache_events": true}',
                 "--kv-events-config: enable_kv_cache_events: unknown field",
                 id="sglang-has-no-enable-key"),
    pytest.param("sglang", '{"format": "fancy"}', "--kv-events-config: format:",
                 id="sglang-format"),
    pytest.param("sglang", '{"endpoint": 5557}', "--kv-events-config: endpoint:",
                 id="sglang-endpoint-type"),
    pytest.param("sglang", "[1]", "--kv-events-config: expected a JSON object", id="not-object"),
    pytest.param("vllm", "{nope", "--kv-events-config: not valid JSON", id="not-json"),
])
def test_a_bad_config_names_its_field(engine: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_adapter(engine).kv_events.parse_config(raw)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("endpoint", "vllm", "sglang"), [
    pytest.param("tcp://*:5557", True, True, id="wildcard"),
    pytest.param("tcp://[::]:5557", True, True, id="ipv6-any"),
    pytest.param("ipc:///tmp/kv", True, True, id="ipc"),
    pytest.param("inproc://kv", True, True, id="inproc"),
    pytest.param("tcp://0.0.0.0:5557", False, True, id="ipv4-any-sglang-only"),
    pytest.param("tcp://127.0.0.1:5557", False, False, id="concrete-connects"),
    pytest.param("tcp://epp.ns.svc:5557", False, False, id="name-connects"),
])
def test_bind_or_connect(endpoint: str, vllm: bool, sglang: bool) -> None:
    assert get_adapter("vllm").kv_events.binds(settings("vllm", endpoint=endpoint)) is vllm
    assert get_adapter("sglang").kv_events.binds(settings("sglang", endpoint=endpoint)) is sglang


def test_sglang_explicit_bind_wins() -> None:
    dialect = get_adapter("sglang").kv_events
    assert dialect.binds(settings("sglang", endpoint="tcp://127.0.0.1:1", bind=True))
    assert not dialect.binds(settings("sglang", endpoint="tcp://*:1", bind=False))


def test_subscribing_is_the_other_side(engine: str) -> None:
    dialect = get_adapter(engine).kv_events
    spec = dialect.subscribe(settings(engine, endpoint="tcp://*:5557"), "10.0.0.5")
    assert (spec.bind, spec.endpoint) == (False, "tcp://10.0.0.5:5557")
    spec = dialect.subscribe(settings(engine, endpoint="tcp://*:5557"), "fd00::5")
    assert spec.endpoint == "tcp://[fd00::5]:5557"
    spec = dialect.subscribe(settings(engine, endpoint="tcp://epp.ns.svc:5556"), "10.0.0.5")
    assert (spec.bind, spec.endpoint) == (True, "tcp://*:5556")


def test_which_rank_publishes_where() -> None:
    vllm, sglang = get_adapter("vllm").kv_events, get_adapter("sglang").kv_events
    v, s = settings("vllm"), settings("sglang")
    assert vllm.publisher_endpoint(v, dp_rank=2) == "tcp://*:5559"
    assert vllm.publisher_endpoint(v, tp_rank=3) == "tcp://*:5557"  # the scheduler publishes
    assert sglang.publisher_endpoint(s, tp_rank=1) is None  # only attention-TP rank 0
    assert sglang.publisher_endpoint(s, pp_rank=1) is None
    assert sglang.publisher_endpoint(s, dp_rank=3, dp_attention=True) == "tcp://*:5560"
    assert vllm.publisher_endpoint(settings("vllm", endpoint="inproc://kv"), dp_rank=1) == (
        "inproc://kv_dp1")
    assert vllm.publisher_endpoint(settings("vllm", endpoint="tcp://*:0"), dp_rank=1) == (
        "tcp://*:0")
    off = get_adapter("sglang").kv_events.parse_config({})
    assert sglang.publisher_endpoint(off) is None


def test_topic_convention() -> None:
    assert kv_topic("10.0.0.5", 8000, "Qwen/Qwen3-0.6B") == "kv@10.0.0.5:8000@Qwen/Qwen3-0.6B"
    assert parse_kv_topic("kv@10.0.0.5:8000@Qwen/Qwen3-0.6B") == ("10.0.0.5", 8000,
                                                                   "Qwen/Qwen3-0.6B")
    assert kv_topic("fd00::5", 8000, "m") == "kv@[fd00::5]:8000@m"
    assert parse_kv_topic("kv@[fd00::5]:8000@m") == ("fd00::5", 8000, "m")
    for bad in ("", "kv@host@m", "kv@host:x@m", "kv@host:80@", "pod@1.2.3.4:80@m",
                "kv@1.2.3.4:99999@m"):
        assert parse_kv_topic(bad) is None, bad


def test_serve_config_is_what_the_engine_takes(engine: str) -> None:
    dialect = get_adapter(engine).kv_events
    raw = dialect.serve_config("tcp://*:5557", "kv@1.2.3.4:8000@m")
    parsed = dialect.parse_config(json.dumps(raw))
    assert parsed.enabled and parsed.topic == "kv@1.2.3.4:8000@m"


# vLLM 0.32 (fixtures/kv-events/vllm/worked_example.txt): NONE_HASH and R1's block 0.
NONE_HASH = "066b1e8987e027138e98701c46128929378935f9b6cd1549105ae6b4f0d71198"
P1_BLOCK0 = [341, 1032, 960, 1074, 1707, 630, 1296, 1983, 1847, 587, 968, 750, 513, 989, 1191,
             874, 1844, 257, 828, 950, 1928, 696, 1791, 1849, 1265, 1145, 789, 203, 362, 1421,
             1905, 1545]


def test_vllm_hash_is_sha256_of_the_pickled_block() -> None:
    assert vllm_none_hash().hex() == NONE_HASH
    seeded = hashlib.sha256(pickle.dumps("0", protocol=5)).digest()
    assert vllm_none_hash("0") == seeded  # PYTHONHASHSEED=0 replaces the fixed seed
    dialect = get_adapter("vllm").kv_events
    hasher = dialect.hasher(settings("vllm"))
    [digest] = hasher.digests(P1_BLOCK0, 32)
    assert digest.hex().startswith("96ac508c") and digest.hex().endswith("99c681b3c1ad61ec")
    assert hasher.event_hash(digest) == 11080686542240178668
    [salted] = hasher.digests(P1_BLOCK0, 32, salt="tenant-a")
    assert hasher.event_hash(salted) == 12642599744609479730
    assert dialect.hasher(settings("vllm"), hash_seed="0").digests(P1_BLOCK0, 32) != [digest]


def test_sglang_hash_chains_uint32_pages() -> None:
    hasher = get_adapter("sglang").kv_events.hasher(settings("sglang"))
    page = list(range(100, 164))
    [digest] = hasher.digests(page, 64)
    raw = b"".join(t.to_bytes(4, "little") for t in page)
    assert digest == hashlib.sha256(raw).digest()
    assert hasher.event_hash(digest) == int.from_bytes(digest[:8], "big", signed=True)
    [salted] = hasher.digests(page, 64, salt="s")
    assert salted == hashlib.sha256(
        hashlib.sha256(b"sglang-cache-salt-v1\0s").digest() + raw).digest()
    dynamo = get_adapter("sglang").kv_events.hasher(settings("sglang", format="dynamo"))
    assert dynamo.event_hash(salted, "s") == SGLangBlockHasher.namespaced(
        hasher.event_hash(salted), extra_key=None, cache_salt="s")
    # SGLang's own pinned values (test_kv_events.py::TestNamespacedBlockHash)
    assert SGLangBlockHasher.namespaced(123, extra_key="lora-a", cache_salt=None) == (
        9220659119954863560)
    assert SGLangBlockHasher.namespaced(-5, extra_key="lora-a", cache_salt=None) == (
        -1810974732006142875)
    with pytest.raises(ValueError):
        hasher.digests([1 << 32] * 64, 64)


def test_digests_extend_incrementally(engine: str) -> None:
    hasher = get_adapter(engine).kv_events.hasher(settings(engine))
    tokens = list(range(1000, 1100))
    whole = hasher.digests(tokens, 16, salt="s")
    head = hasher.digests(tokens[:48], 16, salt="s")
    tail = hasher.digests(tokens[48:96], 16, parent=head[-1])
    assert head + tail == whole
    assert hasher.digests(tokens[:15], 16) == []
    with pytest.raises(ValueError):
        hasher.digests(tokens, 0)


def test_event_fields_as_the_engines_send_them() -> None:
    vllm, sglang = get_adapter("vllm").kv_events, get_adapter("sglang").kv_events
    ev = vllm.stored_event([1, 2], None, [0] * 4, 2, salt="t", first_block=True)
    assert list(ev) == ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size",
                        "lora_id", "medium", "lora_name", "extra_keys", "group_idx",
                        "kv_cache_spec_kind"]
    assert (ev["extra_keys"], ev["medium"], ev["kv_cache_spec_kind"]) == (
        [["t"], None], "GPU", "full_attention")
    assert vllm.stored_event([3], 2, [0] * 2, 2, salt="t")["extra_keys"] == [None]
    assert list(vllm.removed_event([1])) == ["type", "block_hashes", "medium", "group_idx"]
    ev = sglang.stored_event([1], None, [0] * 2, 2)
    assert list(ev) == ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size",
                        "lora_id", "medium"]
    assert sglang.stored_event([1], 5, [0] * 2, 2, salt="t")["cache_salt"] == "t"
    assert list(sglang.removed_event([1])) == ["type", "block_hashes", "medium"]
    assert vllm.batch(1.0, [], 0) == sglang.batch(1.0, [], 0) == [1.0, [], 0]
    assert (vllm.clears_on_start, sglang.clears_on_start) == (False, True)
    assert (vllm.removed_per_block, sglang.removed_per_block) == (True, False)
