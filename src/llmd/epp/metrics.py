"""The EPP's Prometheus metrics, on a registry passed in (never the global one)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from llmd.epp.datastore import Datastore

__all__ = ["FLOW_OUTCOMES", "OUTCOMES", "SYNC_DROP_REASONS", "EppMetrics", "FlowControlMetrics",
           "PoolCollector", "SyncMetrics"]

OUTCOMES = ("routed", "shed", "overloaded", "no_endpoint", "bad_request", "error")

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class EppMetrics:
    """`endpoint` labels are pool endpoints (bounded by the datastore); `outcome` is one of
    routed, shed (a sheddable request met a saturated pool), overloaded (the EPP was over its
    bound of undecided ext_proc streams; endpoint ""), no_endpoint, bad_request, error."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "llmd_epp_decisions_total", "Scheduling decisions by endpoint and outcome",
            ["endpoint", "outcome"], registry=registry,
        )
        self.decision_seconds = Histogram(
            "llmd_epp_decision_duration_seconds", "Time from full request body to decision",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.scrape_errors = Counter(
            "llmd_epp_scrape_errors_total", "Failed /metrics scrapes by endpoint",
            ["endpoint"], registry=registry,
        )
        self.endpoints = Gauge(
            "llmd_epp_pool_endpoints", "Endpoints in the pool", registry=registry,
        )
        self.plugin_seconds = Histogram(
            "llmd_epp_plugin_duration_seconds", "Time spent in each configured plugin per call",
            ["plugin"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self._plugin_children: dict[str, Histogram] = {}
        self.health_transitions = Counter(
            "llmd_epp_endpoint_health_transitions_total",
            "Endpoints entering (healthy) or leaving (unhealthy) scheduling",
            ["endpoint", "state"], registry=registry,
        )
        self.pending_streams = Gauge(
            "llmd_epp_extproc_pending_streams",
            "ext_proc streams opened and not yet decided (above the bound the EPP sheds)",
            registry=registry,
        )
        self.saturation = Gauge(
            "llmd_epp_pool_saturation_ratio", "Pool saturation at the last decision",
            registry=registry,
        )

    def observe_plugin(self, plugin: str, seconds: float) -> None:
        """A `PluginTimer`: plugin names come from the config, so the label set is bounded."""
        child = self._plugin_children.get(plugin)
        if child is None:
            child = self._plugin_children[plugin] = self.plugin_seconds.labels(plugin)
        child.observe(seconds)

    def forget_endpoint(self, endpoint: str) -> None:
        """Drop the series of an endpoint that left the pool (label sets stay bounded)."""
        for outcome in OUTCOMES:
            with contextlib.suppress(KeyError):
                self.decisions.remove(endpoint, outcome)
        with contextlib.suppress(KeyError):
            self.scrape_errors.remove(endpoint)
        for state in ("healthy", "unhealthy"):
            with contextlib.suppress(KeyError):
                self.health_transitions.remove(endpoint, state)


FLOW_OUTCOMES = ("Dispatched", "RejectedCapacity", "RejectedNoEndpoints", "EvictedTTL",
                 "EvictedNoEndpoints", "EvictedContextCancelled", "EvictedOther")
"""llm-d's `QueueOutcome` names (`pkg/epp/flowcontrol/types/outcomes.go`), the `outcome` label."""

_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0, 30.0, 60.0)


class FlowControlMetrics:
    """Flow control's metrics (only with the `flowControl` feature gate), under llm-d's names
    (`pkg/epp/metrics`, renamed from `inference_extension_*` in llm-d #1880):

    - `llm_d_epp_flow_control_queue_size{priority}`: requests waiting in the queue;
    - `llm_d_epp_flow_control_queue_bytes{priority}`: their body bytes;
    - `llm_d_epp_flow_control_request_queue_duration_seconds{priority,outcome}`: time from
      arrival at flow control to its outcome (llm-d's buckets), one observation per request,
      so its `_count` by `outcome` counts dispatches and each kind of rejection;
    - `llm_d_epp_flow_control_pool_saturation`: the detector's value at the last check.

    llm-d also labels them with `fairness_id`, `inference_pool` and the model names; llmd does
    not, because fairness ids and model names are client-supplied (unbounded label sets) and one
    EPP serves one pool. `priority` is bounded by the configured objectives.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_size = Gauge("llm_d_epp_flow_control_queue_size", "Requests waiting in "
                                "flow control", ["priority"], registry=registry)
        self.queue_bytes = Gauge("llm_d_epp_flow_control_queue_bytes", "Bytes of the requests "
                                 "waiting in flow control", ["priority"], registry=registry)
        self.queue_duration = Histogram(
            "llm_d_epp_flow_control_request_queue_duration_seconds", "Time from a request's "
            "arrival at flow control to its outcome", ["priority", "outcome"],
            buckets=_QUEUE_BUCKETS, registry=registry)
        self.pool_saturation = Gauge("llm_d_epp_flow_control_pool_saturation", "Pool "
                                     "saturation at flow control's last check (>= 1: "
                                     "saturated)", registry=registry)


SYNC_DROP_REASONS = ("garbage", "version", "malformed", "too_large", "overflow",
                     "unknown_producer")
"""Why a replica-sync frame (or, for `overflow`, an outgoing record) was dropped."""

_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SyncMetrics:
    """The replica sync (`dataLayer.crossReplica`): `direction` is sent or received."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("llmd_epp_sync_messages_total", "Replica-sync frames",
                                ["direction"], registry=registry)
        self.bytes = Counter("llmd_epp_sync_bytes_total", "Replica-sync frame bytes",
                             ["direction"], registry=registry)
        self.dropped = Counter("llmd_epp_sync_dropped_total", "Replica-sync frames dropped "
                               "(garbage, version, malformed, too_large, unknown_producer) "
                               "and outgoing records dropped (overflow)", ["reason"],
                               registry=registry)
        for reason in SYNC_DROP_REASONS:
            self.dropped.labels(reason)
        self.peers = Gauge("llmd_epp_sync_peers", "Peer replicas heard from within the "
                           "expiry", registry=registry)
        self.addresses = Gauge("llmd_epp_sync_peer_addresses", "Peer sync sockets this "
                               "replica subscribes to", registry=registry)
        self.peer_inflight = Gauge("llmd_epp_sync_peer_inflight_requests", "Requests the "
                                   "peers report in flight (summed over endpoints)",
                                   registry=registry)
        self.apply_lag = Histogram("llmd_epp_sync_apply_lag_seconds", "From a peer's send "
                                   "(its wall clock) to applying the frame here",
                                   buckets=_LAG_BUCKETS, registry=registry)
        self.caught_up = Gauge("llmd_epp_sync_caught_up", "1 once the start-up catch-up "
                               "(peers' snapshots) ended", registry=registry)


class PoolCollector(Collector):
    """Per-endpoint gauges of what the scraper last saw, read from the datastore when /metrics
    is scraped (nothing on the request path): `llmd_epp_endpoint_waiting_requests`,
    `..._running_requests`, `..._kv_usage_ratio`, `..._metrics_age_seconds` (+Inf before the
    first good scrape) and `..._healthy` (1 or 0), labelled by endpoint. Like GIE's
    `inference_pool_per_pod_queue_size`."""

    def __init__(self, store: Datastore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.clock = store, clock

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"llmd_epp_endpoint_{name}", doc, labels=["endpoint"])

        families = {
            "waiting": gauge("waiting_requests", "Waiting requests at the last scrape"),
            "running": gauge("running_requests", "Running requests at the last scrape"),
            "kv": gauge("kv_usage_ratio", "KV-cache usage (0-1) at the last scrape"),
            "age": gauge("metrics_age_seconds", "Seconds since the last good scrape"),
            "healthy": gauge("healthy", "1 while the endpoint is a scheduling candidate, 0 "
                                        "while its scrapes fail (refused, or stale)"),
        }
        now = self.clock()
        for ep in self.store.endpoints():
            families["waiting"].add_metric([ep.id], ep.metrics.waiting)
            families["running"].add_metric([ep.id], ep.metrics.running)
            families["kv"].add_metric([ep.id], ep.metrics.kv_usage)
            families["age"].add_metric([ep.id], ep.age_s(now))
            families["healthy"].add_metric([ep.id], 1.0 if ep.healthy else 0.0)
        yield from families.values()
