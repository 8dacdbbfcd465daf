"""KV-cache events: the parts every engine shares and the protocol each engine's dialect follows.

Both engines publish on a ZMQ PUB socket configured by `--kv-events-config` JSON: 3 frames per
batch (topic, 8-byte big-endian sequence number, msgpack `[ts, events, dp_rank]`), events tagged
maps (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`), an optional replay ROUTER. What
differs (the config keys, which endpoints bind, which rank publishes, the block hash and how it
is truncated, the fields of each event, the older positional field order) is a
`KvEventsDialect`, one per engine (`adapter.kv_events`). Its methods are pure.

A consumer uses a dialect to subscribe (`subscribe`: the PUB binds, so connect; or connects,
so bind) and hands it to `llmd.kvcache.decode_message`, which needs only `hash_form`,
`stored_fields` and `removed_fields`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from llmd.config import config_error
from llmd.errors import ConfigError

__all__ = [
    "DEFAULT_KV_EVENTS_PORT",
    "EngineBlockHasher",
    "HashForm",
    "KvEventsDialect",
    "KvEventsSettings",
    "SubscribeSpec",
    "kv_topic",
    "load_kv_events_config",
    "offset_endpoint_port",
    "parse_kv_topic",
]

DEFAULT_KV_EVENTS_PORT = 5557
"""Both engines' default endpoint is `tcp://*:5557` (llm-d's convention too)."""

HashForm = Literal["low64", "high64-signed"]
"""How an engine turns its 32-byte block digest into the integer on the wire: `low64` (vLLM)
the last 8 bytes as an unsigned integer, `high64-signed` (SGLang) the first 8 bytes as a
signed int64."""

_TOPIC_PREFIX = "kv@"

_Config = TypeVar("_Config", bound=BaseModel)


def load_kv_events_config(raw: str | Mapping[str, Any], model: type[_Config]) -> _Config:
    """`--kv-events-config` JSON (or an already parsed object) validated by an engine's own
    config model; every problem a `ConfigError` naming the flag."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--kv-events-config: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("--kv-events-config: expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, "--kv-events-config") from None


class KvEventsSettings(BaseModel):
    """One engine's `--kv-events-config`, validated by that engine's own model, in neutral form.

    `enabled` is whether the engine publishes at all (vLLM: `enable_kv_cache_events` and
    publisher `zmq`; SGLang: publisher `zmq`). `bind` None leaves bind/connect to the endpoint
    rule (`KvEventsDialect.binds`). `max_queue_size` batches wait to be sent at most;
    `buffer_steps` batches are kept for replay; `hwm` is the PUB socket's ZMQ high-water mark
    (0: none). `hash_format` is SGLang's `format` (`dynamo` namespaces salted hashes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool
    endpoint: str
    replay_endpoint: str | None = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""
    bind: bool | None = None
    hash_format: str = "default"


@dataclass(frozen=True, slots=True)
class SubscribeSpec:
    """How a subscriber reaches one engine's PUB socket: `bind` its own `endpoint` (the engine
    connects to it) or connect to `endpoint` (the engine binds)."""

    bind: bool
    endpoint: str


class EngineBlockHasher(Protocol):
    """An engine's own block hash, exactly as the engine computes it.

    `digests` returns the full digests of the full blocks of `tokens` (a trailing partial block
    has none), chained from `parent` (the previous block's full digest; None: `tokens` starts
    the sequence, and `salt`, the request's `cache_salt`, applies to its first block). Feed the
    last digest back as `parent` to extend a chain without rehashing it. `event_hash` is the
    integer the engine publishes for a digest (`salt`: the chain's salt, for engines whose
    published value depends on it).
    """

    def digests(self, tokens: Sequence[int], block_size: int, parent: bytes | None = None,
                salt: str | None = None) -> list[bytes]: ...

    def event_hash(self, digest: bytes, salt: str | None = None) -> int: ...


class KvEventsDialect(Protocol):
    """Everything about one engine's KV events. Methods are pure."""

    hash_form: ClassVar[HashForm]
    stored_fields: ClassVar[tuple[str, ...]]
    """Field order of a positional (array-encoded) `BlockStored` after its tag, as the engine's
    older releases sent it; trailing fields may be missing."""
    removed_fields: ClassVar[tuple[str, ...]]
    default_endpoint: ClassVar[str]
    medium: ClassVar[str]
    """`medium` of the events for the device cache ("GPU", on CPU too)."""
    clears_on_start: ClassVar[bool]
    """The first batch of every publisher is `AllBlocksCleared` (SGLang: its cache's reset)."""
    removed_per_block: ClassVar[bool]
    """One `BlockRemoved` per evicted block (vLLM), or one per eviction (SGLang: per node)."""

    def parse_config(self, raw: str | Mapping[str, Any]) -> KvEventsSettings:
        """Validate `--kv-events-config` (JSON text or its object) with the engine's model.

        Raises `llmd.errors.ConfigError`, one line per problem naming its field.
        """
        ...

    def serve_config(self, endpoint: str, topic: str) -> dict[str, Any]:
        """The `--kv-events-config` object that makes the engine publish on `endpoint`."""
        ...

    def binds(self, settings: KvEventsSettings) -> bool:
        """Whether the engine's PUB socket binds its endpoint (else it connects)."""
        ...

    def subscribe(self, settings: KvEventsSettings, host: str) -> SubscribeSpec:
        """How to subscribe to the engine at `host` (a pod IP) publishing with `settings`."""
        ...

    def publisher_endpoint(self, settings: KvEventsSettings, *, dp_rank: int = 0,
                           tp_rank: int = 0, pp_rank: int = 0, cp_rank: int = 0,
                           dp_attention: bool = False) -> str | None:
        """The endpoint of the publisher of this rank, or None when the rank publishes nothing
        (its port raised by its data-parallel rank)."""
        ...

    def hasher(self, settings: KvEventsSettings, hash_seed: str | None = None
               ) -> EngineBlockHasher:
        """The engine's block hash under `settings` (`hash_seed`: the engine process's
        `PYTHONHASHSEED`, for engines whose hash reads it)."""
        ...

    def stored_event(self, hashes: Sequence[int], parent: int | None, token_ids: Sequence[int],
                     block_size: int, *, salt: str | None = None, first_block: bool = False
                     ) -> dict[str, Any]:
        """A `BlockStored` as the engine encodes it (`first_block`: the first hash is block 0
        of its sequence, where a salt applies)."""
        ...

    def removed_event(self, hashes: Sequence[int]) -> dict[str, Any]:
        ...

    def cleared_event(self) -> dict[str, Any]:
        ...

    def batch(self, ts: float, events: Sequence[dict[str, Any]], dp_rank: int = 0
              ) -> list[Any]:
        """The msgpack payload object of one batch."""
        ...


def kv_topic(host: str, port: int, model: str) -> str:
    """llm-d's topic `kv@<ip>:<port>@<model>`, the pod's address as the EPP names endpoints
    (an IPv6 address in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{_TOPIC_PREFIX}{host}:{port}@{model}"


def parse_kv_topic(topic: str) -> tuple[str, int, str] | None:
    """`(host, port, model)` of a `kv@<ip>:<port>@<model>` topic (IPv6 without brackets), or
    None when the topic does not follow the convention."""
    if not topic.startswith(_TOPIC_PREFIX):
        return None
    address, sep, model = topic[len(_TOPIC_PREFIX):].partition("@")
    host, colon, port = address.rpartition(":")
    if not sep or not model or not colon or not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    return (host, number, model) if number < 65536 else None


def offset_endpoint_port(endpoint: str, rank: int) -> str:
    """Both engines' `offset_endpoint_port`: a tcp port raised by `rank` (port 0 left to the
    OS), an inproc name suffixed `_dp<rank>`, anything else unchanged."""
    if rank == 0:
        return endpoint
    if "inproc" in endpoint:
        return f"{endpoint}_dp{rank}"
    if endpoint.startswith("tcp://") and ":" in endpoint[len("tcp://"):]:
        base, _, port = endpoint.rpartition(":")
        if port.isdigit() and int(port) != 0:
            return f"{base}:{int(port) + rank}"
    return endpoint


def subscribe_spec(endpoint: str, binds: bool, host: str) -> SubscribeSpec:
    """The subscriber's side of `endpoint`: connect to the pod at `host` when the engine binds
    (its wildcard host replaced), bind the same port on every interface when it connects."""
    if binds:
        if not endpoint.startswith("tcp://"):
            return SubscribeSpec(False, endpoint)
        _, _, port = endpoint.rpartition(":")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        shown = f"[{host}]" if literal is not None and literal.version == 6 else host
        return SubscribeSpec(False, f"tcp://{shown}:{port}")
    _, _, port = endpoint.rpartition(":")
    return SubscribeSpec(True, f"tcp://*:{port}")
