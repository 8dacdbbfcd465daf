"""SSRF protection: which prefill targets the sidecar may call."""

from __future__ import annotations

from collections.abc import Iterable

from llmd.sidecar.hostport import HostPort

__all__ = ["Allowlist"]


class Allowlist:
    """Hosts the sidecar may send prefill requests to (any port, as llm-d's allowlist).

    Static entries come from flags; `replace` lets a pool watcher keep it in step with the
    InferencePool's pods.
    """

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self._hosts = frozenset(h.strip("[]") for h in hosts)

    def replace(self, hosts: Iterable[str]) -> None:
        self._hosts = frozenset(h.strip("[]") for h in hosts)

    def allows(self, target: HostPort) -> bool:
        return target.host in self._hosts
