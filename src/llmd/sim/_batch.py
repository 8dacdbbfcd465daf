"""A batched `/v1/completions` request: one sequence per prompt, run side by side.

Each prompt is admitted, prefilled and decoded as its own sequence, as vLLM and SGLang schedule
a batch's prompts independently (so each has its own queue slot, KV blocks and prefix hits).
The answer merges them: non-streaming once all have finished; streaming as each step's chunk is
produced (events of different prompts interleave, told apart by `index`). A prompt that fails
(a 429 at admission) ends the whole request and cancels the others: before any byte is sent
its error is the answer; mid-stream it is an error event, then the tail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from llmd.errors import RequestError
from llmd.sim._pd import KV_SOURCE_HEADER
from llmd.sim.engine import Engine, Sequence
from llmd.sim.responses import Format, _dumps, sse

__all__ = ["run_batch"]

log = logging.getLogger(__name__)

Emit = Callable[[bytes], Awaitable[None]]


async def run_batch(request: web.Request, engine: Engine, seqs: list[Sequence], fmt: Format,
                    stream: bool) -> web.StreamResponse:
    """Run every prepared sequence of one request and answer them as one response."""
    headers = {KV_SOURCE_HEADER: "local"}
    if not stream:
        await _run_all(engine, seqs, fmt, None)
        return web.Response(text=_dumps(fmt.full(seqs)), content_type="application/json",
                            headers=headers)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache", **headers})
    await resp.prepare(request)
    lock = asyncio.Lock()

    async def emit(data: bytes) -> None:
        async with lock:
            await resp.write(data)

    try:
        head = fmt.head(seqs)
        if head:
            await resp.write(head)
        try:
            await _run_all(engine, seqs, fmt, emit)
            tail = fmt.tail(seqs)
        except RequestError as exc:  # headers are out: the error goes in the stream
            tail = sse(exc.body()) + fmt.tail(seqs)
        await resp.write(tail)
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("client went away mid-stream; %d sequences released", len(seqs))
    return resp


async def _run_all(engine: Engine, seqs: list[Sequence], fmt: Format,
                   emit: Emit | None) -> None:
    """Run the sequences concurrently; the first RequestError or disconnect ends them all."""
    try:
        async with asyncio.TaskGroup() as tg:
            for prompt, seq in enumerate(seqs):
                tg.create_task(_run_one(engine, prompt, seq, fmt, emit),
                               name=f"sim-prompt-{prompt}")
    except BaseExceptionGroup as group:
        for exc in _leaves(group):
            if isinstance(exc, RequestError | ConnectionResetError):
                raise exc from None
        raise


async def _run_one(engine: Engine, prompt: int, seq: Sequence, fmt: Format,
                   emit: Emit | None) -> None:
    async with engine.sequence(seq):
        await seq.prefill()
        while not seq.finished:
            events = await seq.step()
            if emit is not None:
                data = fmt.chunk(prompt, seq, events)
                if data:
                    await emit(data)


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
