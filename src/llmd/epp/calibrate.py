"""`llmd calibrate`: an endpoint's prefill throughput, measured from its own /metrics.

Both engines export cumulative prompt tokens, prefix-cache hits and per-request latency
histograms; the adapter of the endpoint's engine reads them (`EngineAdapter.prefill_counters`:
vLLM's prefill-time histogram, SGLang's TTFT minus queue time). Two pages taken around some
traffic give throughput = (prompt tokens − cached tokens) / prefill seconds, which is the
`peakPrefillThroughput` the affinity filter, the token-load scorer and the in-flight producer
take, per engine or per endpoint.

The traffic is either what the endpoint serves during `window_s` (passive, for a server in
use), or `probes` sequential completions of `probe_tokens` fresh (uncached) tokens with one
output token (active: an idle endpoint, nothing queued, so TTFT is prefill), like llm-d's
recipe that times an unloaded chunk of prompt.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from llmd.engines import ADAPTERS, MetricsPage, PrefillCounters, get_adapter
from llmd.errors import EngineError

__all__ = ["Calibration", "calibrate", "engine_of", "snippet"]


@dataclass(frozen=True, slots=True)
class Calibration:
    """One endpoint's measured prefill work over the window."""

    endpoint: str
    engine: str
    prompt_tokens: float
    cached_tokens: float
    prefill_seconds: float
    requests: float

    @property
    def throughput(self) -> float:
        """Uncached prompt tokens prefilled per second."""
        return (self.prompt_tokens - self.cached_tokens) / self.prefill_seconds

    def line(self) -> str:
        return (f"{self.endpoint} ({self.engine}): {self.requests:.0f} requests, "
                f"{self.prompt_tokens:.0f} prompt tokens ({self.cached_tokens:.0f} cached) in "
                f"{self.prefill_seconds:.3f} s of prefill: {self.throughput:,.0f} tok/s")


def engine_of(page_text: str) -> str:
    """The engine whose prompt-token counter the page carries."""
    page = MetricsPage.parse(page_text)
    found = [name for name, adapter in ADAPTERS.items()
             if page.has(adapter.metric_names.prompt_tokens + "_total")]
    if len(found) != 1:
        raise EngineError("cannot tell the engine from /metrics (found: "
                          f"{', '.join(found) or 'no known prompt-token counter'}); give "
                          "--engine")
    return found[0]


async def calibrate(session: aiohttp.ClientSession, url: str, *, engine: str | None = None,
                    probes: int = 8, probe_tokens: int = 4096, window_s: float = 30.0,
                    seed: int | None = None) -> Calibration:
    """Measure `url` (`http://host:port`): with `probes` > 0 send them, else watch `window_s`.
    EngineError when the endpoint cannot be read or did no prefill meanwhile."""
    url = url.rstrip("/")
    text = await _get(session, f"{url}/metrics")
    engine = engine or engine_of(text)
    adapter = get_adapter(engine)
    before = _counters(adapter.prefill_counters(MetricsPage.parse(text)), url, engine)
    if probes > 0:
        model, max_len = await _model(session, url)
        if max_len is not None:  # leave room for the output token and tokenizer slack
            probe_tokens = min(probe_tokens, int(max_len * 0.9))
        rng = random.Random(seed)
        for _ in range(probes):
            await _probe(session, url, model, probe_tokens, rng)
    else:
        await asyncio.sleep(window_s)
    after = _counters(adapter.prefill_counters(MetricsPage.parse(
        await _get(session, f"{url}/metrics"))), url, engine)
    result = Calibration(url, engine, after.prompt_tokens - before.prompt_tokens,
                         after.cached_tokens - before.cached_tokens,
                         after.prefill_seconds - before.prefill_seconds,
                         after.requests - before.requests)
    if result.requests <= 0 or result.prefill_seconds <= 0 \
            or result.prompt_tokens <= result.cached_tokens:
        raise EngineError(f"{url}: no uncached prefill in the window; send traffic during "
                          "it or use --probe N")
    return result


def snippet(results: Sequence[Calibration], *, per_endpoint: bool = False) -> str:
    """The `peakPrefillThroughput` lines: per engine (token-weighted over its endpoints), and
    per endpoint (`host:port`) when asked."""
    by_engine: dict[str, list[Calibration]] = {}
    for r in results:
        by_engine.setdefault(r.engine, []).append(r)
    engines = {e: _pooled(rs) for e, rs in sorted(by_engine.items())}
    lines = ["peakPrefillThroughput:", "  engines:"]
    lines += [f"    {e}: {v:.0f}" for e, v in engines.items()]
    if per_endpoint:
        lines.append("  endpoints:")
        lines += [f'    "{r.endpoint.split("://", 1)[-1]}": {r.throughput:.0f}' for r in results]
    return "\n".join(lines)


def _pooled(results: Sequence[Calibration]) -> float:
    tokens = sum(r.prompt_tokens - r.cached_tokens for r in results)
    return tokens / sum(r.prefill_seconds for r in results)


def _counters(counters: PrefillCounters | None, url: str, engine: str) -> PrefillCounters:
    if counters is None:
        raise EngineError(f"{url}/metrics has no {engine} prompt-token counter and prefill or "
                          "TTFT histogram (is it a " + engine + " server with metrics on?)")
    return counters


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise EngineError(f"{url}: HTTP {resp.status}")
            return await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EngineError(f"{url}: {exc or type(exc).__name__}") from exc


async def _model(session: aiohttp.ClientSession, url: str) -> tuple[str, int | None]:
    """The served model and its context length when listed (vLLM's `max_model_len`)."""
    try:
        card = json.loads(await _get(session, f"{url}/v1/models"))["data"][0]
        max_len = card.get("max_model_len")
        return str(card["id"]), int(max_len) if isinstance(max_len, int) else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EngineError(f"{url}/v1/models: no model listed") from exc


async def _probe(session: aiohttp.ClientSession, url: str, model: str, tokens: int,
                 rng: random.Random) -> None:
    # Fresh words from the first one on: nothing of it can be in the prefix cache.
    prompt = " ".join(f"w{rng.randrange(1 << 30)}" for _ in range(max(tokens // 2, 1)))
    body: Mapping[str, object] = {"model": model, "prompt": prompt, "max_tokens": 1,
                                  "temperature": 0}
    try:
        async with session.post(f"{url}/v1/completions", json=body) as resp:
            answer = await resp.read()
            if resp.status != 200:
                raise EngineError(f"{url}/v1/completions: HTTP {resp.status}: "
                                  f"{answer[:300].decode(errors='replace')}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EngineError(f"{url}/v1/completions: {exc or type(exc).__name__}") from exc
