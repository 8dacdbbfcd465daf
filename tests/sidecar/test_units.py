"""Pure parts of the sidecar: host:port parsing, rooms, SSE usage rewriting."""

from __future__ import annotations

import json

import pytest

from llmd.sidecar import HostPort, parse_host_port
from llmd.sidecar._sse import SseUsageRewriter, cached_tokens_of, rewrite_json_body
from llmd.sidecar.connectors import bootstrap_room


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.1:8000", HostPort("10.0.0.1", 8000), id="ipv4"),
        pytest.param("pod-a.ns:8200", HostPort("pod-a.ns", 8200), id="name"),
        pytest.param("[fd00::1]:8000", HostPort("fd00::1", 8000), id="ipv6-bracketed"),
        pytest.param("[::1]:1", HostPort("::1", 1), id="ipv6-loopback"),
    ],
)
def test_parse_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text) == expected


def test_ipv6_netloc_gets_brackets_back() -> None:
    assert parse_host_port("[fd00::1]:8000").url("/v1/completions") == \
        "http://[fd00::1]:8000/v1/completions"
    assert parse_host_port("fd00::1", default_port=8998).netloc() == "[fd00::1]:8998"


@pytest.mark.parametrize("bad", ["", "host", "host:", "host:99999", "[fd00::1", "[nothex]:1",
                                 "fd00::1:zz", ":8000"])
def test_parse_host_port_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(bad)


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
