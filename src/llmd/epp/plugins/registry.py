"""The typed plugin registry: one table per kind, checked by mypy (llm-d's
`var _ framework.Scorer = &X{}`).

`SCORER.table(QueueScorer, ...)` accepts only classes that are `PluginClass[Scorer]`: built as
`cls(name, params)` into a `Scorer`, with `type`, `produces` and `consumes`; a class that does
not fit is a mypy error where it is registered (`SCORER` is a `Kind[Scorer]`, so the table's
type comes from the kind, whatever the context). A class that plays several roles is listed in
each kind's table. The loader reads roles from these tables (`PluginRegistry.kinds_of`), never
from an instance's methods.

A registry is a value (`llmd.epp.plugins.PLUGINS`, or `PLUGINS.extend(...)` in tests), never a
global that modules add themselves to.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, cast

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKey, DataKeys
from llmd.epp.plugins.base import (
    Background,
    CrossReplicaSyncer,
    DataProducer,
    DataSource,
    Decider,
    EndpointDiscovery,
    Filter,
    MetricsExtractor,
    Parser,
    PeerDiscovery,
    Picker,
    Plugin,
    PreRequest,
    ProducerRefs,
    ProfileHandler,
    ProfileRefs,
    ResponseHeaderHook,
    SaturationDetector,
    Scorer,
)
from llmd.epp.plugins.flowcontrol._policy import FairnessPolicy, OrderingPolicy, UsageLimitPolicy

__all__ = [
    "BACKGROUND", "CROSS_REPLICA_SYNCER", "DATA_PRODUCER", "DATA_SOURCE", "DECIDER",
    "ENDPOINT_DISCOVERY", "FAIRNESS_POLICY", "FILTER", "KINDS", "METRICS_EXTRACTOR",
    "ORDERING_POLICY", "PARSER", "PEER_DISCOVERY", "PICKER", "PRE_REQUEST", "PRODUCER_REFS",
    "PROFILE_HANDLER", "PROFILE_REFS", "RESPONSE_HEADERS", "SATURATION_DETECTOR", "SCORER",
    "USAGE_LIMIT_POLICY", "Kind", "KindTable",
    "PluginClass", "PluginRegistry",
]

P = TypeVar("P")
P_co = TypeVar("P_co", covariant=True)


class Kind(Generic[P]):
    """One extension point: plugins of this kind are `P`s. `name` is how messages call it
    ("scorer"); `protocol` is the runtime-checkable Protocol, for tests only (the loader trusts
    the tables, which mypy checked)."""

    __slots__ = ("name", "protocol")

    def __init__(self, name: str, protocol: builtins.type) -> None:
        self.name, self.protocol = name, protocol

    def __repr__(self) -> str:
        return f"Kind({self.name!r})"

    def table(self, *classes: PluginClass[P]) -> KindTable[P]:
        """The classes registered as this kind (mypy rejects one that is not a
        PluginClass[P])."""
        return KindTable(self, classes)

    def of(self, plugin: Plugin, kinds: frozenset[Kind[Any]]) -> P | None:
        """`plugin` as a `P` when `kinds` (its class's declared kinds) hold this one."""
        # Sound without a runtime check: a class is in this kind's table only if mypy accepted
        # it there as a PluginClass[P].
        return cast(P, plugin) if self in kinds else None


# In the order messages name a plugin by ("'x' is a scorer"): a saturation detector is also a
# filter, but is configured through saturationDetector, so it is named by that kind.
PROFILE_HANDLER: Kind[ProfileHandler] = Kind("profile handler", ProfileHandler)
DECIDER: Kind[Decider] = Kind("decider", Decider)
SCORER: Kind[Scorer] = Kind("scorer", Scorer)
PICKER: Kind[Picker] = Kind("picker", Picker)
SATURATION_DETECTOR: Kind[SaturationDetector] = Kind("saturation detector", SaturationDetector)
FILTER: Kind[Filter] = Kind("filter", Filter)
DATA_PRODUCER: Kind[DataProducer] = Kind("data producer", DataProducer)
PARSER: Kind[Parser] = Kind("parser", Parser)
DATA_SOURCE: Kind[DataSource] = Kind("data source", DataSource)
METRICS_EXTRACTOR: Kind[MetricsExtractor] = Kind("extractor", MetricsExtractor)
CROSS_REPLICA_SYNCER: Kind[CrossReplicaSyncer] = Kind("cross-replica syncer",
                                                      CrossReplicaSyncer)
PEER_DISCOVERY: Kind[PeerDiscovery] = Kind("peer-discovery plugin", PeerDiscovery)
ENDPOINT_DISCOVERY: Kind[EndpointDiscovery] = Kind("endpoint discovery", EndpointDiscovery)
FAIRNESS_POLICY: Kind[FairnessPolicy] = Kind("fairness policy", FairnessPolicy)
ORDERING_POLICY: Kind[OrderingPolicy] = Kind("ordering policy", OrderingPolicy)
USAGE_LIMIT_POLICY: Kind[UsageLimitPolicy] = Kind("usage-limit policy", UsageLimitPolicy)
# Roles a plugin plays besides its main one.
PRE_REQUEST: Kind[PreRequest] = Kind("pre-request hook", PreRequest)
RESPONSE_HEADERS: Kind[ResponseHeaderHook] = Kind("response header hook", ResponseHeaderHook)
PROFILE_REFS: Kind[ProfileRefs] = Kind("profile refs", ProfileRefs)
PRODUCER_REFS: Kind[ProducerRefs] = Kind("producer refs", ProducerRefs)
BACKGROUND: Kind[Background] = Kind("background task", Background)

KINDS: tuple[Kind[Any], ...] = (
    PROFILE_HANDLER, DECIDER, SCORER, PICKER, SATURATION_DETECTOR, FILTER, DATA_PRODUCER, PARSER,
    DATA_SOURCE, METRICS_EXTRACTOR, CROSS_REPLICA_SYNCER, PEER_DISCOVERY, ENDPOINT_DISCOVERY,
    FAIRNESS_POLICY, ORDERING_POLICY, USAGE_LIMIT_POLICY, PRE_REQUEST, RESPONSE_HEADERS,
    PROFILE_REFS, PRODUCER_REFS, BACKGROUND,
)
"""Every kind, main ones first in naming order."""


class PluginClass(Protocol[P_co]):
    """A plugin class whose instances are `P_co`s: `cls(name, params)` with `params` an instance
    of its nested `Params` model; `type` is llm-d's kebab-case name; `produces`/`consumes` the
    data keys its instances put into / read from the request's cycle state.

    `params` is `Any` because each class takes its own `Params`; the loader always builds it
    from `cls.Params`. (`Params` itself is not a member here: mypy does not match a nested
    class against a protocol member, so the registry checks it when a class is registered.)
    """

    @property
    def type(self) -> str: ...

    @property
    def produces(self) -> DataKeys: ...

    @property
    def consumes(self) -> DataKeys: ...

    def __call__(self, name: str, params: Any, /) -> P_co: ...


@dataclass(frozen=True, slots=True)
class KindTable(Generic[P]):
    """Classes registered as one kind: build with `kind.table(...)`."""

    kind: Kind[P]
    classes: tuple[PluginClass[P], ...]


class PluginRegistry(Mapping[str, PluginClass[Plugin]]):
    """Plugin type → class, with each type's declared kinds, the default producer of each data
    key (added by the loader when a consumer needs the key and the config declares no
    producer) and deprecated types (type → replacement)."""

    def __init__(self, *tables: KindTable[Any], defaults: Mapping[DataKey[Any], str] = {},
                 deprecated: Mapping[str, str] = {}) -> None:
        classes: dict[str, PluginClass[Plugin]] = {}
        kinds: dict[str, set[Kind[Any]]] = {}
        params: dict[str, builtins.type[LlmdModel]] = {}
        for t in tables:
            for cls in t.classes:
                known = classes.setdefault(cls.type, cls)
                if known is not cls:
                    raise ValueError(f"plugin type {cls.type!r} is registered by two classes: "
                                     f"{_qualname(known)} and {_qualname(cls)}")
                kinds.setdefault(cls.type, set()).add(t.kind)
                params[cls.type] = _params_model(cls)
        for key, producer in defaults.items():
            if key not in (classes[producer].produces if producer in classes else ()):
                raise ValueError(f"default producer {producer!r} of {key.name} is not a "
                                 "registered type that produces it")
        for old, new in deprecated.items():
            if old not in classes or new not in classes:
                raise ValueError(f"deprecated type {old!r} and its replacement {new!r} must "
                                 "both be registered")
        self._tables = tables
        self._classes = MappingProxyType(classes)
        self._kinds = {t: frozenset(k) for t, k in kinds.items()}
        self._params = params
        self.defaults: Mapping[DataKey[Any], str] = MappingProxyType(dict(defaults))
        self.deprecated: Mapping[str, str] = MappingProxyType(dict(deprecated))

    def __getitem__(self, plugin_type: str) -> PluginClass[Plugin]:
        return self._classes[plugin_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def kinds_of(self, plugin_type: str) -> frozenset[Kind[Any]]:
        """The kinds `plugin_type` is registered as (empty for an unknown type)."""
        return self._kinds.get(plugin_type, frozenset())

    def params_of(self, plugin_type: str) -> builtins.type[LlmdModel]:
        """The class's `Params` model."""
        return self._params[plugin_type]

    def types_of(self, kind: Kind[Any]) -> list[str]:
        """The registered types of `kind`, sorted."""
        return sorted(t for t, k in self._kinds.items() if kind in k)

    def producers_of(self, key: DataKey[Any]) -> list[str]:
        """The registered types whose class declares it produces `key`, sorted."""
        return sorted(t for t, cls in self._classes.items() if key in cls.produces)

    def readers_of(self, key: DataKey[Any], kind: Kind[Any]) -> list[str]:
        """The registered types of `kind` whose class declares it consumes `key`, sorted."""
        return sorted(t for t, cls in self._classes.items()
                      if key in cls.consumes and kind in self._kinds[t])

    def extend(self, *tables: KindTable[Any], defaults: Mapping[DataKey[Any], str] = {},
               deprecated: Mapping[str, str] = {}) -> PluginRegistry:
        """A new registry with more classes (tests add fakes this way)."""
        return PluginRegistry(*self._tables, *tables, defaults={**self.defaults, **defaults},
                              deprecated={**self.deprecated, **deprecated})


def _params_model(cls: PluginClass[Plugin]) -> builtins.type[LlmdModel]:
    model: object = getattr(cls, "Params", None)  # see PluginClass: mypy cannot check it
    if not (isinstance(model, builtins.type) and issubclass(model, LlmdModel)):
        raise TypeError(f"plugin class {_qualname(cls)} has no Params model (an LlmdModel)")
    return model


def _qualname(cls: object) -> str:
    return repr(cls).removeprefix("<class '").removesuffix("'>")
