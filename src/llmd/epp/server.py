"""`serve()`: the whole EPP wired in one place (config, discovery, scraper, gRPC, metrics)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.epp._config_replica import ReplicaSyncConfig
from llmd.epp.config import EndpointPickerConfig, load_config, load_objectives
from llmd.epp.datastore import Datastore, EndpointSpec
from llmd.epp.director import Director
from llmd.epp.discovery import Discovery, StaticDiscovery, load_endpoints_file
from llmd.epp.extproc import (
    DEFAULT_MAX_PENDING_STREAMS,
    DEFAULT_MAX_WAIT_S,
    ExtProcServicer,
    grpc_options,
)
from llmd.epp.flow_control import FlowController
from llmd.epp.inflight import InflightLedger
from llmd.epp.metrics import EppMetrics, FlowControlMetrics, PoolCollector, SyncMetrics
from llmd.epp.plugins import PLUGINS, ApproxPrefixCacheProducer, PluginContext, PluginRegistry
from llmd.epp.plugins.base import CrossReplicaSyncer
from llmd.epp.plugins.replica.peers import parse_peer
from llmd.epp.plugins.replica.syncer import ZmqMeshSyncer
from llmd.epp.replica_sync import ReplicaSync
from llmd.epp.scraper import Scraper, ScrapeSettings
from llmd.errors import ConfigError

__all__ = ["EppSettings", "Listening", "build_config", "serve"]

log = logging.getLogger(__name__)

HEALTH_SERVICES = ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor")


class EppSettings(LlmdModel):
    """How to run the EPP (CLI flags). Ports 0 bind ephemeral ports (reported via Listening)."""

    host: str = "127.0.0.1"
    grpc_port: int = Field(default=9002, ge=0, lt=65536)
    health_port: int = Field(default=9003, ge=0, lt=65536)
    metrics_port: int = Field(default=9090, ge=0, lt=65536)
    config_file: Path | None = None
    config_text: str | None = None
    values_file: Path | None = Field(default=None, description="an llm-d router chart's Helm "
                                     "values file: its EndpointPickerConfig is loaded")
    objectives_file: Path | None = None
    endpoints: tuple[EndpointSpec, ...] = ()
    endpoints_file: Path | None = None
    pool_name: str = "llmd"
    pool_namespace: str = "default"
    refresh_metrics_interval_s: float = Field(default=0.05, gt=0)
    scrape_timeout_s: float = Field(default=1.0, gt=0)
    stale_after_s: float = Field(default=2.0, gt=0, description="an endpoint without a good "
                                 "scrape for this long stops being a candidate")
    fallback_endpoints: int = Field(
        default=0, ge=0, le=16, description="endpoints named after the destination, best "
        "first, for a gateway that tries the next when one refuses (GIE's multi-endpoint "
        "`x-gateway-destination-endpoint`); 0 for gateways that take one `ip:port`")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_pending_streams: int = Field(
        default=DEFAULT_MAX_PENDING_STREAMS, gt=0, description="ext_proc streams waiting for "
        "a decision at once; a request beyond it is answered 429 with Retry-After at once, "
        "before parsing or scheduling (counted as outcome `overloaded`)")
    max_wait_s: float = Field(
        default=DEFAULT_MAX_WAIT_S, gt=0, description="a request whose ext_proc stream waited "
        "longer than this inside the EPP (gRPC backlog, event loop) is answered 429 the same "
        "way; measured only behind a gateway that sends llmd's grpc-timeout (llmd's does). "
        "Keep it well below the gateway's ext_proc message timeout (15 s in llmd's)")
    max_endpoints: int = Field(default=4096, gt=0)
    drain_timeout_s: float = Field(default=5.0, ge=0)
    peers: tuple[str, ...] = Field(default=(), description="host:port of peer replicas' sync "
                                   "sockets (with the config's peer discovery, if any); "
                                   "without dataLayer.crossReplica a zmq-mesh-syncer with its "
                                   "defaults is used")
    sync_port: int | None = Field(default=None, ge=0, lt=65536, description="the replica "
                                  "sync socket's port (default: the syncer's `port`)")

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(parse_peer(p) for p in value)


@dataclass(frozen=True, slots=True)
class Listening:
    host: str
    grpc_port: int
    health_port: int
    metrics_port: int
    sync_port: int | None = None

    def lines(self) -> list[str]:
        """`listening on HOST:PORT (what)` for each port, as fixtures and `llmd up` read them."""
        sync = ([f"listening on {self.host}:{self.sync_port} (replica sync)"]
                if self.sync_port is not None else [])
        return [f"listening on {self.host}:{self.grpc_port} (ext_proc)",
                f"listening on {self.host}:{self.health_port} (grpc health)",
                f"listening on {self.host}:{self.metrics_port} (metrics)", *sync]


def build_config(settings: EppSettings, registry: PluginRegistry = PLUGINS
                 ) -> EndpointPickerConfig:
    """Load the EndpointPickerConfig the settings name (llm-d's default if none)."""
    given = [flag for flag, value in (("--config-file", settings.config_file),
                                      ("--config-text", settings.config_text),
                                      ("--values", settings.values_file)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of --config-file, --config-text or --values, not "
                          f"{' and '.join(given)}")
    return load_config(settings.config_file, text=settings.config_text, registry=registry,
                       values=settings.values_file)


async def serve(
    settings: EppSettings,
    stop: asyncio.Event,
    *,
    discovery: Discovery | None = None,
    registry: PluginRegistry = PLUGINS,
    on_listening: Callable[[Listening], None] | None = None,
    kube: object = None,
) -> None:
    """Run the EPP until `stop` is set; if any root task fails, all of them stop. `kube`: a
    `KubeApi` for `k8s-peer-discovery` (default: the pod's own)."""
    config = build_config(settings, registry)
    objectives = load_objectives(settings.objectives_file) if settings.objectives_file else {}
    if discovery is None and config.discovery is not None:
        if settings.endpoints or settings.endpoints_file is not None:
            raise ConfigError(f"{config.source}: dataLayer.discovery.endpoints names "
                              f"{config.discovery.name!r}; give no --endpoint or "
                              "--endpoints-file with it")
        discovery = config.discovery
    if discovery is None:
        specs = list(settings.endpoints)
        if settings.endpoints_file is not None:
            specs += load_endpoints_file(settings.endpoints_file)
        discovery = StaticDiscovery(specs)
    log.info("pool %s/%s, config %s: %s", settings.pool_namespace, settings.pool_name,
             config.source, config.describe())

    registry_ = CollectorRegistry()
    metrics = EppMetrics(registry_)
    store = Datastore(max_endpoints=settings.max_endpoints)
    registry_.register(PoolCollector(store))
    sync_config = _sync_config(config, settings)
    ledger = None
    if sync_config is not None:
        ledger = InflightLedger(max_age_s=settings.stale_after_s)
        attach_inflight(store, ledger, sync_config.syncer)
    flow = None
    if config.flow_control is not None:
        flow = FlowController(config.flow_control, store, config.detector,
                              FlowControlMetrics(registry_), max_wait_s=settings.max_wait_s,
                              tick_s=settings.refresh_metrics_interval_s)
        store.on_change(flow.poke)
        log.info("flow control: %s (TTL capped at --max-wait-s %g s)",
                 config.flow_control.describe(), settings.max_wait_s)
    director = Director(store, config, metrics, objectives,
                        fallback_endpoints=settings.fallback_endpoints, inflight=ledger)
    scrape = _scrape_settings(config, settings)

    async with AsyncExitStack() as stack:
        grpc_server = grpc.aio.server(options=grpc_options(settings.max_body_bytes,
                                                           settings.max_pending_streams))
        servicer = ExtProcServicer(director, settings.max_body_bytes,
                                   settings.max_pending_streams, settings.max_wait_s, flow)
        metrics.pending_streams.set_function(lambda: servicer.pending)
        pb_grpc.add_ExternalProcessorServicer_to_server(servicer, grpc_server)
        grpc_port = _bind_grpc(grpc_server, settings.host, settings.grpc_port, "--grpc-port")

        health = health_aio.HealthServicer()
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
        health_port = _bind_grpc(health_server, settings.host, settings.health_port,
                                 "--grpc-health-port")

        metrics_runner, metrics_port = await _metrics_app(registry_, settings)
        stack.push_async_callback(metrics_runner.cleanup)
        sync, sync_port = None, None
        if sync_config is not None and ledger is not None and sync_config.syncer.shares:
            sync = _replica_sync(sync_config, config, settings, store, ledger, registry_, kube)
            stack.callback(sync.close)
            sync_port = sync.bind(settings.sync_port if settings.sync_port is not None
                                  else _syncer_params(sync_config).port)
        await grpc_server.start()
        stack.push_async_callback(_stop_grpc, grpc_server, settings.drain_timeout_s)
        await health_server.start()
        stack.push_async_callback(_stop_grpc, health_server, 0.0)

        session = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=2),
            timeout=aiohttp.ClientTimeout(total=settings.scrape_timeout_s),
        ))
        scraper = Scraper(store, session, scrape, metrics)

        # With peers, only liveness is SERVING until the replica caught up (see replica_sync).
        serving = HEALTH_SERVICES if sync is None else ("liveness",)
        for service in HEALTH_SERVICES:
            await health.set(service, health_pb2.HealthCheckResponse.SERVING if service in serving
                             else health_pb2.HealthCheckResponse.NOT_SERVING)
        listening = Listening(settings.host, grpc_port, health_port, metrics_port, sync_port)
        for line in listening.lines():
            log.info("%s", line)
        if on_listening is not None:
            on_listening(listening)
        try:
            discovered = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_follow(discovery, store, stop, discovered), name="discovery")
                if sync is not None:
                    tg.create_task(sync.run(stop, discovered), name="replica sync")
                    tg.create_task(_serve_when_ready(sync, health, stop), name="catch-up")
                if config.metrics is not None:
                    tg.create_task(scraper.run(stop), name="scraper")
                if flow is not None:
                    tg.create_task(flow.run(stop), name="flow control")
                context = PluginContext(store, registry_)
                for plugin in config.background:
                    tg.create_task(plugin.run(context, stop), name=f"plugin {plugin.name}")
                tg.create_task(stop.wait(), name="stop")
        finally:
            for service in HEALTH_SERVICES:
                await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)


def attach_inflight(store: Datastore, ledger: InflightLedger, syncer: CrossReplicaSyncer
                    ) -> None:
    """Scrapes always reset the ledger's gauges (they are shared and exported); the load
    scorers see them only when the syncer counts in-flight requests."""
    store.attach_inflight(ledger.totals if syncer.counts_inflight else {}, ledger.scraped)


def _scrape_settings(config: EndpointPickerConfig, settings: EppSettings) -> ScrapeSettings:
    """The scraper's settings: intervals from the flags, URL and adapter from the data layer."""
    if config.metrics is None:
        log.info("dataLayer has no sources: endpoints are not scraped")
        return ScrapeSettings()
    source, extractor = config.metrics.source, config.metrics.extractor
    log.info("metrics: %s://<endpoint>%s (%s), read by %s", source.scheme, source.path,
             source.name, extractor.name)
    return ScrapeSettings(interval_s=settings.refresh_metrics_interval_s,
                          timeout_s=settings.scrape_timeout_s,
                          stale_after_s=settings.stale_after_s, path=source.path,
                          scheme=source.scheme, verify_tls=source.verify_tls,
                          engine_of=extractor.engine_of)


def _sync_config(config: EndpointPickerConfig, settings: EppSettings
                 ) -> ReplicaSyncConfig | None:
    sync = config.replica_sync
    if sync is None and settings.peers:
        log.info("--peer without dataLayer.crossReplica: a zmq-mesh-syncer with its defaults")
        return ReplicaSyncConfig(ZmqMeshSyncer(ZmqMeshSyncer.type, ZmqMeshSyncer.Params()))
    if sync is not None and not sync.syncer.shares and (settings.peers or
                                                        settings.sync_port is not None):
        raise ConfigError(f"--peer/--sync-port: the config's syncer {sync.syncer.name!r} "
                          f"({sync.syncer.type}) shares nothing; use a {ZmqMeshSyncer.type}")
    return sync


def _syncer_params(sync: ReplicaSyncConfig) -> ZmqMeshSyncer.Params:
    params = getattr(sync.syncer, "params", None)
    return params if isinstance(params, ZmqMeshSyncer.Params) else ZmqMeshSyncer.Params()


def _replica_sync(sync: ReplicaSyncConfig, config: EndpointPickerConfig, settings: EppSettings,
                  store: Datastore, ledger: InflightLedger, registry: CollectorRegistry,
                  kube: object) -> ReplicaSync:
    producers = {name: p for name, p in config.plugins.items()
                 if isinstance(p, ApproxPrefixCacheProducer)
                 and p.params.sync_cross_replica_state}
    return ReplicaSync(sync, _syncer_params(sync), store=store, ledger=ledger,
                       producers=producers, metrics=SyncMetrics(registry), host=settings.host,
                       static_peers=settings.peers, kube=kube)


async def _serve_when_ready(sync: ReplicaSync, health: health_aio.HealthServicer,
                           stop: asyncio.Event) -> None:
    ready = asyncio.ensure_future(sync.ready.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait((ready, stopped), return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopped.cancel()
    if stop.is_set():
        return
    for service in HEALTH_SERVICES:
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)


async def _follow(discovery: Discovery, store: Datastore, stop: asyncio.Event,
                  discovered: asyncio.Event) -> None:
    async for specs in discovery.updates(stop):
        store.set_endpoints(specs)
        discovered.set()
    if not stop.is_set():
        raise RuntimeError("endpoint discovery ended while the EPP was serving")


def _bind_grpc(server: grpc.aio.Server, host: str, port: int, flag: str) -> int:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError as exc:
        raise ConfigError(f"{flag} {port}: cannot listen on {target} ({exc}); "
                          "is the port taken?") from exc
    if bound == 0:
        raise ConfigError(f"{flag} {port}: cannot listen on {target}; is the port taken?")
    return int(bound)


async def _stop_grpc(server: grpc.aio.Server, grace_s: float) -> None:
    await server.stop(grace_s)


async def _metrics_app(registry: CollectorRegistry, settings: EppSettings
                       ) -> tuple[web.AppRunner, int]:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        sock = socket.create_server((settings.host, settings.metrics_port),
                                    family=socket.AF_INET6 if ":" in settings.host
                                    else socket.AF_INET)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"--metrics-port {settings.metrics_port}: cannot listen on "
                          f"{settings.host} ({exc.strerror}); is the port taken?") from exc
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, int(sock.getsockname()[1])
