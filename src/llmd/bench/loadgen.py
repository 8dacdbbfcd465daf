"""Open-loop (Poisson) and closed-loop load against any OpenAI-compatible endpoint, streaming.

Every request records TTFT, mean inter-token latency, end-to-end latency, output and cached
tokens, or its error. Arrival times of an open-loop stage are drawn from a seeded RNG, so two
systems get the same schedule as well as the same requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import aiohttp

from llmd.bench.workload import BenchRequest

__all__ = ["RequestResult", "closed_loop", "open_loop", "send_one"]

Progress = Callable[[], None]
Targets = str | Sequence[str]
"""One base URL, or several that requests go to in turn (the client-side "direct" baseline)."""


def _rotation(targets: Targets) -> Iterator[str]:
    return itertools.cycle([targets] if isinstance(targets, str) else list(targets))


@dataclass(frozen=True, slots=True)
class RequestResult:
    id: int
    start_s: float
    ttft_s: float | None
    itl_s: float | None
    e2e_s: float
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    error: str | None = None
    served_by: str | None = None


async def send_one(session: aiohttp.ClientSession, base_url: str, model: str,
                   req: BenchRequest, timeout_s: float = 600.0,
                   headers: dict[str, str] | None = None) -> RequestResult:
    """Send one streaming request and time it from the client's side."""
    start = time.perf_counter()
    first: float | None = None
    last = start
    gaps: list[float] = []
    chunks = 0
    usage: dict[str, object] | None = None
    served_by = None
    url = base_url.rstrip("/") + req.path
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=req.body(model), headers=headers) as resp:
                served_by = resp.headers.get("x-llmd-served-by")
                if resp.status != 200:
                    text = (await resp.read())[:200].decode(errors="replace")
                    return _failed(req, start, f"HTTP {resp.status}: {text}", served_by)
                buf = b""
                async for piece in resp.content.iter_any():
                    buf += piece
                    while b"\n\n" in buf:
                        event, buf = buf.split(b"\n\n", 1)
                        if not event.startswith(b"data: ") or event == b"data: [DONE]":
                            continue
                        data = json.loads(event[6:])
                        if "error" in data:
                            return _failed(req, start, str(data["error"])[:200], served_by)
                        if data.get("usage"):
                            usage = data["usage"]
                        if _has_text(data):
                            now = time.perf_counter()
                            if first is None:
                                first = now
                            else:
                                gaps.append(now - last)
                            last = now
                            chunks += 1
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return _failed(req, start, f"{exc.__class__.__name__}: {exc}"[:200], served_by)
    end = time.perf_counter()
    details = (usage or {}).get("prompt_tokens_details") or {}
    output = int((usage or {}).get("completion_tokens") or chunks)  # type: ignore[call-overload]
    return RequestResult(
        id=req.id, start_s=start, ttft_s=None if first is None else first - start,
        itl_s=sum(gaps) / len(gaps) if gaps else None, e2e_s=end - start,
        prompt_tokens=int((usage or {}).get("prompt_tokens") or req.prompt_tokens),  # type: ignore[call-overload]
        output_tokens=output,
        cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        served_by=served_by,
    )


def _has_text(data: dict[str, object]) -> bool:
    for choice in data.get("choices") or ():  # type: ignore[attr-defined]
        delta = choice.get("delta") or {}
        if choice.get("text") or delta.get("content"):
            return True
    return False


def _failed(req: BenchRequest, start: float, error: str, served_by: str | None) -> RequestResult:
    return RequestResult(req.id, start, None, None, time.perf_counter() - start,
                         req.prompt_tokens, 0, 0, error, served_by)


async def open_loop(session: aiohttp.ClientSession, base_url: Targets, model: str,
                    requests: Sequence[BenchRequest], rate: float, seed: int = 0,
                    progress: Progress | None = None,
                    timeout_s: float = 600.0) -> list[RequestResult]:
    """Poisson arrivals at `rate` requests/s; each request starts on schedule regardless of
    how many are still running (open loop), so a slow system builds a queue, as in production."""
    rng = random.Random(seed)
    results: list[RequestResult] = []
    urls = _rotation(base_url)

    async def fire(req: BenchRequest, url: str) -> None:
        results.append(await send_one(session, url, model, req, timeout_s))
        if progress:
            progress()

    start = time.perf_counter()
    due = 0.0
    async with asyncio.TaskGroup() as tg:
        for req in requests:
            delay = start + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(fire(req, next(urls)), name=f"bench-req-{req.id}")
            due += rng.expovariate(rate)
    return sorted(results, key=lambda r: r.id)


async def closed_loop(session: aiohttp.ClientSession, base_url: Targets, model: str,
                      requests: Sequence[BenchRequest], concurrency: int,
                      progress: Progress | None = None,
                      timeout_s: float = 600.0) -> list[RequestResult]:
    """`concurrency` workers, each sending its next request as soon as the last one ends."""
    queue = list(reversed(requests))
    results: list[RequestResult] = []
    urls = _rotation(base_url)

    async def worker() -> None:
        while queue:
            results.append(await send_one(session, next(urls), model, queue.pop(), timeout_s))
            if progress:
                progress()

    async with asyncio.TaskGroup() as tg:
        for i in range(max(1, concurrency)):
            tg.create_task(worker(), name=f"bench-worker-{i}")
    return sorted(results, key=lambda r: r.id)
