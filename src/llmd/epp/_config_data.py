"""The loader's data-key checks: who produces what each configured plugin consumes.

- Every key a configured plugin `consumes` must be `produces`d by a configured plugin. When
  none is, the registry's default producer of the key is added with its default parameters
  (`PREFIX_MATCH` → `approx-prefix-cache-producer`, as llm-d creates missing data producers);
  without a default the error names the consumer and the plugin types that produce the key.
  A producer the config declares is always the one used.
- One producer per key (two would overwrite each other's data).
- `ProducerRefs` parameters (llm-d's `prefixPluginName`/`prefixPluginType`) must point at a
  configured producer of the key, or, where llm-d named its prefix scorer there
  (`readers_too`), at a scorer that reads the key; a type given alone must be such a type, and
  names the producer to add when the config has none.
- Data producers run in dependency order (a producer that consumes another's key after it).
"""

from __future__ import annotations

from typing import Any

from llmd.config import did_you_mean
from llmd.epp._config_plugins import ConfigPlugins, Configured
from llmd.epp.cycle import DataKey
from llmd.epp.plugins import DataProducer, ProducerRef
from llmd.epp.plugins.registry import DATA_PRODUCER, PRODUCER_REFS, PROFILE_HANDLER, SCORER

__all__ = ["wire_data"]


def wire_data(plugins: ConfigPlugins) -> list[DataProducer]:
    """Check and complete the config's producers; the data producers in the order to run."""
    _one_producer_per_key(plugins)
    _add_referenced_producers(plugins)
    _add_default_producers(plugins)
    for c, holder in plugins.of_kind(PRODUCER_REFS):
        for ref in holder.producer_refs():
            _check_ref(plugins, c, ref)
    return _in_dependency_order(plugins)


def _one_producer_per_key(plugins: ConfigPlugins) -> None:
    keys = {k for c in plugins for k in c.produces}
    for key in sorted(keys, key=lambda k: k.name):
        found = plugins.producers_of(key)
        # Profile handlers (DECODE_PICK's producers) are one per config, checked on their own.
        if len(found) > 1 and not all(PROFILE_HANDLER in c.kinds for c in found):
            fail_at = found[1]
            plugins.fail(fail_at.path + ".type", f"{fail_at.name!r} produces {key.name}, and so "
                         f"does {found[0].name!r}: llmd runs one producer per data key; keep "
                         "one of them")


def _add_referenced_producers(plugins: ConfigPlugins) -> None:
    """A `type` given alone that names a producer type adds it when the key has none."""
    for _, holder in plugins.of_kind(PRODUCER_REFS):
        for ref in holder.producer_refs():
            if (ref.type and not ref.name and not plugins.producers_of(ref.key)
                    and ref.type in plugins.registry.producers_of(ref.key)):
                plugins.add(ref.type)


def _add_default_producers(plugins: ConfigPlugins) -> None:
    done: set[tuple[str, DataKey[Any]]] = set()
    changed = True
    while changed:  # an added producer may consume a key of its own
        changed = False
        for c in plugins:
            for key in c.consumes:
                if (c.name, key) in done or plugins.producers_of(key):
                    continue
                done.add((c.name, key))
                types = plugins.registry.producers_of(key)
                if any(t in types for t in plugins.broken.values()):
                    continue  # its declared producer failed to build (already reported)
                default = plugins.registry.defaults.get(key)
                if default is not None:
                    changed = plugins.add(default) is not None or changed
                    continue
                plugins.fail(c.path + ".type", f"{c.type!r} reads {key.name}, which no "
                             "configured plugin produces (plugin types that produce it: "
                             f"{', '.join(types) or 'none'})")


def _check_ref(plugins: ConfigPlugins, c: Configured, ref: ProducerRef) -> None:
    key, registry = ref.key, plugins.registry
    at = c.path + ".parameters"
    producers = [p.name for p in plugins.producers_of(key)]
    readers = [p.name for p, _ in plugins.of_kind(SCORER)
               if key in p.consumes and p.name != c.name] if ref.readers_too else []
    types = registry.producers_of(key) + (registry.readers_of(key, SCORER)
                                          if ref.readers_too else [])
    what = f"produces {key.name}" + (" or is a scorer that reads it" if ref.readers_too else "")
    allowed = (f"plugins that qualify: {', '.join(producers + readers) or 'none'}; "
               f"types: {', '.join(sorted(types))}")
    if ref.name:
        if ref.name in plugins.broken:
            return  # already reported
        target = plugins.get(ref.name)
        if target is None:
            plugins.fail(f"{at}.{ref.name_param}", f"{ref.name!r} is not defined ({allowed})"
                         f"{did_you_mean(ref.name, plugins.names())}")
        elif target.name not in producers + readers:
            plugins.fail(f"{at}.{ref.name_param}", f"{ref.name!r} is a {target.type} plugin; "
                         f"it must be one that {what} ({allowed})")
        elif ref.type and ref.type != target.type:
            plugins.fail(f"{at}.{ref.type_param}", f"{ref.type!r} is not the type of "
                         f"{ref.name!r}, a {target.type} plugin")
        return
    if not ref.type:
        return
    if ref.type not in types:
        plugins.fail(f"{at}.{ref.type_param}", f"{ref.type!r} is not a plugin type that "
                     f"{what} (types: {', '.join(sorted(types))})"
                     f"{did_you_mean(ref.type, types)}")
        return
    used = plugins.producers_of(key)
    if ref.type in registry.producers_of(key) and used and used[0].type != ref.type:
        plugins.fail(f"{at}.{ref.type_param}", f"{ref.type!r} does not produce this config's "
                     f"{key.name}: {used[0].name!r} ({used[0].type}) does")


def _in_dependency_order(plugins: ConfigPlugins) -> list[DataProducer]:
    todo = plugins.of_kind(DATA_PRODUCER)
    ordered: list[DataProducer] = []
    done: set[str] = set()
    while todo:
        ready = next(((c, p) for c, p in todo if all(
            d.name in done or d.name == c.name
            for key in c.consumes for d in plugins.producers_of(key)
            if DATA_PRODUCER in d.kinds)), None)
        if ready is None:
            plugins.fail("plugins", "data producers that need each other's data: "
                         + ", ".join(c.name for c, _ in todo))
            return ordered
        todo.remove(ready)
        ordered.append(ready[1])
        done.add(ready[0].name)
    return ordered
