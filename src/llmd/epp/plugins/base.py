"""The EPP extension points, one Protocol each (mypy checks each plugin against them).

A plugin class has a class-level `type` (llm-d's kebab-case name), a nested pydantic `Params`
(strict: unknown keys fail at load), the data keys it `produces` and `consumes`, and is built as
`cls(name, params)` (`llmd.epp.plugins.registry.PluginClass`). Which roles a plugin plays is
declared, never guessed: the registry lists the class in the table of each kind it implements,
and mypy checks it against that kind's Protocol (the prefix producer is in the DataProducer and
the PreRequest tables; `utilization-detector` in the SaturationDetector and Filter tables).

Deciders are not run by the framework: a profile handler that references one (by plugin name,
resolved by the loader) asks it whether to run a stage. Plugins meet only through typed data in
the request's cycle state (`llmd.epp.cycle`, keys in `llmd.epp.plugins.keys`).

Per request the framework runs: DataProducers → ProfileHandler.pick → per profile: Filters →
Scorers (clamped to [0, 1], weighted, summed) → Picker → ProfileHandler.process_results →
ResponseHeaderHooks (headers for the client's response) → (answer sent) → PreRequest hooks.
Background plugins run beside all of this from start to stop (`run`: a KV-event subscription).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKey

if TYPE_CHECKING:
    from llmd.epp.datastore import Endpoint, EndpointId, EndpointSpec, PoolSnapshot
    from llmd.epp.request import InferenceRequest
    from llmd.epp.scheduling import SchedulerProfile

__all__ = [
    "Background",
    "DataProducer",
    "DataSource",
    "Decider",
    "EndpointDiscovery",
    "EndpointView",
    "Filter",
    "MetricsExtractor",
    "NoParams",
    "Parser",
    "Picker",
    "Plugin",
    "PluginContext",
    "PreRequest",
    "ProducerRef",
    "ProducerRefs",
    "ProfileHandler",
    "ProfileRefs",
    "ProfileResult",
    "ResponseHeaderHook",
    "SaturationDetector",
    "SchedulingResult",
    "Scorer",
]


class NoParams(LlmdModel):
    """For plugins without parameters: any key is an error."""


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """The endpoints one profile picked, best first (usually one), and `alternates`: the next
    best candidates of the same profile (filtered and scored like the targets), best first,
    for the gateway to try when the targets cannot be reached (GIE's fallback endpoints)."""

    targets: tuple[Endpoint, ...]
    alternates: tuple[Endpoint, ...] = ()

    def ranked(self) -> tuple[Endpoint, ...]:
        """Targets, then alternates: the order a gateway tries them in."""
        return self.targets + self.alternates


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    """Every profile's result and which one is primary (its first target is the destination).

    `headers` are request headers the decision sets besides the destination (the P/D handler's
    `x-prefiller-host-port`).
    """

    results: Mapping[str, ProfileResult]
    primary: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def destination(self) -> Endpoint:
        return self.results[self.primary].targets[0]

    @property
    def destinations(self) -> tuple[Endpoint, ...]:
        """The primary profile's targets then alternates: where the gateway may send the
        request, in order (the first one that accepts the connection serves it)."""
        return self.results[self.primary].ranked()


class Plugin(Protocol):
    """What every plugin instance has: its class's `type` and its configured `name`."""

    type: ClassVar[str]
    name: str


@runtime_checkable
class ProfileHandler(Plugin, Protocol):
    @property
    def max_profiles(self) -> int | None:
        """How many scheduling profiles the handler runs at most (the loader checks the
        config); None when it names its profiles instead (a `ProfileRefs` handler)."""
        ...

    def pick(
        self,
        request: InferenceRequest,
        profiles: Mapping[str, SchedulerProfile],
        results: Mapping[str, ProfileResult | None],
    ) -> Mapping[str, SchedulerProfile]:
        """Profiles to run next, given the results so far; empty when done.

        Called repeatedly, so a handler can run a decode profile first and decide on a prefill
        profile from its result (llm-d's disagg-profile-handler).
        """
        ...

    def process_results(
        self, request: InferenceRequest, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult | None:
        """Combine the profile results; None when no endpoint can serve (→ 503). A handler
        that knows better why may raise `NoEndpointError` with its own message."""
        ...


@runtime_checkable
class Filter(Plugin, Protocol):
    def filter(
        self, request: InferenceRequest, pool: PoolSnapshot
    ) -> Sequence[Endpoint]:
        """The candidates that may serve `request` (pure, no I/O)."""
        ...


@runtime_checkable
class Scorer(Plugin, Protocol):
    def score(
        self, request: InferenceRequest, pool: PoolSnapshot
    ) -> Mapping[EndpointId, float]:
        """A score per candidate, nominally 0..1 (the framework clamps); missing ids score 0.

        Pure and synchronous over the snapshot: no I/O, no await, no mutation.
        """
        ...


@runtime_checkable
class Picker(Plugin, Protocol):
    def pick(
        self, request: InferenceRequest, scored: Sequence[tuple[Endpoint, float]]
    ) -> tuple[Endpoint, ...]:
        """Choose targets from (candidate, total weighted score); empty only if `scored` is."""
        ...


@runtime_checkable
class DataProducer(Plugin, Protocol):
    def produce(self, request: InferenceRequest, pool: PoolSnapshot) -> None:
        """Put this request's data (the keys the plugin declares in `produces`) into
        `request.state`, before filtering. Pure and quick: no I/O, must not block."""
        ...


class EndpointView(Protocol):
    """What a background plugin sees of the pool: every endpoint (the datastore's members,
    healthy or not) and a generation that changes when the set changes."""

    @property
    def generation(self) -> int: ...

    def endpoints(self) -> tuple[Endpoint, ...]: ...


@dataclass(frozen=True)
class PluginContext:
    """What the EPP hands a background plugin: the pool to follow, and the registry its
    metrics go to (`llmd_epp_...` names, bounded labels)."""

    pool: EndpointView
    registry: Any
    """A `prometheus_client.CollectorRegistry` (typed loosely: plugins need not import it)."""


@runtime_checkable
class Background(Plugin, Protocol):
    async def run(self, context: PluginContext, stop: asyncio.Event) -> None:
        """Work beside scheduling (an event subscription), from start until `stop`. Owned by
        the EPP's task group: return only when `stop` is set, and never raise for what an
        endpoint sends (count it); an exception here stops the EPP."""
        ...


@runtime_checkable
class PreRequest(Plugin, Protocol):
    def pre_request(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        """Called once the decision is sent: update indexes for the endpoints actually chosen."""
        ...


@runtime_checkable
class ResponseHeaderHook(Plugin, Protocol):
    def response_headers(
        self, request: InferenceRequest, result: SchedulingResult
    ) -> Mapping[str, str]:
        """Headers to set on the client's response, from the decision (pure, no I/O).

        llm-d sets them when the response arrives (PostResponse); llmd computes them with the
        decision, so the gateway can add them without a response round trip to the EPP. Every
        name must be in `llmd.epp.headers.RESPONSE_HEADERS` (the ones the gateway copies).
        """
        ...


@runtime_checkable
class SaturationDetector(Plugin, Protocol):
    def saturation(self, pool: PoolSnapshot) -> float:
        """Pool saturation; >= 1.0 means saturated (sheddable requests get 429)."""
        ...


@runtime_checkable
class Decider(Plugin, Protocol):
    def disaggregate(self, request: InferenceRequest, endpoint: Endpoint) -> bool:
        """Whether to run a disaggregated stage (prefill) for `request`, given the endpoint the
        primary profile chose (pure, no I/O)."""
        ...


@runtime_checkable
class ProfileRefs(Plugin, Protocol):
    """A profile handler that names profiles and deciders in its parameters; the loader checks
    the names and hands it the deciders."""

    def profile_refs(self) -> Mapping[str, str]:
        """Parameter path (`profiles.decode`) → the profile it names; every one must exist,
        and every profile must be named by one (others would never run)."""
        ...

    def decider_refs(self) -> Mapping[str, str]:
        """Parameter path (`deciders.prefill`) → the decider plugin it names."""
        ...

    def bind(self, deciders: Mapping[str, Decider]) -> None:
        """Receive the deciders, keyed by the paths of `decider_refs()`."""
        ...


@dataclass(frozen=True, slots=True)
class ProducerRef:
    """A parameter naming where a consumer's `key` comes from (llm-d's `prefixPluginName` /
    `prefixPluginType`): a plugin `name` and/or `type` ("" = not given). The loader checks that
    the named plugin is configured and produces `key` or, when `readers_too`, is a scorer that
    reads it (llm-d's prefix scorer once was the producer); a `type` alone must be such a type.
    `name_param`/`type_param` are the parameter paths for messages."""

    key: DataKey[Any]
    name: str = ""
    type: str = ""
    name_param: str = ""
    type_param: str = ""
    readers_too: bool = False


@runtime_checkable
class ProducerRefs(Plugin, Protocol):
    """A plugin whose parameters name the producer of data it (or its deciders) reads."""

    def producer_refs(self) -> Sequence[ProducerRef]:
        """The references its parameters make; only the given ones (name or type set)."""
        ...


@runtime_checkable
class Parser(Plugin, Protocol):
    """Request handling (llm-d's `parser`): the body → the request the scheduler sees."""

    def parse(
        self, request_id: str, path: str, headers: Mapping[str, str], body: bytes,
        objectives: Mapping[str, int],
    ) -> InferenceRequest:
        """Raise `BadRequestError` (400) for a body this parser cannot read."""
        ...


@runtime_checkable
class DataSource(Plugin, Protocol):
    """Data layer: where the scraper reads an endpoint's metrics (`scheme://ip:port/path`)."""

    scheme: str
    path: str
    verify_tls: bool


@runtime_checkable
class MetricsExtractor(Plugin, Protocol):
    """Data layer: which engine adapter maps an endpoint's scraped page to metrics."""

    def engine_of(self, spec: EndpointSpec) -> str:
        """The endpoint's engine name (the adapter's key), from its labels."""
        ...


@runtime_checkable
class EndpointDiscovery(Plugin, Protocol):
    """`dataLayer.discovery.endpoints.pluginRef`: where the pool's endpoints come from when
    not from Kubernetes (llm-d's `file-discovery`)."""

    def load(self) -> Sequence[EndpointSpec]:
        """The endpoints now (ConfigError when they cannot be read): `llmd epp --check` and
        the first update."""
        ...

    def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        """The endpoint set whenever it changes, until `stop`."""
        ...


@runtime_checkable
class CrossReplicaSyncer(Plugin, Protocol):
    """`dataLayer.crossReplica.syncerPluginRef`: how replicas share state. The EPP runs the
    sync (`llmd.epp.replica_sync`) with the plugin's parameters."""

    shares: ClassVar[bool]
    """False for llm-d's single-replica `local-syncer`: in-flight accounting, no peers."""

    @property
    def counts_inflight(self) -> bool:
        """Whether the load scorers add the replicas' requests sent since the last scrape."""
        ...


@runtime_checkable
class PeerDiscovery(Plugin, Protocol):
    """`dataLayer.peerDiscovery.pluginRef`: the other EPP replicas (`host:port` of their sync
    sockets, never this replica's own)."""

    def peers(self, stop: asyncio.Event, kube: Any) -> AsyncIterator[tuple[str, ...]]:
        """The peer set whenever it changes, until `stop`. `kube`: the EPP's Kubernetes API
        access (a `llmd._kube.KubeApi`) or None."""
        ...
