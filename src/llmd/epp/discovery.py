"""Where the pool's endpoints come from.

A `Discovery` is an async iterator of complete endpoint sets: each item replaces the previous
one. That is what a Kubernetes watch of the InferencePool's pods produces too (on every pod
event: the ready pods matching the selector × the pool's target ports), so a
`discovery_k8s.KubernetesDiscovery` only has to implement `updates()`.

`StaticDiscovery` serves a fixed set from `--endpoint` flags or a YAML file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

import yaml
from pydantic import Field, ValidationError

from llmd.config import LlmdModel, config_error
from llmd.engines import ENGINE_TYPE_LABEL, ENGINES, ROLE_LABEL
from llmd.epp.datastore import EndpointSpec
from llmd.errors import ConfigError

__all__ = ["Discovery", "StaticDiscovery", "load_endpoints_file", "parse_endpoint_flag"]

ROLES = ("both", "decode", "prefill", "encode", "encode-prefill", "prefill-decode",
         "encode-prefill-decode")


class Discovery(Protocol):
    """A source of endpoint sets for the datastore."""

    def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        """Yield the full current endpoint set, then again after every change, until `stop`.

        Raise (do not yield an empty set) when the source itself fails: an empty pool answers
        every request with 503, a failed watch should restart the EPP.
        """
        ...


class StaticDiscovery:
    """A fixed endpoint set: yields it once, then waits for `stop`."""

    def __init__(self, endpoints: Iterable[EndpointSpec]) -> None:
        self.endpoints = tuple(endpoints)
        seen: set[str] = set()
        for ep in self.endpoints:
            if ep.id in seen:
                raise ConfigError(f"endpoint {ep.id} is listed twice")
            seen.add(ep.id)

    async def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        yield self.endpoints
        await stop.wait()


class _EndpointEntry(LlmdModel):
    """One endpoint; `name`/`namespace` as llm-d's `file-discovery` files give them (the port
    may be a string there)."""

    address: str = Field(min_length=1)
    port: int = Field(gt=0, lt=65536)
    labels: dict[str, str] = Field(default_factory=dict)
    name: str | None = Field(default=None, min_length=1)
    namespace: str = Field(default="default", min_length=1)


class _EndpointsFile(LlmdModel):
    endpoints: list[_EndpointEntry]


def parse_endpoint_flag(value: str) -> EndpointSpec:
    """`ip:port[,engine=sglang][,role=decode][,label.key=value]...` → an EndpointSpec.

    `engine` and `role` are shorthands for the `llm-d.ai/engine-type` and `llm-d.ai/role` labels;
    any other `key=value` is a label as written. IPv6 addresses go in brackets: `[::1]:8000`.
    """
    head, *opts = [p.strip() for p in value.split(",")]
    address, port = _host_port(head, value)
    labels: dict[str, str] = {}
    for opt in opts:
        key, sep, val = opt.partition("=")
        if not sep or not key:
            raise ConfigError(f"--endpoint {value!r}: {opt!r} is not key=value")
        labels[{"engine": ENGINE_TYPE_LABEL, "role": ROLE_LABEL}.get(key, key)] = val
    _check_labels(labels, f"--endpoint {value!r}")
    return EndpointSpec(address, port, MappingProxyType(labels))


def load_endpoints_file(path: Path) -> list[EndpointSpec]:
    """Read `endpoints: [{address, port, labels, name, namespace}]` from a YAML (or JSON)
    file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read endpoints file: {exc}") from exc
    try:
        parsed = _EndpointsFile.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, str(path)) from exc
    out = []
    for i, entry in enumerate(parsed.endpoints):
        _check_labels(entry.labels, f"{path}: endpoints[{i}].labels")
        name = f"{entry.namespace}/{entry.name}" if entry.name else None
        out.append(EndpointSpec(entry.address, entry.port, MappingProxyType(dict(entry.labels)),
                                name))
    return out


def _host_port(text: str, whole: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--endpoint {whole!r}: expected ip:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--endpoint {whole!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"--endpoint {whole!r}: port {number} is out of range")
    return host, number


def _check_labels(labels: Mapping[str, str], where: str) -> None:
    engine = labels.get(ENGINE_TYPE_LABEL)
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"{where}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    role = labels.get(ROLE_LABEL)
    if role is not None and role not in ROLES:
        raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
