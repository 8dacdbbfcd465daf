"""What a P/D connector gets per request, and the interface it implements."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from aiohttp import web
from multidict import CIMultiDict

from llmd.sidecar.hostport import HostPort
from llmd.sidecar.upstream import LegResult, Upstream

__all__ = ["Connector", "PdRequest", "log_fallback"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PdRequest:
    """One client request that the EPP asked to disaggregate.

    `prefills`: the prefill candidates, allowed and in the order to try them (at least one).
    A connector moves to the next one only while nothing has reached the client and the
    current one was not reached (`LegResult.unreached`).
    """

    http: web.Request
    path: str
    body: dict[str, Any]
    headers: CIMultiDict[str]
    prefills: tuple[HostPort, ...]
    upstream: Upstream


class Connector(Protocol):
    """One engine's P/D protocol, run by the sidecar in the decode pod."""

    name: ClassVar[str]

    async def run(self, req: PdRequest) -> web.StreamResponse: ...


def log_fallback(req: PdRequest, attempt: int, result: LegResult) -> None:
    """Log at INFO that candidate `attempt` (0-based) was not reached and the next is tried."""
    log.info("prefill fallback %d/%d: %s not reached (%s); trying %s (x-request-id %s)",
             attempt + 1, len(req.prefills) - 1, req.prefills[attempt].netloc(),
             _reason(result), req.prefills[attempt + 1].netloc(),
             req.headers.get("x-request-id", "-"))


def _reason(result: LegResult) -> str:
    try:
        return str(result.payload["error"]["message"]).rsplit(": ", 1)[-1]
    except (KeyError, TypeError):
        return f"status {result.status}"
