"""The captured KV-event fixtures (../shared/fixtures/kv-events) and what produced them.

`expected_hashes` recomputes, with the engine adapters' own hashers, every block hash the
engine should have published for the token sequences its capture drove (vLLM: the requests'
prompt + output ids; SGLang: the scripted steps), as the fixtures' verify_hashes.py do.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd.engines import SGLangBlockHasher, get_adapter

VLLM_BLOCK = 32
SGLANG_PAGE = 64

# (engine, frames file, steps/requests file, SGLang hash format)
FRAME_FILES = [
    ("vllm", "vllm/frames.jsonl", "vllm/requests.jsonl", "default"),
    ("sglang", "sglang/frames.jsonl", "sglang/steps_default.jsonl", "default"),
    ("sglang", "sglang/frames_dynamo.jsonl", "sglang/steps_dynamo_rust.jsonl", "dynamo"),
    ("sglang", "sglang/frames_python_treecore.jsonl", "sglang/steps_default_python.jsonl",
     "default"),
]
REPLAY_FILES = [
    ("vllm", "vllm/replay.jsonl", "vllm/frames.jsonl"),
    ("sglang", "sglang/replay_default.jsonl", "sglang/frames.jsonl"),
    ("sglang", "sglang/replay_dynamo_rust.jsonl", "sglang/frames_dynamo.jsonl"),
    ("sglang", "sglang/replay_default_python.jsonl", "sglang/frames_python_treecore.jsonl"),
]


@dataclass(frozen=True)
class Expected:
    """One block the engine computed: its tokens and the published hash of its parent."""

    tokens: tuple[int, ...]
    parent: int | None


def lines(root: Path, name: str) -> list[dict[str, Any]]:
    with open(root / "fixtures" / "kv-events" / name) as f:
        return [json.loads(line) for line in f if line.strip()]


def frames_of(record: dict[str, Any]) -> list[bytes]:
    """A live record as the 3 frames a SUB socket received."""
    return [record["topic"].encode(), record["seq"].to_bytes(8, "big"),
            base64.b64decode(record["payload_b64"])]


def expected_hashes(engine: str, records: list[dict[str, Any]], hash_format: str
                    ) -> dict[int, Expected]:
    """Every published block hash the engine computed for `records`, by value."""
    out: dict[int, Expected] = {}
    dialect = get_adapter(engine).kv_events
    settings = dialect.parse_config({"publisher": "zmq", "enable_kv_cache_events": True}
                                    if engine == "vllm" else
                                    {"publisher": "zmq", "format": hash_format})
    hasher = dialect.hasher(settings)
    block = VLLM_BLOCK if engine == "vllm" else SGLANG_PAGE
    for rec in records:
        if engine == "vllm":
            if rec.get("prompt_token_ids") is None:
                continue
            tokens = list(rec["prompt_token_ids"]) + list(rec.get("output_token_ids") or [])
            salt = (rec.get("body") or {}).get("cache_salt")
            values = [hasher.event_hash(d, salt) for d in hasher.digests(tokens, block,
                                                                           salt=salt)]
        else:
            if "tokens" not in rec:
                continue
            tokens, salt = rec["tokens"], rec.get("cache_salt")
            values = [hasher.event_hash(d, salt) for d in hasher.digests(tokens, block,
                                                                           salt=salt)]
            # A LoRA's extra_key namespaces the chain: in the default format only when a LoRA
            # name is registered for it, in dynamo always.
            extra = rec.get("extra_key")
            if extra is not None and (hash_format == "dynamo" or rec.get("lora_name")):
                values = [SGLangBlockHasher.namespaced(v, extra_key=extra, cache_salt=None)
                          for v in values]
        for i, value in enumerate(values):
            out.setdefault(value, Expected(tuple(tokens[i * block:(i + 1) * block]),
                                           values[i - 1] if i else None))
    return out
