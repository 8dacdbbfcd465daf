"""The simulator's /metrics: the engine's own names and types, on a per-server registry.

Names come from the engine adapter (`adapter.metric_names`), so `adapter.endpoint_metrics`
reads back exactly what is exported here. Every engine series carries `model_name`, as both
engines label theirs. `llmd_sim_*` series are the simulator's own: event-loop lag, injected
failures, KV-event batches by outcome, and the P/D view tests read (prompt tokens computed here
vs KV tokens transferred, blocks held for a decode peer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from llmd.engines import MetricNames, PdProtocol

__all__ = ["LoadState", "SimMetrics"]

# vLLM's buckets for TTFT; reused for every latency histogram so both dialects compare.
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                    5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class LoadState(Protocol):
    """What the gauges read at scrape time."""

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    def kv_usage(self) -> float: ...


class SimMetrics:
    """Engine-named metrics for one simulated server. Counters count tokens, as the engines do."""

    def __init__(self, registry: CollectorRegistry, names: MetricNames, model: str,
                 block_size: int, num_blocks: int, pd: PdProtocol | None = None) -> None:
        self.registry = registry
        label = ("model_name",)
        self._model = model
        self._gauges = {
            attr: Gauge(getattr(names, attr), f"simulated {attr}", label, registry=registry)
            for attr in ("waiting", "running", "kv_usage")
        }
        info = Gauge(names.cache_config_info, "KV cache configuration (value 1)",
                     [*label, names.block_size_label, names.num_blocks_label], registry=registry)
        info.labels(model, str(block_size), str(num_blocks)).set(1)
        counters: dict[str, Counter] = {}

        def counter(name: str, extra: tuple[tuple[str, str], ...] = ()) -> Counter:
            # SGLang's prefix-cache query counter *is* its prompt-token counter: declare it once.
            if name not in counters:
                labels = [*label, *(k for k, _ in extra)]
                counters[name] = Counter(name, f"simulated {name}", labels, registry=registry)
            return counters[name]

        hit_labels = dict(names.prefix_hits_labels)
        self._hits = counter(names.prefix_hits, names.prefix_hits_labels).labels(
            model_name=model, **hit_labels)
        self._queries = counter(names.prefix_queries).labels(model)
        self._prompt = counter(names.prompt_tokens).labels(model)
        self._generation = counter(names.generation_tokens).labels(model)
        self._success = counter(names.request_success).labels(model)
        self._same_prompt_queries = names.prefix_queries == names.prompt_tokens

        def histogram(name: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, f"simulated {name}", label, buckets=buckets, registry=registry)

        self.ttft = histogram(names.ttft).labels(model)
        self.itl = histogram(names.itl).labels(model)
        self.e2e = histogram(names.e2e).labels(model)
        self.queue_time = histogram(names.queue_time).labels(model)
        self.prefill_time = (histogram(names.prefill_time).labels(model)
                             if names.prefill_time else None)
        self._computed = Counter("llmd_sim_prompt_tokens_computed",
                                 "prompt tokens this server prefilled itself", label,
                                 registry=registry).labels(model)
        transfer = Counter("llmd_sim_kv_transfer_tokens",
                           "prompt tokens whose KV moved between P/D servers",
                           [*label, "direction"], registry=registry)
        self._sent = transfer.labels(model, "sent")
        self._received = transfer.labels(model, "received")
        self._misses = Counter(names.pd_transfer_misses or "llmd_sim_kv_transfer_failures",
                               "decode legs whose KV transfer failed (prefilled locally)", label,
                               registry=registry).labels(model)
        self.injected_failures = Counter("llmd_sim_injected_failures",
                                         "requests failed by --failure-rate", registry=registry)
        self._held = Gauge("llmd_sim_kv_held_blocks", "blocks held for a decode peer",
                           registry=registry)
        self._pd_queues = {
            role: Gauge(name, f"simulated {role} P/D queue", label, registry=registry).labels(model)
            for role, name in (("prefill", pd and pd.prefill_queue),
                               ("transfer", pd and pd.transfer_queue)) if name
        }
        self._kv_batches = Counter("llmd_sim_kv_event_batches",
                                   "KV-event batches by outcome: published, dropped (the send "
                                   "queue was full: oldest first), failed (send error)",
                                   ["outcome"], registry=registry)
        self.loop_lag = Histogram("llmd_sim_event_loop_lag_seconds",
                                  "how late the simulator's event loop ran a 100 ms timer",
                                  buckets=_LAG_BUCKETS, registry=registry)

    def bind(self, state: LoadState) -> None:
        """Gauges read `state` at each scrape (no bookkeeping on the request path)."""
        m = self._model
        self._gauges["waiting"].labels(m).set_function(lambda: state.num_waiting)
        self._gauges["running"].labels(m).set_function(lambda: state.num_running)
        self._gauges["kv_usage"].labels(m).set_function(state.kv_usage)

    def on_prefill(self, prompt_tokens: int, cached_tokens: int) -> None:
        self._prompt.inc(prompt_tokens)
        if not self._same_prompt_queries:
            self._queries.inc(prompt_tokens)
        self._hits.inc(cached_tokens)

    def bind_pd(self, held_blocks: Callable[[], int], prefill_queue: Callable[[], int],
                transfer_queue: Callable[[], int]) -> None:
        """P/D gauges read the protocol's state at each scrape (engine names where it has them)."""
        self._held.set_function(held_blocks)
        for role, fn in (("prefill", prefill_queue), ("transfer", transfer_queue)):
            if role in self._pd_queues:
                self._pd_queues[role].set_function(fn)

    def on_computed(self, tokens: int) -> None:
        self._computed.inc(tokens)

    def on_transfer(self, *, sent: int = 0, received: int = 0) -> None:
        self._sent.inc(sent)
        self._received.inc(received)

    def on_transfer_miss(self) -> None:
        self._misses.inc()

    def on_tokens(self, n: int) -> None:
        self._generation.inc(n)

    def on_success(self) -> None:
        self._success.inc()

    def on_batch(self, outcome: str) -> None:
        """One KV-event batch `published`, `dropped` or `failed`."""
        self._kv_batches.labels(outcome).inc()
