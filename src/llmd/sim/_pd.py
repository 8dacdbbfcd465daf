"""P/D legs in the simulator: which part of a disaggregated request this server plays.

A request is a `Leg`: `local` (the whole request here), a prefill leg (compute the prompt, answer
one token, hand the KV to a decode peer) or a decode leg (get the KV from a prefill peer instead
of computing it). Each engine's handshake (`adapter.pd.handoff`) has its own `PdSim`:
`_nixl.NixlSim` for vLLM's `kv_transfer_params`, `_bootstrap.BootstrapSim` for SGLang's
bootstrap rooms. Transfer failures raise the errors below, as OpenAI-style JSON.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

from aiohttp import web

from llmd.errors import RequestError
from llmd.sim.engine import Sequence

__all__ = [
    "KV_SOURCE_HEADER",
    "KvTransferError",
    "KvTransferTimeout",
    "LOCAL",
    "Leg",
    "LocalLeg",
    "PdSim",
    "Route",
    "RoomConflictError",
    "http_url",
]

KV_SOURCE_HEADER = "x-llmd-kv-source"
"""On every generation response: `local` (this server computed the prompt, possibly reusing its
own prefix cache) or `transfer` (the prompt's KV came from a prefill server)."""

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


class KvTransferError(RequestError):
    status = 500
    error_type = "InternalServerError"


class KvTransferTimeout(RequestError):
    status = 504
    error_type = "GatewayTimeout"


class RoomConflictError(RequestError):
    """Two requests claimed one bootstrap room: a broken router, never silently tolerated."""

    status = 409
    error_type = "ConflictError"


class Leg(Protocol):
    prefill_only: ClassVar[bool]
    """A prefill leg answers exactly one token (the prompt's first)."""

    async def start(self, seq: Sequence) -> str:
        """Fill the admitted sequence's prompt KV; returns the `KV_SOURCE_HEADER` value."""
        ...

    async def finish(self, seq: Sequence) -> dict[str, Any]:
        """After the last token: hand the KV over; returns fields added to the JSON answer."""
        ...

    def close(self) -> None:
        """Always called last (also on errors and disconnects): release claims."""
        ...


class LocalLeg:
    """The whole request on this server."""

    prefill_only: ClassVar[bool] = False

    async def start(self, seq: Sequence) -> str:
        await seq.prefill()
        return "local"

    async def finish(self, seq: Sequence) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


LOCAL = LocalLeg()


class PdSim(Protocol):
    """One engine's P/D handshake, simulated. Methods run on the server's event loop."""

    def leg(self, fields: Mapping[str, Any], stream: bool, path: str) -> Leg:
        """The leg a request plays, from its body's extra fields; BadRequestError if invalid."""
        ...

    def routes(self) -> list[Route]:
        """Internal routes on the main server (the stand-in for the engine's KV channel)."""
        ...

    def running(self, host: str, port: int) -> AbstractAsyncContextManager[dict[str, int]]:
        """Own the client session and side servers while the simulator, bound to host:port,
        serves; yields the side servers' ports by name (e.g. {"bootstrap": 8998})."""
        ...

    def held_blocks(self) -> int: ...

    def prefill_queue(self) -> int: ...

    def transfer_queue(self) -> int: ...


def http_url(host: str, port: int, path: str) -> str:
    """`http://host:port/path` with IPv6 hosts bracketed."""
    bare = host.strip("[]")
    netloc = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
    return f"http://{netloc}{path}"
