"""The scraper follows the config's data layer: the source's path, the extractor's engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from _pages import serve_text

from llmd.engines import EndpointMetrics, get_adapter
from llmd.epp import Datastore, EndpointSpec, Scraper, ScrapeSettings, load_config
from llmd.errors import EngineError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"


@pytest.fixture
async def stats_server(engine: str) -> AsyncIterator[int]:
    """Serves `engine`'s metric page at /stats/prom only."""
    n = get_adapter(engine).metric_names
    page = (f"# TYPE {n.waiting} gauge\n{n.waiting} 7\n# TYPE {n.running} gauge\n"
            f"{n.running} 1\n# TYPE {n.kv_usage} gauge\n{n.kv_usage} 0.5\n")
    async with serve_text("/stats/prom", page) as port:
        yield port


def _settings(config: str) -> ScrapeSettings:
    metrics = load_config(text=HEAD + config).metrics
    assert metrics is not None
    return ScrapeSettings(path=metrics.source.path, scheme=metrics.source.scheme,
                          verify_tls=metrics.source.verify_tls,
                          engine_of=metrics.extractor.engine_of)


async def test_source_path_and_extractor_engine_label_drive_the_scrape(
    engine: str, stats_server: int
) -> None:
    """Labelled only under a custom engine label key, at a custom path: read with `engine`'s
    adapter at that path; the default /metrics is not served there."""
    spec = EndpointSpec("127.0.0.1", stats_server, {"acme/engine": engine})
    custom = _settings(
        "plugins:\n- {type: metrics-data-source, parameters: {path: /stats/prom}}\n"
        "- {type: core-metrics-extractor, parameters: {engineLabelKey: acme/engine}}\n")
    async with aiohttp.ClientSession() as session:
        got = await Scraper(Datastore(), session, custom).scrape_once(spec)
        assert got == EndpointMetrics(waiting=7, running=1, kv_usage=0.5)
        with pytest.raises(EngineError, match="/metrics: HTTP 404"):
            await Scraper(Datastore(), session, _settings("")).scrape_once(spec)
