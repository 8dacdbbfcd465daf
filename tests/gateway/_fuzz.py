"""A seeded corpus of malformed requests for the gateway fuzz test: bodies (hand-written hostile
cases, every top-level field swapped for a value of the wrong type, byte-level mutations of
valid requests) and raw HTTP exchanges (broken framing, oversized and forbidden headers,
routing headers a client must not be able to set)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
SUR = "\\ud800"  # JSON text of a lone UTF-16 surrogate


@dataclass(frozen=True)
class BodyCase:
    name: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RawCase:
    name: str
    data: bytes
    half_close: bool = False
    """Shut down the client's sending side after `data` (a body that never arrives whole)."""


def _chat(model: str, extra: dict[str, object]) -> dict[str, object]:
    return {"model": model, "max_tokens": 2,
            "messages": [{"role": "user", "content": "hello there"}], **extra}


def _cmpl(model: str, extra: dict[str, object]) -> dict[str, object]:
    return {"model": model, "max_tokens": 2, "prompt": "hello there", **extra}


_WRONG = [None, True, 0, -1, 1.5, 10**30, "", "x" * 5000, [], [1, "a", None], {}, {"a": {}},
          float("inf")]
_FIELDS = ["model", "messages", "prompt", "stream", "max_tokens", "temperature", "top_p", "n",
           "stop", "logprobs", "top_logprobs", "stream_options", "cache_salt", "seed", "user",
           "logit_bias", "echo", "ignore_eos", "kv_transfer_params", "bootstrap_room"]
_HOSTILE = [
    b"", b"null", b"[]", b'"a string"', b"12", b"{", b'{"model": "m"', b"not json at all",
    b"\xff\xfe\xfd", b'{"model": "\xff"}', b"\xef\xbb\xbf{}", b"{}" * 1000,
    b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 2000 + b"1" + b"}" * 2000,
    b'{"model": "m", "prompt": "hi", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
    b'{"prompt": NaN}', b'{"prompt": "hi", "max_tokens": Infinity}',
    b'{"model": "m", "model": 7, "prompt": "hi"}',
    b'{"model": "m", "prompt": "' + b"\\u0000" * 100 + b'"}',
    b'{"model": "m", "prompt": "' + b"\\" * 3 + b'"}',
]


def body_cases(model: str, seed: int = 12) -> list[BodyCase]:
    """Hundreds of bodies: hand-written, wrong types per field, surrogates per field, byte
    mutations and truncations of valid chat and completions requests."""
    rng = random.Random(seed)
    cases = [BodyCase(f"hostile-{i}", path, body) for i, body in enumerate(_HOSTILE)
             for path in (CHAT, CMPL)]
    for maker, path in ((_chat, CHAT), (_cmpl, CMPL)):
        for field in _FIELDS:
            for j, wrong in enumerate(_WRONG):
                try:
                    body = json.dumps(maker(model, {field: wrong})).encode()
                except ValueError:
                    body = json.dumps(maker(model, {field: None})).encode()
                cases.append(BodyCase(f"{path}-{field}-{j}", path, body))
            text = json.dumps(maker(model, {field: "a@SUR@b"}))
            cases.append(BodyCase(f"{path}-{field}-surrogate", path,
                                  text.replace("@SUR@", SUR).encode()))
        valid = json.dumps(maker(model, {})).encode()
        for k in range(40):
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.choice(b'"\\{}[]:,\x00\xff\xc3 a1')
            cases.append(BodyCase(f"{path}-mutated-{k}", path, bytes(data)))
            cases.append(BodyCase(f"{path}-truncated-{k}", path,
                                  valid[: rng.randrange(len(valid))]))
    routing = [("x-gateway-destination-endpoint", "127.0.0.1:1"),
               ("x-gateway-destination-endpoint", "169.254.169.254:80,127.0.0.1:1"),
               ("x-prefiller-host-port", "127.0.0.1:1"),
               ("x-envoy-max-retries", "50"), ("x-envoy-original-dst-host", "127.0.0.1:1"),
               ("x-envoy-upstream-rq-timeout-ms", "1"),
               ("x-gateway-inference-objective", "\u00ff" * 300),
               ("x-session-token", "!!not base64!!"), ("x-session-token", "A" * 8000),
               ("x-request-id", "r" * 4000), ("content-type", "text/plain")]
    body = json.dumps(_cmpl(model, {})).encode()
    cases += [BodyCase(f"header-{name}-{i}", CMPL, body, ((name, value),))
              for i, (name, value) in enumerate(routing)]
    return cases


def raw_cases(host: str) -> list[RawCase]:
    """HTTP/1.1 framing and header abuse, as bytes on a socket."""
    body = b'{"model": "llmd-sim", "prompt": "hi", "max_tokens": 2}'

    def req(head: str, payload: bytes = body, length: int | None = None) -> bytes:
        size = len(payload) if length is None else length
        return (f"POST {CMPL} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\n{head}Content-Length: {size}\r\n\r\n"
                ).encode() + payload

    return [
        RawCase("garbage-line", b"GARBAGE\r\n\r\n"),
        RawCase("http-0.9", b"GET /\r\n\r\n"),
        RawCase("binary", bytes(range(256)) * 4),
        RawCase("header-70kb", req(f"X-Big: {'a' * 70_000}\r\n")),
        RawCase("headers-200", req("".join(f"X-H{i}: v\r\n" for i in range(200)))),
        RawCase("header-nul", req("X-Nul: a\x00b\r\n")),
        RawCase("header-bad-name", req("Bad Name: v\r\n")),
        RawCase("obs-fold", req("X-Fold: a\r\n  folded\r\n")),
        RawCase("two-content-lengths", req(f"Content-Length: {len(body) + 5}\r\n")),
        RawCase("negative-length", req("", length=-5)),
        RawCase("length-and-chunked", req("Transfer-Encoding: chunked\r\n")),
        RawCase("bad-chunked", (f"POST {CMPL} HTTP/1.1\r\nHost: {host}\r\n"
                                "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
                                ).encode()),
        RawCase("body-cut-short", req("", body[:10], length=len(body)), half_close=True),
        RawCase("absolute-uri", f"POST http://evil.example{CMPL} HTTP/1.1\r\nHost: {host}\r\n"
                                f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
                                .encode() + body),
        RawCase("path-traversal", f"GET /../../etc/passwd HTTP/1.1\r\nHost: {host}\r\n"
                                  "Connection: close\r\n\r\n".encode()),
        RawCase("connect", f"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()),
        RawCase("trace", f"TRACE / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                .encode()),
        RawCase("unknown-method", f"BREW {CMPL} HTTP/1.1\r\nHost: {host}\r\n"
                                  "Connection: close\r\n\r\n".encode()),
        RawCase("long-uri", f"GET /{'a' * 100_000} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()),
        RawCase("http-1.0", f"POST {CMPL} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n"
                .encode() + body),
    ]
