"""Frames of the replica sync: msgpack, versioned, checked before anything is applied.

A frame is `[version, origin, seq, sent_at, kind, body]`: `version` is `VERSION` (a frame of
another version is dropped, so replicas of two llmd versions ignore each other rather than
misread), `origin` the sender's replica id, `seq` its frame counter, `sent_at` its wall clock
(seconds; the receiver's apply lag) and `kind` one of:

- `STATE` (every sync interval): body `{"r": ready, "w": wants a snapshot, "i": {endpoint:
  requests in flight}, "p": {producer: [[endpoint, [block hash, ...]], ...]}}`: the sender's own
  in-flight gauge and the blocks it recorded since its last frame;
- `SNAPSHOT` (to a peer that asked): body `{"to": replica id, "last": bool, "i": {...}, "p":
  {...}}`: the sender's whole approximate index, in chunks; `last` ends it.

`decode()` raises `BadFrame(reason)` for anything else: `garbage` (not msgpack), `version`,
`malformed` (wrong shape or types), `too_large` (over the size limit, checked first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs ship with msgpack

__all__ = ["SNAPSHOT", "STATE", "VERSION", "BadFrame", "Frame", "decode", "encode"]

VERSION = 1
STATE = 0
SNAPSHOT = 1
_KINDS = (STATE, SNAPSHOT)
_MAX_HASH = (1 << 64) - 1
_MAX_COUNT = 1 << 20

Records = Mapping[str, Sequence[tuple[str, Sequence[int]]]]


class BadFrame(ValueError):
    """A frame to drop; `reason` labels the drop counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    origin: str
    seq: int
    sent_at: float
    kind: int
    inflight: Mapping[str, int] = field(default_factory=dict)
    prefix: Records = field(default_factory=dict)
    ready: bool = True
    wants_snapshot: bool = False
    to: str = ""
    last: bool = False


def encode(frame: Frame) -> bytes:
    body: dict[str, Any] = {"i": dict(frame.inflight),
                            "p": {k: [[ep, list(h)] for ep, h in v]
                                  for k, v in frame.prefix.items()}}
    if frame.kind == STATE:
        body |= {"r": frame.ready, "w": frame.wants_snapshot}
    else:
        body |= {"to": frame.to, "last": frame.last}
    out: bytes = msgpack.packb([VERSION, frame.origin, frame.seq, frame.sent_at, frame.kind,
                                body], use_bin_type=True)
    return out


def decode(data: bytes, max_bytes: int) -> Frame:
    if len(data) > max_bytes:
        raise BadFrame("too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadFrame("garbage", type(exc).__name__) from None
    if not isinstance(raw, list) or len(raw) != 6:
        raise BadFrame("malformed", "not a 6-item array")
    version, origin, seq, sent_at, kind, body = raw
    if version != VERSION:
        raise BadFrame("version", f"{version!r} (this replica speaks {VERSION})")
    if not (isinstance(origin, str) and origin and isinstance(seq, int)
            and isinstance(sent_at, float | int) and kind in _KINDS and isinstance(body, dict)):
        raise BadFrame("malformed", "header")
    inflight = _inflight(body.get("i", {}))
    prefix = _prefix(body.get("p", {}))
    if kind == STATE:
        ready, wants = body.get("r", True), body.get("w", False)
        if not (isinstance(ready, bool) and isinstance(wants, bool)):
            raise BadFrame("malformed", "state flags")
        return Frame(origin, seq, float(sent_at), kind, inflight, prefix, ready, wants)
    to, last = body.get("to"), body.get("last")
    if not (isinstance(to, str) and isinstance(last, bool)):
        raise BadFrame("malformed", "snapshot header")
    return Frame(origin, seq, float(sent_at), kind, inflight, prefix, to=to, last=last)


def _inflight(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and 0 <= v <= _MAX_COUNT
            for k, v in raw.items()):
        raise BadFrame("malformed", "in-flight counts")
    return raw


def _prefix(raw: object) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    if not isinstance(raw, dict):
        raise BadFrame("malformed", "prefix records")
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for producer, records in raw.items():
        if not isinstance(producer, str) or not isinstance(records, list):
            raise BadFrame("malformed", "prefix records")
        got = out[producer] = []
        for record in records:
            if not (isinstance(record, list) and len(record) == 2
                    and isinstance(record[0], str) and isinstance(record[1], list)):
                raise BadFrame("malformed", "prefix record")
            hashes = record[1]
            if not all(isinstance(h, int) and 0 <= h <= _MAX_HASH for h in hashes):
                raise BadFrame("malformed", "block hash")
            got.append((record[0], tuple(hashes)))
    return out
