"""SSRF protection: which prefill targets (host *and* port) the sidecar may call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from llmd.sidecar.hostport import HostPort, parse_host, split_host_port

__all__ = ["Allowlist", "Verdict"]

Verdict = Literal["allow", "deny", "unsynced"]

_Target = tuple[str, int]


class Allowlist:
    """The `host:port` targets the sidecar may send prefill requests to.

    Static entries (`--prefill-allow`): `HOST:PORT` or `[v6]:PORT` allows exactly that target;
    a bare `HOST`, `v6` or `[v6]` allows that host on `known_ports` only (the sidecar passes
    llm-d's prefill port 8000 and its engine adapter's `default_port`), never on every port:
    the admin page of an Envoy or the metrics port of a pod on the same host stay out of reach.

    With `pool`, the pods of that InferencePool are allowed on the pool's target ports; a pool
    follower keeps them current with `set_pool`. Until the pool's first listing arrives, a
    target outside the static entries is `unsynced`, not `deny`: the sidecar answers 503
    (retry later) rather than 403 (never allowed).
    """

    def __init__(self, entries: Iterable[str] = (), *, known_ports: Iterable[int] = (),
                 pool: str | None = None) -> None:
        ports = tuple(known_ports)
        static: set[_Target] = set()
        for entry in entries:
            if not entry.strip():
                continue
            host, port = split_host_port(entry)
            static |= {(host, port)} if port is not None else {(host, p) for p in ports}
        self._static = frozenset(static)
        self.pool = pool
        self._pool: frozenset[_Target] | None = None if pool else frozenset()
        self.last_error: str | None = None
        """The pool follower's last failure, or None once a listing succeeded."""

    @property
    def synced(self) -> bool:
        """Whether the pool's pods are known (always true without a pool)."""
        return self._pool is not None

    def set_pool(self, hosts: Iterable[str], ports: Iterable[int]) -> None:
        """The pool's pods (IPs and names, as `pod_hosts` gives them) and its target ports."""
        port_list = tuple(ports)
        self._pool = frozenset((_normal(h), p) for h in hosts for p in port_list)
        self.last_error = None

    def pool_failed(self, reason: str) -> None:
        """Record a failed listing; targets already known stay allowed until the next one."""
        self.last_error = reason

    def check(self, target: HostPort) -> Verdict:
        key = (target.host, target.port)
        if key in self._static:
            return "allow"
        if self._pool is None:
            return "unsynced"
        return "allow" if key in self._pool else "deny"

    def allows(self, target: HostPort) -> bool:
        return self.check(target) == "allow"


def _normal(host: str) -> str:
    """A pod's IP or name in the form `parse_host_port` gives targets (canonical IPs,
    lower-case names); a value that is neither stays as it is and matches nothing."""
    try:
        return parse_host(host)
    except ValueError:
        return host
