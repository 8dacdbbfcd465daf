"""SSRF protection: which prefill targets the sidecar may call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from llmd.sidecar.hostport import HostPort

__all__ = ["Allowlist", "Verdict"]

Verdict = Literal["allow", "deny", "unsynced"]


class Allowlist:
    """Hosts the sidecar may send prefill requests to, on any port (as llm-d's allowlist).

    The static hosts (`--prefill-allow`) plus, when `pool` is given, the hosts of that
    InferencePool's pods, which a pool follower keeps current with `set_pool_hosts`. Until the
    pool's first listing arrives, a target outside the static hosts is `unsynced`, not `deny`:
    the sidecar answers 503 (retry later) rather than 403 (never allowed).
    """

    def __init__(self, hosts: Iterable[str] = (), *, pool: str | None = None) -> None:
        self._static = _hosts(hosts)
        self.pool = pool
        self._pool_hosts: frozenset[str] | None = None if pool else frozenset()
        self.last_error: str | None = None
        """The pool follower's last failure, or None once a listing succeeded."""

    @property
    def synced(self) -> bool:
        """Whether the pool's hosts are known (always true without a pool)."""
        return self._pool_hosts is not None

    def set_pool_hosts(self, hosts: Iterable[str]) -> None:
        self._pool_hosts = _hosts(hosts)
        self.last_error = None

    def pool_failed(self, reason: str) -> None:
        """Record a failed listing; hosts already known stay allowed until the next one."""
        self.last_error = reason

    def check(self, target: HostPort) -> Verdict:
        if target.host in self._static:
            return "allow"
        if self._pool_hosts is None:
            return "unsynced"
        return "allow" if target.host in self._pool_hosts else "deny"

    def allows(self, target: HostPort) -> bool:
        return self.check(target) == "allow"


def _hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().strip("[]") for h in hosts if h.strip())
