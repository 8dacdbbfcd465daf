"""The loader's view of a config's plugins: each instance with its declared kinds and data keys.

Roles come from the registry's per-kind tables (`PluginRegistry.kinds_of`), never from the
instance's methods: `Configured.as_(SCORER)` is the plugin as a `Scorer` when its class is in
the scorer table, else None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmd.config import config_error, did_you_mean
from llmd.epp._config_models import PluginSpec
from llmd.epp._config_unsupported import unsupported_message
from llmd.epp.cycle import DataKey, DataKeys
from llmd.epp.plugins import Plugin, PluginRegistry
from llmd.epp.plugins.registry import KINDS, Kind

__all__ = ["ConfigPlugins", "Configured", "Fail"]

# The loader's logger: every config warning comes from `llmd.epp.config`.
log = logging.getLogger("llmd.epp.config")

P = TypeVar("P")

Fail = Callable[[str, str], None]
"""Report one problem: (path, message)."""



@dataclass(frozen=True, slots=True)
class Configured:
    """One plugin the config uses: the instance, its class's kinds and data keys, and its
    position in `plugins[]` (None when the loader added it)."""

    name: str
    type: str
    plugin: Plugin
    kinds: frozenset[Kind[Any]]
    produces: DataKeys
    consumes: DataKeys
    index: int | None

    def as_(self, kind: Kind[P]) -> P | None:
        """The plugin as a `kind` when its class is registered as one."""
        return kind.of(self.plugin, self.kinds)

    @property
    def kind_name(self) -> str:
        """What messages call it: its first kind in `KINDS` order ("scorer")."""
        return next((k.name for k in KINDS if k in self.kinds), "plugin")

    @property
    def path(self) -> str:
        return "plugins" if self.index is None else f"plugins[{self.index}]"


class ConfigPlugins:
    """The config's plugins by name: the declared ones, then those the loader adds."""

    def __init__(self, registry: PluginRegistry, source: str, problems: list[str]) -> None:
        self.registry, self.source, self.problems = registry, source, problems
        self.by_name: dict[str, Configured] = {}
        self.broken: dict[str, str] = {}
        """Declared plugins that failed to build (already reported): name → type."""

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def get(self, name: str) -> Configured | None:
        return self.by_name.get(name)

    def __iter__(self) -> Iterator[Configured]:
        return iter(list(self.by_name.values()))

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def names(self) -> list[str]:
        return list(self.by_name)

    def of_kind(self, kind: Kind[P]) -> list[tuple[Configured, P]]:
        """The configured plugins of `kind`, in config order, each with its typed view."""
        return [(c, p) for c in self.by_name.values() if (p := c.as_(kind)) is not None]

    def names_of(self, kind: Kind[Any]) -> str:
        return ", ".join(c.name for c, _ in self.of_kind(kind)) or "none"

    def types_of(self, kind: Kind[Any]) -> str:
        return ", ".join(self.registry.types_of(kind)) or "none"

    def producers_of(self, key: DataKey[Any]) -> list[Configured]:
        return [c for c in self.by_name.values() if key in c.produces]

    def instances(self) -> Mapping[str, Plugin]:
        return {n: c.plugin for n, c in self.by_name.items()}

    def declare(self, i: int, ps: PluginSpec) -> None:
        """Build `plugins[i]`, or report why it cannot be built."""
        registry = self.registry
        if ps.type not in registry:
            unsupported = unsupported_message(ps.type)
            if unsupported is not None:
                self.broken[ps.ref] = ps.type
                self.fail(f"plugins[{i}].type", unsupported)
                return
            types = sorted(registry)
            hint = did_you_mean(ps.type, types) or f" (allowed: {', '.join(types)})"
            self.fail(f"plugins[{i}].type", f"{ps.type!r} is not a plugin type{hint}")
            return
        if ps.ref in self.by_name:
            self.fail(f"plugins[{i}].name", f"{ps.ref!r} is defined twice")
            return
        model = registry.params_of(ps.type)
        try:
            params = model.model_validate(ps.parameters or {})
        except ValidationError as exc:
            self.broken[ps.ref] = ps.type
            lines = config_error(exc, self.source, ("plugins", i, "parameters")).problems
            for line, detail in zip(lines, exc.errors(include_url=False), strict=True):
                if detail["type"] == "extra_forbidden":
                    key = str(detail["loc"][-1])
                    fields = _fields_at(model, detail["loc"][:-1])
                    owner = ".".join(str(p) for p in (ps.type, *detail["loc"][:-1]))
                    line += did_you_mean(key, fields) or (
                        f" (parameters of {owner}: {', '.join(fields) or 'none'})")
                self.problems.append(line)
            return
        replacement = registry.deprecated.get(ps.type)
        if replacement is not None:
            log.warning("%s: plugins[%d].type: %s is deprecated, use %s", self.source, i,
                        ps.type, replacement)
        self._put(ps.ref, ps.type, params, i)

    def add(self, plugin_type: str, name: str | None = None) -> Configured | None:
        """Add a `plugin_type` plugin with default parameters, named `name` (default: its type);
        an existing plugin of that name and type is returned instead. None (reported) when the
        name is taken by another type."""
        name = name or plugin_type
        existing = self.by_name.get(name)
        if existing is not None:
            if existing.type == plugin_type:
                return existing
            self.fail(existing.path + ".name", f"{name!r} is the name the loader gives the "
                      f"{plugin_type} it adds; name this {existing.type} plugin differently")
            return None
        return self._put(name, plugin_type, self.registry.params_of(plugin_type)(), None)

    def build(self, plugin_type: str) -> Configured:
        """A `plugin_type` plugin with default parameters, not added to the config."""
        cls = self.registry[plugin_type]
        return self._configured(plugin_type, plugin_type,
                                cls(plugin_type, self.registry.params_of(plugin_type)()), None)

    def _put(self, name: str, plugin_type: str, params: BaseModel, index: int | None
             ) -> Configured:
        plugin = self.registry[plugin_type](name, params)
        c = self.by_name[name] = self._configured(name, plugin_type, plugin, index)
        return c

    def _configured(self, name: str, plugin_type: str, plugin: Plugin, index: int | None
                    ) -> Configured:
        cls = self.registry[plugin_type]
        return Configured(name, plugin_type, plugin, self.registry.kinds_of(plugin_type),
                          cls.produces, cls.consumes, index)


def _fields_at(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The parameter names of the (nested) model at `loc`, as written in YAML."""
    for part in loc:
        inner = next((f.annotation for n, f in model.model_fields.items()
                      if part in (n, f.alias)), None)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return []
        model = inner
    return sorted(f.alias or n for n, f in model.model_fields.items())
