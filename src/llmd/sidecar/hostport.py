"""Strict `host:port` parsing that survives IPv6 (llm-d's SGLang connector splits on ':').

A host is a canonical dotted-quad IPv4 address, an IPv6 address (bracketed when a port
follows; no zone id) or an RFC 1123 DNS name (letters, digits, '-' and '.', at most 253
characters). Anything else, `127.1`, `a b`, `user@host`, `http://x`, non-ASCII text, is
rejected rather than handed to a resolver that may read it differently. Hosts come back
normalized (IPs in canonical form, names lower-case), so the allowlist compares like with like.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["HostPort", "parse_host", "parse_host_port", "show", "split_host_port"]

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC = re.compile(r"[0-9.]+|.*\.[0-9]+")  # looks like an IPv4 address, or ends in a number


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    """Bare host: an IPv6 address carries no brackets here."""
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def netloc(self) -> str:
        """`host:port` for a URL (`[v6]:port` for IPv6)."""
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://{self.netloc()}{path}"


def show(text: str, limit: int = 64) -> str:
    """`text` quoted for an error message, cut to `limit` characters (a 4 KB host is not
    echoed whole)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def split_host_port(text: str) -> tuple[str, int | None]:
    """Parse `host:port`, `[v6]:port`, `[v6]`, bare `v6` or bare `host` (port None).

    Raises ValueError with a readable message naming the bad part.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty host:port")
    if not raw.isascii() or not raw.isprintable():
        raise ValueError(f"{show(text)} is not printable ASCII")
    if len(raw) > 253 + 6:  # a DNS name, ":" and a port
        raise ValueError(f"{show(text)} is too long ({len(raw)} characters)")
    if "/" in raw or "@" in raw:
        raise ValueError(f"{show(text)} is not host:port (no scheme, user or path)")
    port_text: str | None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"unbalanced '[' in {show(text)}")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"garbage after ']' in {show(text)}")
        port_text = rest[1:] if rest else None
        return _ipv6(host, text), _port(port_text, text)
    if raw.count(":") > 1:
        # More than one colon without brackets can only be a bare IPv6 address.
        return _ipv6(raw, text), None
    host, sep, port_text = raw.partition(":")
    return parse_host(host, text), _port(port_text if sep else None, text)


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """A prefill target: `host:port` or `[v6]:port`; without a port, `default_port` (or a
    ValueError when there is none)."""
    host, port = split_host_port(text)
    if port is None:
        if default_port is None:
            raise ValueError(f"no port in {show(text)}")
        port = default_port
    return HostPort(host, port)


def parse_host(host: str, text: str | None = None) -> str:
    """A bare host (IPv4, IPv6 or DNS name), normalized; ValueError otherwise."""
    where = f" in {show(text)}" if text is not None and text != host else ""
    if not host:
        raise ValueError(f"no host{where}")
    if ":" in host:
        return _ipv6(host, text or host)
    name = host.lower()
    if _NUMERIC.fullmatch(name):
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise ValueError(f"{show(host)}{where} is not a dotted-quad IPv4 address") from None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{show(host)}{where} is not an IP address or a DNS name")
    return name


def _ipv6(host: str, text: str) -> str:
    if "%" in host:
        raise ValueError(f"IPv6 zone ids are not accepted ({show(text)})")
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise ValueError(f"{show(host)} in {show(text)} is not an IPv6 address") from None


def _port(port_text: str | None, text: str) -> int | None:
    if port_text is None:
        return None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
            and 0 < int(port_text) < 65536):
        raise ValueError(f"bad port in {show(text)} (expected 1-65535)")
    return int(port_text)
