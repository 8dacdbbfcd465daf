"""`host:port` parsing that survives IPv6 (llm-d's SGLang connector splits on ':' and breaks)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["HostPort", "parse_host_port"]


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


def parse_host_port(text: str, default_port: int | None = None) -> HostPort:
    """Parse `host:port`, `[v6]:port`, bare `v6` or bare `host` (then `default_port`).

    Raises ValueError with a readable message on anything else.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty host:port")
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"unbalanced '[' in {text!r}")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"garbage after ']' in {text!r}")
        port_text = rest[1:] if rest else None
        _check_v6(host, text)
    elif raw.count(":") > 1:
        # More than one colon without brackets can only be a bare IPv6 address.
        host, port_text = raw, None
        _check_v6(host, text)
    elif ":" in raw:
        host, port_text = raw.split(":", 1)
    else:
        host, port_text = raw, None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"no port in {text!r}")
        return HostPort(host, default_port)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return HostPort(host, int(port_text))


def _check_v6(host: str, text: str) -> None:
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
