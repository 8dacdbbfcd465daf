"""What a P/D connector gets per request, and the interface it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from aiohttp import web
from multidict import CIMultiDict

from llmd.sidecar.hostport import HostPort
from llmd.sidecar.upstream import Upstream

__all__ = ["Connector", "PdRequest"]


@dataclass(slots=True)
class PdRequest:
    """One client request that the EPP asked to disaggregate."""

    http: web.Request
    path: str
    body: dict[str, Any]
    headers: CIMultiDict[str]
    prefill: HostPort
    upstream: Upstream


class Connector(Protocol):
    """One engine's P/D protocol, run by the sidecar in the decode pod."""

    name: ClassVar[str]

    async def run(self, req: PdRequest) -> web.StreamResponse: ...
