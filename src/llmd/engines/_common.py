"""Parsing and argv helpers shared by the engine modules (engine-neutral, driven by names)."""

from __future__ import annotations

from collections.abc import Mapping

from llmd.engines.base import (
    EndpointMetrics,
    LoraState,
    MetricNames,
    PrefillCounters,
    ServerAnswers,
)
from llmd.engines.page import MetricsPage

MODELS_ROUTE = "/v1/models"


def scraped_families(names: MetricNames) -> tuple[str, ...]:
    """The metric families `metrics_from_page` reads; the scraper parses only these."""
    wanted = [
        names.waiting,
        names.running,
        names.kv_usage,
        names.cache_config_info,
        names.prefix_hits,
        names.prefix_queries,
    ]
    wanted += [n for n in (names.kv_usage_fallback, names.lora_info) if n]
    return tuple(wanted)


def metrics_from_page(page: MetricsPage, names: MetricNames) -> EndpointMetrics:
    """Read the engine-neutral fields out of a page through the engine's names."""
    kv = page.mean(names.kv_usage)
    if kv is None and names.kv_usage_fallback:
        kv = page.mean(names.kv_usage_fallback)
    info = page.labels(names.cache_config_info) or {}
    return EndpointMetrics(
        waiting=int(page.total(names.waiting) or 0),
        running=int(page.total(names.running) or 0),
        kv_usage=min(max(kv or 0.0, 0.0), 1.0),
        block_size=_int_label(info, names.block_size_label),
        total_blocks=_int_label(info, names.num_blocks_label),
        lora=_lora(page, names.lora_info) if names.lora_info else None,
        prefix_cache_hits=page.total(names.prefix_hits + "_total", names.prefix_hits_labels),
        prefix_cache_queries=page.total(names.prefix_queries + "_total"),
    )


def prefill_from_page(page: MetricsPage, names: MetricNames) -> PrefillCounters | None:
    """Prompt tokens, cached tokens and prefill seconds through the engine's names: its
    prefill-time histogram when it has one, else TTFT minus queue time (both histograms)."""
    prompt = page.total(names.prompt_tokens + "_total")
    if prompt is None:
        return None
    cached = page.total(names.prefix_hits + "_total", names.prefix_hits_labels) or 0.0
    if names.prefill_time and page.has(names.prefill_time + "_sum"):
        seconds = page.total(names.prefill_time + "_sum")
        requests = page.total(names.prefill_time + "_count")
    else:
        seconds = page.total(names.ttft + "_sum")
        requests = page.total(names.ttft + "_count")
        queued = page.total(names.queue_time + "_sum")
        if seconds is not None and queued is not None:
            seconds -= queued
    if seconds is None or requests is None:
        return None
    return PrefillCounters(prompt, cached, max(seconds, 0.0), requests)


def _int_label(labels: dict[str, str] | object, key: str) -> int | None:
    raw = labels.get(key) if isinstance(labels, dict) else None
    try:
        return int(float(raw)) if raw not in (None, "", "None") else None
    except ValueError:
        return None


def _lora(page: MetricsPage, name: str) -> LoraState | None:
    rows = page.samples.get(name)
    if not rows:
        return None
    # vLLM emits one series per state change, valued by its timestamp: the newest one is current.
    labels, _ = max(rows, key=lambda row: row[1])
    return LoraState(
        max_lora=_int_label(dict(labels), "max_lora") or 0,
        running=_split(labels.get("running_lora_adapters", "")),
        waiting=_split(labels.get("waiting_lora_adapters", "")),
    )


def _split(csv: str) -> tuple[str, ...]:
    return tuple(a for a in (p.strip() for p in csv.split(",")) if a)


def has_flag(args: tuple[str, ...] | list[str], flag: str) -> bool:
    """True when the user already passes `flag` (as `--flag v` or `--flag=v`)."""
    return any(a == flag or a.startswith(flag + "=") for a in args)


def recognize(answers: ServerAnswers, owner: str, names: MetricNames,
              routes: Mapping[str, str]) -> tuple[str, ...]:
    """The signs of one engine in a server's answers: `/v1/models` cards `owned_by` `owner`,
    metric names with the engine's prefix (that of `names.waiting`), and `routes` (route → a
    key its JSON body has) that answered."""
    why: list[str] = []
    body = answers.json.get(MODELS_ROUTE)
    cards = body.get("data") if isinstance(body, dict) else None
    if isinstance(cards, list) and any(isinstance(c, dict) and c.get("owned_by") == owner
                                       for c in cards):
        why.append(f"{MODELS_ROUTE} owned_by {owner!r}")
    prefix = names.waiting.partition(":")[0] + ":"
    if any(name.startswith(prefix) for name in answers.metric_families):
        why.append(f"/metrics has {prefix}*")
    for route, key in routes.items():
        route_body = answers.json.get(route)
        if isinstance(route_body, dict) and key in route_body:
            why.append(f"{route} answers")
    return tuple(why)
