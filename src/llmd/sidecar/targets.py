"""`x-prefiller-host-port`: a comma-separated, best-first list of prefill candidates.

Every entry must be `host:port` or `[v6]:port` (see `hostport`); one malformed entry makes the
whole header a 400, so garbage is never half-used. Empty entries (a trailing comma) are
skipped and repeats dropped. With sampling (`--enable-prefiller-sampling`, as llm-d's sidecar
picks a random host), a random candidate goes first and the others follow in list order.
"""

from __future__ import annotations

import random

from llmd.sidecar.hostport import HostPort, parse_host_port

__all__ = ["PREFILLER_HEADER", "parse_candidates"]

PREFILLER_HEADER = "x-prefiller-host-port"
_RNG = random.Random()


def parse_candidates(header: str, *, sample: bool = False,
                     rng: random.Random | None = None) -> list[HostPort]:
    """The candidates in the order to try them; ValueError naming the bad entry."""
    entries = [e.strip() for e in header.split(",")]
    numbered = len(entries) > 1
    out: list[HostPort] = []
    for i, entry in enumerate(entries):
        if not entry:
            continue
        try:
            target = parse_host_port(entry)
        except ValueError as exc:
            raise ValueError(f"entry {i + 1}: {exc}" if numbered else str(exc)) from None
        if target not in out:
            out.append(target)
    if not out:
        raise ValueError("no prefill host given")
    if sample and len(out) > 1:
        first = (rng or _RNG).randrange(len(out))
        out.insert(0, out.pop(first))
    return out
