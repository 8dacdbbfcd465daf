"""Pure parts of the sidecar: host:port parsing, candidate lists, the allowlist, body checks,
rooms, SSE usage rewriting."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from llmd.engines import get_adapter
from llmd.errors import BadRequestError
from llmd.sidecar import (
    Allowlist,
    HostPort,
    SidecarConfig,
    parse_body,
    parse_candidates,
    parse_host_port,
    split_host_port,
    static_allowlist,
)
from llmd.sidecar._sse import SseUsageRewriter, cached_tokens_of, rewrite_json_body
from llmd.sidecar.connectors import bootstrap_room


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.1:8000", HostPort("10.0.0.1", 8000), id="ipv4"),
        pytest.param("pod-a.ns:8200", HostPort("pod-a.ns", 8200), id="name"),
        pytest.param("[fd00::1]:8000", HostPort("fd00::1", 8000), id="ipv6-bracketed"),
        pytest.param("[::1]:1", HostPort("::1", 1), id="ipv6-loopback"),
        pytest.param("[FD00:0::1]:8000", HostPort("fd00::1", 8000), id="ipv6-canonical"),
        pytest.param(" Pod-A.NS:08200 ", HostPort("pod-a.ns", 8200), id="name-lower-case"),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


def test_ipv6_netloc_gets_brackets_back() -> None:
    assert parse_host_port("[fd00::1]:8000").url("/v1/completions") == \
        "http://[fd00::1]:8000/v1/completions"
    assert parse_host_port("fd00::1", default_port=8998).netloc() == "[fd00::1]:8998"


# Every one of these reached a resolver or yarl before, and some were uncaught 500s.
HOSTILE_TARGETS = [
    pytest.param("", "empty", id="empty"),
    pytest.param("host", "no port", id="no-port"),
    pytest.param("host:", "bad port", id="empty-port"),
    pytest.param("host:0", "bad port", id="port-0"),
    pytest.param("host:99999", "bad port", id="port-too-big"),
    pytest.param("host:+1", "bad port", id="port-sign"),
    pytest.param(":80", "no host", id="no-host"),
    pytest.param("127.1:1", "not a dotted-quad IPv4 address", id="short-ipv4"),
    pytest.param("1.2.3.256:1", "not a dotted-quad IPv4 address", id="ipv4-out-of-range"),
    pytest.param("010.0.0.1:1", "not a dotted-quad IPv4 address", id="ipv4-leading-zero"),
    pytest.param("pod.123:1", "not a dotted-quad IPv4 address", id="numeric-last-label"),
    pytest.param("a b:1", "not an IP address or a DNS name", id="space"),
    pytest.param("a..b:1", "not an IP address or a DNS name", id="empty-label"),
    pytest.param("-a:1", "not an IP address or a DNS name", id="leading-hyphen"),
    pytest.param("under_score:1", "not an IP address or a DNS name", id="underscore"),
    pytest.param("x" * 4096 + ":1", "too long", id="4kb-host"),
    pytest.param(("a" * 60 + ".") * 4 + "b" * 10 + ":1", "not an IP address or a DNS name",
                 id="name-over-253"),
    pytest.param("hé:1", "not printable ASCII", id="non-ascii"),
    pytest.param("host:١٢", "not printable ASCII", id="non-ascii-digits"),
    pytest.param("\udced\udca0\udc80:1", "not printable ASCII", id="lone-surrogates"),
    pytest.param("a\tb:1", "not printable ASCII", id="control-char"),
    pytest.param("user@host:1", "not host:port", id="userinfo"),
    pytest.param("http://x:1", "not host:port", id="url"),
    pytest.param("x:1/admin", "not host:port", id="path"),
    pytest.param("[::1", "unbalanced", id="unbalanced-bracket"),
    pytest.param("[::1]x", "garbage after", id="after-bracket"),
    pytest.param("[nothex]:1", "not an IPv6 address", id="bad-ipv6"),
    pytest.param("[127.0.0.1]:1", "not an IPv6 address", id="bracketed-ipv4"),
    pytest.param("fd00::1:zz", "not an IPv6 address", id="bare-bad-ipv6"),
    pytest.param("[fe80::1%eth0]:1", "zone ids are not accepted", id="ipv6-zone"),
]


@pytest.mark.parametrize(("bad", "reason"), HOSTILE_TARGETS)
def test_parse_host_port_rejects(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_host_port(bad)
    assert len(str(info.value)) < 250  # a 4 KB host is not echoed whole


def test_bare_hosts_for_the_allowlist() -> None:
    assert split_host_port("10.0.0.1") == ("10.0.0.1", None)
    assert split_host_port("fd00::1") == ("fd00::1", None)
    assert split_host_port("[fd00::1]") == ("fd00::1", None)
    assert split_host_port("[fd00::1]:9") == ("fd00::1", 9)


def test_candidates_keep_order_drop_repeats_and_name_the_bad_entry() -> None:
    a, b, c = HostPort("10.0.0.1", 8000), HostPort("10.0.0.2", 8000), HostPort("fd00::1", 1)
    assert parse_candidates("10.0.0.1:8000") == [a]
    assert parse_candidates("10.0.0.1:8000, 10.0.0.2:8000,[fd00::1]:1,10.0.0.1:8000,") == \
        [a, b, c]
    with pytest.raises(ValueError, match="entry 2: '127.1' in '127.1:1' is not a dotted"):
        parse_candidates("10.0.0.1:8000,127.1:1")
    with pytest.raises(ValueError, match="no prefill host given"):
        parse_candidates(" , ")
    # Sampling puts a random candidate first and keeps the others in list order.
    firsts = set()
    for seed in range(40):
        got = parse_candidates("10.0.0.1:8000,10.0.0.2:8000,[fd00::1]:1", sample=True,
                               rng=random.Random(seed))
        firsts.add(got[0])
        assert sorted(got, key=[a, b, c].index) == [a, b, c]
        assert [t for t in [a, b, c] if t != got[0]] == got[1:]
    assert firsts == {a, b, c}


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_a_bare_host_allows_only_the_known_prefill_ports(engine: str) -> None:
    cfg = SidecarConfig(kv_connector=get_adapter(engine).sidecar_connector,
                        prefill_allowlist=("10.0.0.1", "10.0.0.2:9000", "fd00::1", "[fd00::2]",
                                           "[fd00::3]:7", "Prefill-0.ns"))
    known = {8000, get_adapter(engine).default_port}  # llm-d's port, the engine's own
    assert set(cfg.known_prefill_ports) == known
    allow = static_allowlist(cfg)
    for host in ("10.0.0.1", "fd00::1", "fd00::2", "prefill-0.ns"):
        for port in known:
            assert allow.allows(HostPort(host, port)), (host, port)
        for port in (1, 9000, 9901, 15000, 65535):  # e.g. an Envoy admin page
            assert not allow.allows(HostPort(host, port)), (host, port)
    assert allow.allows(HostPort("10.0.0.2", 9000))
    assert not any(allow.allows(HostPort("10.0.0.2", p)) for p in known)
    assert allow.allows(HostPort("fd00::3", 7)) and not allow.allows(HostPort("fd00::3", 8000))
    assert allow.check(parse_host_port("[FD00:0::3]:7")) == "allow"  # compared canonically


def test_pool_targets_are_pods_on_the_pool_ports() -> None:
    allow = Allowlist(["10.0.0.1:1"], pool="llm/qwen")
    assert allow.check(HostPort("10.0.0.2", 8000)) == "unsynced"
    allow.set_pool(["10.0.0.2", "FD00::0:5", "prefill-0"], [8000, 8001])
    for host in ("10.0.0.2", "fd00::5", "prefill-0"):
        assert [allow.check(HostPort(host, p)) for p in (8000, 8001, 8002)] == \
            ["allow", "allow", "deny"]
    assert allow.check(HostPort("10.0.0.1", 1)) == "allow"


@pytest.mark.parametrize("entry", ["127.1", "10.0.0.1:0", "http://10.0.0.1", "a b"])
def test_bad_prefill_allow_entries_are_config_errors(entry: str) -> None:
    with pytest.raises(ValidationError, match="prefill_allowlist"):
        SidecarConfig(prefill_allowlist=(entry,))


@pytest.mark.parametrize(("raw", "message", "param"), [
    pytest.param(b'{"prompt": "\\ud800"}', "'prompt' is not valid Unicode: it contains a lone "
                 "UTF-16 surrogate (U+D800)", "prompt", id="prompt"),
    pytest.param(b'{"messages": [{"role": "user", "content": "ok \\udc00"}]}',
                 "'messages[0].content' is not valid Unicode", "messages[0].content",
                 id="message-content"),
    pytest.param(b'{"model": "\\udfff", "prompt": "x"}', "'model' is not valid", "model",
                 id="model"),
    pytest.param(b'{"\\ud800": 1}', "is not valid Unicode", "\\ud800", id="key"),
    pytest.param(b'{"prompt": "\xff\xfe"}', "not valid UTF-8: byte 0xff at offset 12", None,
                 id="invalid-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "more than 512 levels deep", None,
                 id="100000-deep"),
    pytest.param(b'{"a": ' + b"[" * 600 + b"]" * 600 + b"}", "more than 512 levels deep",
                 None, id="600-deep"),
    pytest.param(b"[1]", "must be a JSON object", None, id="array"),
    pytest.param(b'"text"', "must be a JSON object", None, id="string"),
    pytest.param(b"", "not valid JSON", None, id="empty"),
    pytest.param(b"{", "not valid JSON", None, id="truncated"),
])
def test_hostile_bodies(raw: bytes, message: str, param: str | None) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_body(raw)
    assert message in info.value.message
    assert info.value.param == param
    json.dumps(info.value.body(), ensure_ascii=False).encode()  # the answer itself encodes


def test_bodies_that_pass() -> None:
    pair = parse_body(b'{"prompt": "\\ud83d\\ude00 \\\\ud800", "n": [[1], {"a": []}]}')
    assert pair["prompt"] == "\U0001f600 \\ud800"  # a surrogate pair; an escaped backslash
    deep = parse_body(b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}")["a"]  # 101 levels: fine
    for _ in range(99):
        (deep,) = deep
    assert deep == []


def test_rooms_are_63_bit_and_dp_aware() -> None:
    rooms = {bootstrap_room() for _ in range(1000)}
    assert len(rooms) == 1000 and all(0 <= r < 2**63 for r in rooms)
    assert max(rooms) > 2**62  # drawn from the whole range, not a timestamp
    for rank in range(4):
        assert all(bootstrap_room(4, rank) % 4 == rank for _ in range(100))
    assert {bootstrap_room(4) % 4 for _ in range(200)} == {0, 1, 2, 3}


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_sse_rewriter_rewrites_only_usage_events_across_chunk_splits() -> None:
    stream = (_event({"choices": [{"text": "a"}], "usage": None})
              + _event({"choices": [], "usage": {"prompt_tokens": 9,
                                                 "prompt_tokens_details": {"cached_tokens": 0}}})
              + b"data: [DONE]\n\n")
    out = b""
    rw = SseUsageRewriter()
    for i in range(0, len(stream), 7):  # deliberately awkward chunk boundaries
        out += rw.feed(stream[i:i + 7], 5)
    out += rw.flush()
    events = [e for e in out.split(b"\n\n") if e]
    assert json.loads(events[0][6:])["usage"] is None
    assert json.loads(events[1][6:])["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    assert events[2] == b"data: [DONE]"


def test_json_body_rewrite_and_prefill_cached_tokens() -> None:
    raw = json.dumps({"usage": {"prompt_tokens": 3, "prompt_tokens_details": None}}).encode()
    assert json.loads(rewrite_json_body(raw, 2))["usage"]["prompt_tokens_details"] == \
        {"cached_tokens": 2}
    assert cached_tokens_of({"usage": {"prompt_tokens_details": {"cached_tokens": None}}}) == 0
    assert cached_tokens_of({"usage": {"prompt_tokens_details": {"cached_tokens": 7}}}) == 7
    assert cached_tokens_of(None) == 0
