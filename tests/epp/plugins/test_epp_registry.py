"""The typed registry: declared kinds hold at runtime too, and plugins never import each other."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar

import pytest

from llmd.epp.cycle import DataKey, DataKeys
from llmd.epp.plugins import INFLIGHT_LOAD, PLUGINS, PREFIX_MATCH, NoParams, PluginRegistry
from llmd.epp.plugins.registry import (
    DATA_PRODUCER,
    DECIDER,
    KINDS,
    PRE_REQUEST,
    PRODUCER_REFS,
    PROFILE_REFS,
    RESPONSE_HEADERS,
    SCORER,
)

PLUGINS_DIR = Path(__file__).resolve().parents[3] / "src" / "llmd" / "epp" / "plugins"

# Roles a plugin plays besides its main one. Their methods have names no other kind uses, so
# an instance that has them but is not declared would silently never be called.
EXTRA_ROLES = (PRE_REQUEST, RESPONSE_HEADERS, PROFILE_REFS, PRODUCER_REFS, DATA_PRODUCER,
               DECIDER)


@pytest.mark.parametrize("plugin_type", sorted(PLUGINS))
def test_every_type_builds_with_defaults_and_is_each_kind_it_declares(plugin_type: str) -> None:
    cls = PLUGINS[plugin_type]
    required = {"file-discovery": {"path": "endpoints.yaml"}}.get(plugin_type, {})
    plugin = cls(plugin_type, PLUGINS.params_of(plugin_type)(**required))
    kinds = PLUGINS.kinds_of(plugin_type)
    assert kinds and plugin.name == plugin_type and cls.type == plugin_type
    for kind in kinds:
        assert isinstance(plugin, kind.protocol), f"{plugin_type} is declared a {kind.name}"
    for kind in EXTRA_ROLES:
        if kind not in kinds:
            assert not isinstance(plugin, kind.protocol), (
                f"{plugin_type} has the methods of a {kind.name} but is not declared one")
    for key in (*cls.produces, *cls.consumes):
        assert isinstance(key, DataKey)


def test_every_kind_has_a_plugin_and_every_key_a_producer() -> None:
    assert {k for t in PLUGINS for k in PLUGINS.kinds_of(t)} == set(KINDS)
    consumed = {k for t in PLUGINS for k in PLUGINS[t].consumes}
    assert all(PLUGINS.producers_of(k) for k in consumed)
    assert PLUGINS.defaults == {PREFIX_MATCH: "approx-prefix-cache-producer",
                                INFLIGHT_LOAD: "inflight-load-producer"}
    assert PLUGINS.deprecated == {"pd-profile-handler": "disagg-profile-handler",
                                  "disagg-headers-handler": "disagg-profile-handler",
                                  "prefill-header-handler": "disagg-profile-handler"}


class _Scorer:
    type: ClassVar[str] = "queue-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name

    def score(self, request: object, pool: object) -> dict[str, float]:
        return {}


class _NoParams:
    type: ClassVar[str] = "no-params"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    def __init__(self, name: str, params: object) -> None:
        self.name = name

    def score(self, request: object, pool: object) -> dict[str, float]:
        return {}


def test_registry_refuses_a_type_twice_a_class_without_params_and_bad_defaults() -> None:
    with pytest.raises(ValueError, match="'queue-scorer' is registered by two classes"):
        PLUGINS.extend(SCORER.table(_Scorer))
    with pytest.raises(TypeError, match="_NoParams has no Params model"):
        PluginRegistry(SCORER.table(_NoParams))
    with pytest.raises(ValueError, match="default producer 'queue-scorer' of prefix-match"):
        PLUGINS.extend(defaults={PREFIX_MATCH: "queue-scorer"})
    with pytest.raises(ValueError, match="'old-scorer' and its replacement 'queue-scorer'"):
        PLUGINS.extend(deprecated={"old-scorer": "queue-scorer"})


class _Another(_Scorer):
    type: ClassVar[str] = "another-scorer"


def test_extend_adds_types_and_keeps_the_original() -> None:
    bigger = PLUGINS.extend(SCORER.table(_Another))
    assert "another-scorer" in bigger and "another-scorer" not in PLUGINS
    assert bigger.kinds_of("another-scorer") == {SCORER} and len(bigger) == len(PLUGINS) + 1


def _plugin_modules() -> list[Path]:
    return [p for p in PLUGINS_DIR.glob("*/*.py") if not p.name.startswith("_")]


@pytest.mark.parametrize("path", _plugin_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_plugin_imports_another_plugin(path: Path) -> None:
    """Plugins meet through typed data (`plugins.keys`), the Protocols (`plugins.base`) and
    private helpers, never through another plugin's module."""
    plugin_modules = {f"llmd.epp.plugins.{p.parent.name}.{p.stem}" for p in _plugin_modules()}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in plugin_modules:
            raise AssertionError(f"{path.parent.name}/{path.name} imports {node.module}")
