"""Per-stage summaries: percentiles, throughput, cache-hit share, errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llmd.bench.loadgen import RequestResult

__all__ = ["StageSummary", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    data = sorted(values)
    k = (len(data) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


@dataclass(frozen=True, slots=True)
class StageSummary:
    system: str
    stage: str
    offered: float | None
    """Offered rate (req/s) for open loop, or concurrency for closed loop."""
    requests: int
    errors: int
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    cache_hit_share: float
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    itl_p90_s: float | None
    itl_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    e2e_mean_s: float | None
    arrival_rate: float | None = None
    """Requests sent / (last start - first start): the rate the stage really offered."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(system: str, stage: str, offered: float | None,
              results: Sequence[RequestResult]) -> StageSummary:
    ok = [r for r in results if r.error is None]
    if results:
        begin = min(r.start_s for r in results)
        end = max(r.start_s + r.e2e_s for r in results)
        duration = max(end - begin, 1e-9)
    else:
        duration = 0.0
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    itl = [r.itl_s for r in ok if r.itl_s is not None]
    e2e = [r.e2e_s for r in ok]
    prompt = sum(r.prompt_tokens for r in ok)
    return StageSummary(
        system=system, stage=stage, offered=offered, requests=len(results),
        errors=len(results) - len(ok), duration_s=duration,
        requests_per_s=len(ok) / duration if duration else 0.0,
        output_tokens_per_s=sum(r.output_tokens for r in ok) / duration if duration else 0.0,
        cache_hit_share=sum(r.cached_tokens for r in ok) / prompt if prompt else 0.0,
        ttft_p50_s=percentile(ttft, 50), ttft_p90_s=percentile(ttft, 90),
        ttft_p99_s=percentile(ttft, 99),
        itl_p50_s=percentile(itl, 50), itl_p90_s=percentile(itl, 90),
        itl_p99_s=percentile(itl, 99),
        e2e_p50_s=percentile(e2e, 50), e2e_p90_s=percentile(e2e, 90),
        e2e_p99_s=percentile(e2e, 99), e2e_mean_s=sum(e2e) / len(e2e) if e2e else None,
        arrival_rate=_arrival_rate(results),
    )


def _arrival_rate(results: Sequence[RequestResult]) -> float | None:
    if len(results) < 2:
        return None
    starts = [r.start_s for r in results]
    span = max(starts) - min(starts)
    return (len(results) - 1) / span if span > 0 else None
