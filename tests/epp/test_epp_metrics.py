"""The EPP's per-endpoint gauges: what the scraper last saw, read from the datastore."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client import CollectorRegistry, generate_latest

from llmd.engines import EndpointMetrics
from llmd.epp import Datastore, EndpointSpec
from llmd.epp.metrics import PoolCollector


def test_pool_collector_reports_the_last_scrape_per_endpoint() -> None:
    now = [100.0]
    store = Datastore(clock=lambda: now[0])
    store.set_endpoints([EndpointSpec("10.0.0.1", 8000, MappingProxyType({})),
                         EndpointSpec("10.0.0.2", 8000, MappingProxyType({}))])
    store.update_metrics("10.0.0.1:8000", EndpointMetrics(waiting=7, running=2, kv_usage=0.25))
    now[0] = 101.5
    registry = CollectorRegistry()
    registry.register(PoolCollector(store, clock=lambda: now[0]))
    text = generate_latest(registry).decode()
    assert 'llmd_epp_endpoint_waiting_requests{endpoint="10.0.0.1:8000"} 7.0' in text
    assert 'llmd_epp_endpoint_running_requests{endpoint="10.0.0.1:8000"} 2.0' in text
    assert 'llmd_epp_endpoint_kv_usage_ratio{endpoint="10.0.0.1:8000"} 0.25' in text
    assert 'llmd_epp_endpoint_metrics_age_seconds{endpoint="10.0.0.1:8000"} 1.5' in text
    assert 'llmd_epp_endpoint_metrics_age_seconds{endpoint="10.0.0.2:8000"} +Inf' in text
    store.set_endpoints([])
    assert "10.0.0.1" not in generate_latest(registry).decode()
