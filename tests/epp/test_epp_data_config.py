"""The loader's data-key checks: consumed keys need a producer, defaults, one producer per key,
producer order, and roles taken from the registry's declarations only."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from llmd.engines import EndpointMetrics
from llmd.epp import DataKey, EndpointSpec, load_config
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot
from llmd.epp.plugins import (
    PLUGINS,
    PREFIX_MATCH,
    NoParams,
    PluginRegistry,
    PrefixMatch,
    SchedulingResult,
)
from llmd.epp.plugins.registry import DATA_PRODUCER, FILTER, SCORER
from llmd.epp.request import InferenceRequest
from llmd.errors import ConfigError

HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"


def _error(tmp_path: Path, body: str, registry: PluginRegistry = PLUGINS) -> list[str]:
    path = tmp_path / "epp.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as err:
        load_config(path, registry=registry)
    return str(err.value).replace(str(tmp_path) + "/", "").splitlines()


def test_a_consumed_key_without_default_producer_names_consumer_and_producer_types(
    tmp_path: Path
) -> None:
    assert _error(tmp_path, "plugins:\n- type: queue-scorer\n- type: decode-engine-filter\n") == [
        "epp.yaml: plugins[1].type: 'decode-engine-filter' reads decode-pick, which no "
        "configured plugin produces (plugin types that produce it: disagg-profile-handler, "
        "pd-profile-handler)"]


def test_the_default_producer_is_added_once_and_a_declared_one_is_used() -> None:
    cfg = load_config(text=HEAD + "plugins:\n- type: prefix-cache-scorer\n"
                      "- type: no-hit-lru-scorer\n- type: prefix-based-pd-decider\n")
    assert [p.type for p in cfg.scheduler.producers] == ["approx-prefix-cache-producer"]
    cfg = load_config(text=HEAD + "plugins:\n- type: prefix-cache-scorer\n"
                      "- {name: idx, type: approx-prefix-cache-producer, "
                      "parameters: {blockSizeTokens: 8}}\n")
    assert [p.name for p in cfg.scheduler.producers] == ["idx"]
    assert "approx-prefix-cache-producer" not in cfg.plugins


def test_one_producer_per_key(tmp_path: Path) -> None:
    assert _error(tmp_path, "plugins:\n- {name: a, type: approx-prefix-cache-producer}\n"
                  "- {name: b, type: approx-prefix-cache-producer}\n") == [
        "epp.yaml: plugins[1].type: 'b' produces prefix-match, and so does 'a': llmd runs one "
        "producer per data key; keep one of them"]


def test_a_plugin_named_like_the_default_producer_is_an_error(tmp_path: Path) -> None:
    assert _error(tmp_path, "plugins:\n- type: prefix-cache-scorer\n"
                  "- {name: approx-prefix-cache-producer, type: queue-scorer}\n") == [
        "epp.yaml: plugins[1].name: 'approx-prefix-cache-producer' is the name the loader "
        "gives the approx-prefix-cache-producer it adds; name this queue-scorer plugin "
        "differently"]


def test_a_broken_producer_is_reported_once(tmp_path: Path) -> None:
    lines = _error(tmp_path, "plugins:\n- type: disagg-profile-handler\n"
                   "  parameters: {profiles: {decode: x, prefill: x}}\n"
                   "- type: decode-engine-filter\n")
    assert len(lines) == 1 and "decode and prefill must be different profiles" in lines[0]


# Fakes: a producer of a derived key that needs PREFIX_MATCH, and a filter that also has a
# pre_request method it is not declared for.
HOT = DataKey("hot-endpoints", frozenset)


class _HotProducer:
    type: ClassVar[str] = "hot-producer"
    produces: ClassVar[DataKeys] = (HOT,)
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH,)
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name

    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        match = request.state.require(PREFIX_MATCH, self.type)
        request.state.put(HOT, frozenset(e.id for e in pool.candidates if match.any_hit))


class _HotScorer:
    type: ClassVar[str] = "hot-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (HOT,)
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name
        self.hooked = 0

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> dict[EndpointId, float]:
        hot = request.state.require(HOT, self.type)
        return {e.id: float(e.id in hot) for e in pool.candidates}

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> list[Endpoint]:
        return list(pool.candidates)

    def pre_request(self, request: InferenceRequest, result: SchedulingResult,
                    pool: PoolSnapshot) -> None:
        self.hooked += 1


REGISTRY = PLUGINS.extend(DATA_PRODUCER.table(_HotProducer), SCORER.table(_HotScorer),
                          FILTER.table(_HotScorer))


def test_producers_run_in_dependency_order_and_roles_are_only_the_declared_ones() -> None:
    cfg = load_config(text=HEAD + "plugins:\n- type: hot-producer\n- type: hot-scorer\n"
                      "- type: approx-prefix-cache-producer\n", registry=REGISTRY)
    assert [p.type for p in cfg.scheduler.producers] == ["approx-prefix-cache-producer",
                                                         "hot-producer"]
    scorer = cfg.plugins["hot-scorer"]
    assert scorer not in cfg.scheduler.hooks  # has pre_request, but is not declared a hook
    r = InferenceRequest("r", model="m", prompt="hello")
    specs = [EndpointSpec("10.0.0.1", port) for port in (1, 2)]
    snapshot = PoolSnapshot(tuple(Endpoint(s.id, s, EndpointMetrics(), 0.0) for s in specs),
                            0.0, 0)
    assert cfg.scheduler.schedule(r, snapshot) is not None
    assert r.state.get(HOT) == frozenset()  # nothing cached yet: no endpoint is hot


def test_a_producers_own_needs_get_the_default_producer_too() -> None:
    cfg = load_config(text=HEAD + "plugins:\n- type: hot-scorer\n- type: hot-producer\n",
                      registry=REGISTRY)
    assert [p.type for p in cfg.scheduler.producers] == ["approx-prefix-cache-producer",
                                                         "hot-producer"]


def test_producers_that_need_each_other_are_an_error(tmp_path: Path) -> None:
    class _Cold(_HotProducer):
        type: ClassVar[str] = "cold-producer"
        produces: ClassVar[DataKeys] = (PREFIX_MATCH,)
        consumes: ClassVar[DataKeys] = (HOT,)

    registry = REGISTRY.extend(DATA_PRODUCER.table(_Cold))
    assert _error(tmp_path, "plugins:\n- type: hot-producer\n- type: cold-producer\n",
                  registry) == [
        "epp.yaml: plugins: data producers that need each other's data: hot-producer, "
        "cold-producer"]


# llm-d's prefixPluginName-style references.
PREFIX_SCORER = "- type: prefix-cache-scorer\n"


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(
        PREFIX_SCORER + "- type: no-hit-lru-scorer\n"
        "  parameters: {prefixPluginName: prefix-cach}\n",
        "epp.yaml: plugins[1].parameters.prefixPluginName: 'prefix-cach' is not defined (plugins "
        "that qualify: approx-prefix-cache-producer, prefix-cache-scorer; types: "
        "approx-prefix-cache-producer, no-hit-lru-scorer, precise-prefix-cache-producer, "
        "precise-prefix-cache-scorer, prefix-cache-scorer) (did you mean "
        "'prefix-cache-scorer'?)",
        id="name-not-defined-did-you-mean"),
    pytest.param(
        "- type: queue-scorer\n- type: no-hit-lru-scorer\n"
        "  parameters: {prefixPluginName: queue-scorer}\n",
        "epp.yaml: plugins[1].parameters.prefixPluginName: 'queue-scorer' is a queue-scorer "
        "plugin; it must be one that produces prefix-match or is a scorer that reads it (plugins "
        "that qualify: approx-prefix-cache-producer; types: ",
        id="name-of-an-unrelated-plugin"),
    pytest.param(
        PREFIX_SCORER + "- type: no-hit-lru-scorer\n  parameters: {prefixPluginName: "
        "prefix-cache-scorer, prefixPluginType: approx-prefix-cache-producer}\n",
        "epp.yaml: plugins[1].parameters.prefixPluginType: 'approx-prefix-cache-producer' is not "
        "the type of 'prefix-cache-scorer', a prefix-cache-scorer plugin",
        id="type-does-not-match-name"),
    pytest.param(
        "- type: no-hit-lru-scorer\n  parameters: {prefixPluginType: queue-scorer}\n",
        "epp.yaml: plugins[0].parameters.prefixPluginType: 'queue-scorer' is not a plugin type "
        "that produces prefix-match or is a scorer that reads it (types: "
        "approx-prefix-cache-producer, no-hit-lru-scorer, precise-prefix-cache-producer, "
        "precise-prefix-cache-scorer, prefix-cache-scorer)",
        id="type-alone-of-an-unrelated-type"),
    pytest.param(
        "- type: prefix-cache-scorer\n  parameters: {prefixMatchInfoProducerName: "
        "prefix-cache-scorer}\n",
        "epp.yaml: plugins[0].parameters.prefixMatchInfoProducerName: 'prefix-cache-scorer' is a "
        "prefix-cache-scorer plugin; it must be one that produces prefix-match (plugins that "
        "qualify: approx-prefix-cache-producer; types: approx-prefix-cache-producer, "
        "precise-prefix-cache-producer, precise-prefix-cache-scorer)",
        id="producer-name-must-be-a-producer"),
    pytest.param(
        "- type: pd-profile-handler\n  parameters: {prefixPluginName: prefix-cache-scorer}\n"
        "- type: prefix-based-pd-decider\n",
        "epp.yaml: plugins[0].parameters.prefixPluginName: 'prefix-cache-scorer' is not defined",
        id="pd-handler-name-not-declared"),
])
def test_producer_references_name_path_and_allowed(tmp_path: Path, body: str,
                                                    message: str) -> None:
    profiles = ("schedulingProfiles:\n- {name: decode, plugins: []}\n"
                "- {name: prefill, plugins: []}\n") if "pd-profile" in body else ""
    lines = _error(tmp_path, "plugins:\n" + body + profiles)
    assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.parametrize("body", [
    pytest.param(PREFIX_SCORER + "- type: no-hit-lru-scorer\n"
                 "  parameters: {prefixPluginName: prefix-cache-scorer, "
                 "prefixPluginType: prefix-cache-scorer}\n", id="llm-d-defaults-spelled-out"),
    pytest.param("- type: no-hit-lru-scorer\n"
                 "  parameters: {prefixPluginType: approx-prefix-cache-producer}\n",
                 id="producer-type-alone"),
    pytest.param("- {name: idx, type: approx-prefix-cache-producer}\n"
                 "- type: prefix-cache-scorer\n  parameters: {prefixMatchInfoProducerName: idx}\n"
                 "- type: no-hit-lru-scorer\n  parameters: {prefixPluginName: idx}\n",
                 id="named-producer"),
])
def test_producer_references_that_load(body: str) -> None:
    cfg = load_config(text=HEAD + "plugins:\n" + body)
    assert [p.type for p in cfg.scheduler.producers] == ["approx-prefix-cache-producer"]


class _Precise:
    """A stand-in for another prefix index: fills PREFIX_MATCH from its own (fake) index."""

    type: ClassVar[str] = "stand-in-prefix-producer"
    produces: ClassVar[DataKeys] = (PREFIX_MATCH,)
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name

    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        request.state.put(PREFIX_MATCH, PrefixMatch(
            block_tokens=16, total_blocks=4, matched={"10.0.0.1:2": 4}))


PRECISE = PLUGINS.extend(DATA_PRODUCER.table(_Precise))


@pytest.mark.parametrize("body", [
    pytest.param("- type: stand-in-prefix-producer\n- type: prefix-cache-scorer\n",
                 id="declared"),
    pytest.param("- type: prefix-cache-scorer\n- type: no-hit-lru-scorer\n"
                 "  parameters: {prefixPluginType: stand-in-prefix-producer}\n",
                 id="named-by-type"),
])
def test_another_producer_of_the_key_replaces_the_default(body: str) -> None:
    cfg = load_config(text=HEAD + "plugins:\n" + body, registry=PRECISE)
    assert [p.type for p in cfg.scheduler.producers] == ["stand-in-prefix-producer"]
    assert "approx-prefix-cache-producer" not in cfg.plugins
    specs = [EndpointSpec("10.0.0.1", port) for port in (1, 2, 3)]
    snapshot = PoolSnapshot(tuple(Endpoint(s.id, s, EndpointMetrics(), 0.0) for s in specs),
                            0.0, 0)
    result = cfg.scheduler.schedule(InferenceRequest("r", model="m", prompt="x"), snapshot)
    assert result is not None and result.destination.id == "10.0.0.1:2"


def test_the_precise_example_loads_with_llm_d_s_parameter_names() -> None:
    """examples/epp-precise.yaml (llm-d's guide, `speculativeTTL` and all) loads as written,
    and its scorer is also the background task that follows the engines' KV events."""
    example = Path(__file__).resolve().parents[2] / "examples" / "epp-precise.yaml"
    cfg = load_config(example)
    (precise,) = cfg.background
    assert precise.type == "precise-prefix-cache-scorer"
    assert precise.params.speculative_ttl == 2.0
    assert precise.params.kv_events_config.pod_discovery_config.socket_port == 5557
    with pytest.raises(ConfigError, match=r"speculativeTTL.*did you mean|speculativeTtl"):
        load_config(text=example.read_text().replace("speculativeTTL", "speculativeTtl"))
