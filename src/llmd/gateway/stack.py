"""The local stack behind `llmd up`: a simulator fleet, the llmd EPP and Envoy, as child processes.

    async with LocalStack(StackSpec(gateway_port=0, base_port=0)) as stack:
        print(stack.url)                       # the gateway: send OpenAI requests here
        await stack.wait(stop)                 # until `stop`, restarting children that die

Start order: the simulators (in parallel, each until its engine's health probe answers), then
`llmd epp` with static discovery of exactly that fleet (each endpoint labelled with its engine
type; `epp_replicas` of them in parallel, see `llmd.gateway._epps`), then Envoy with ext_proc to
the EPP (several replicas: round robin per stream, health-checked, with a failover pass; see
`llmd.gateway._epp_cluster`). With `epp=False` Envoy is plain round-robin over the
fleet (the baseline of `bench/epp_overhead.py`). Every child runs under one `llmd._proc`
`Supervisor`: leaving the block, an error, a child dying at start or Ctrl-C stops all of them
(SIGTERM, bounded wait, SIGKILL; children also die with this process). While `wait` runs, a
child that dies (simulator, sidecar, EPP, Envoy) is started again on the same ports after a
backoff and the rest keep serving: the EPP takes a dead endpoint out of scheduling at its next
scrape and back at its first good one, Envoy retries a refused connection on the EPP's next
endpoint, and while the EPP itself is down Envoy applies the failure mode (FailOpen: round
robin; FailClose: JSON 503). `wait` raises `ChildError` only when a child crash-loops (more
than `max_restarts` exits within `restart_window_s`).

Ports: `base_port + i` for the i-th simulator, then each EPP replica's ext_proc, gRPC health and
metrics ports (3 per replica; with several replicas a 4th, its replica-sync port);
`base_port=0` makes every one of them ephemeral.
`gateway_port=0` likewise.

KV events: when the EPP config routes by the engines' KV events (a precise prefix-cache
plugin), every simulator publishes them in its dialect and the EPP's endpoint flags say where
(`llmd.gateway._kv_events`); the EPP config is loaded before anything starts, so its errors
come first.

External servers (`external`, `llmd up --endpoint`): no simulator is started. Each server is
probed until it answers (`endpoint_wait_s`) and its engine, model and P/D role are detected
where the flag does not give them (`llmd.gateway._external`); the EPP's pool is exactly those
servers (labelled with engine and role) and Envoy routes to them; a server that dies later is
the EPP's to notice (health). With `pd`, every `role=decode` server gets a sidecar of ours (on
`base_port + i` for the i-th server with a fixed `base_port`), which the EPP and Envoy route
to in its place.

P/D (`pd=True`, `llmd up --pd`): each `engines` entry is a `--role decode` simulator behind its
own `llmd sidecar` (the engine adapter's connector), and every engine named gets
`prefill_per_engine` `--role prefill` simulators (see `llmd.gateway._pd`). The EPP's pool is the
sidecars (`role=decode`) and the prefill sims (`role=prefill`), with the built-in P/D config
(`PD_EPP_CONFIG`) unless one is given; `endpoints` are then the sidecars, what Envoy routes
to, and `prefill`/`decode` the simulators. Ports with a fixed `base_port`: decode sims, prefill
sims, sidecars, then the EPP's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import Field, model_validator

from llmd._proc import Child, RestartPolicy, Supervisor, SupervisorEvent
from llmd.config import LlmdModel
from llmd.engines import ENGINES, EngineName, get_adapter
from llmd.epp import load_config
from llmd.errors import ConfigError
from llmd.gateway._discovered import discovered_servers
from llmd.gateway._epps import (
    EppProcess,
    epp_argv,
    epp_port_names,
    epp_ports,
    replica_name,
    start_epps,
)
from llmd.gateway._external import (
    SERVER_FLAG,
    FrontedServer,
    ServerFlag,
    parse_server_flag,
    resolve_servers,
    start_fronted_pd,
)
from llmd.gateway._kv_events import SimChild, SimKvEvents, plan_kv_events
from llmd.gateway._pd import PD_EPP_CONFIG, PdArgs, PdLayout, needs_side_port, start_pd_fleet
from llmd.gateway.envoy import ExtProcMode, FailureMode, GatewaySpec
from llmd.gateway.runner import EnvoyGateway
from llmd.sim.fleet import FleetEndpoint, FleetSpec, Progress, start_fleet

__all__ = ["EppProcess", "LocalStack", "StackSpec"]


class StackSpec(LlmdModel):
    """What `LocalStack` starts. Defaults are `llmd up`'s except the ports (ephemeral here)."""

    engines: tuple[EngineName, ...] = Field(
        ("vllm", "vllm", "sglang", "sglang"), min_length=1,
        description="one simulator per entry, in this order")
    model: str = "llmd-sim"
    host: str = "127.0.0.1"
    gateway_port: int = Field(0, ge=0, lt=65536, description="Envoy's listener; 0 = ephemeral")
    base_port: int = Field(0, ge=0, lt=65536,
                           description="simulators, then the EPP's 3 ports; 0 = ephemeral")
    time_scale: float = Field(1.0, ge=0, description="simulators' latency factor; 0 = none")
    sim_args: tuple[str, ...] = Field((), description="extra `llmd sim` flags for every sim")
    epp: bool = Field(True, description="False: Envoy round-robin over the fleet, no EPP")
    epp_config_file: Path | None = None
    epp_config_text: str | None = None
    epp_args: tuple[str, ...] = Field((), description="extra `llmd epp` flags")
    epp_replicas: int = Field(1, ge=1, le=8, description="`llmd epp` processes, each on its "
                              "own ports; Envoy spreads ext_proc streams over them and fails "
                              "over when one dies")
    failure_mode: FailureMode = "FailClose"
    ext_proc_mode: ExtProcMode = Field("buffered", description="how Envoy talks to the EPP "
                                       "(see GatewaySpec.ext_proc_mode)")
    fallback_endpoints: int = Field(2, ge=0, le=16, description="`llmd epp "
                                    "--fallback-endpoints`: endpoints Envoy tries after a "
                                    "refused connection to the EPP's pick")
    envoy_concurrency: int = Field(1, ge=1, description="Envoy worker threads")
    start_timeout_s: float = Field(60.0, gt=0, description="per child, to become healthy")
    pd: bool = Field(False, description="P/D: engines are decode sims behind sidecars, plus "
                     "prefill sims; the EPP gets the P/D config")
    prefill_per_engine: int = Field(1, ge=1, le=8, description="P/D: prefill sims per engine")
    bootstrap_port: int = Field(0, ge=0, lt=65536, description="P/D: the shared SGLang "
                                "bootstrap port of prefill sims; 0 = ephemeral")
    prefill_args: tuple[str, ...] = Field((), description="P/D: extra flags, prefill sims")
    sidecar_args: tuple[str, ...] = Field((), description="P/D: extra `llmd sidecar` flags")
    ssrf_protection: bool = Field(True, description="P/D: sidecars send prefill legs only to "
                                  "their engine's prefill sims")
    max_restarts: int = Field(5, ge=0, description="restarts of one child within "
                              "restart_window_s before `wait` gives up (a crash loop)")
    restart_window_s: float = Field(60.0, gt=0)
    external: tuple[str, ...] = Field(
        (), description=f"existing model servers to front instead of simulators, each "
        f"`{SERVER_FLAG}`; engine, model and role are detected where not given; the stack "
        "then starts only the EPP and Envoy (and, with pd, a sidecar per decode server)")
    endpoint_wait_s: float = Field(120.0, ge=0, description="how long to wait at start for "
                                   "each external server to answer /v1/models")
    external_origin: str = Field("--endpoint", description="where `external` came from, as "
                                 "errors name it (the flag, or a config's endpoint list)")

    @model_validator(mode="before")
    @classmethod
    def _config_endpoints(cls, data: Any) -> Any:
        """An EPP config naming its endpoints (`dataLayer.discovery.endpoints`) fronts them as
        `external` servers (`_discovered`)."""
        if not isinstance(data, dict):
            return data
        path, text = data.get("epp_config_file"), data.get("epp_config_text")
        source = "epp config"
        if path is not None and text is None:
            source = f"--epp-config-file {path}"
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        found = discovered_servers(text, source) if text is not None else None
        if found is None:
            return data
        if data.get("external"):
            raise ConfigError(f"{source}: dataLayer.discovery.endpoints names the servers; "
                              "give either it or --endpoint, not both")
        flags, stripped = found
        return {**data, "external": flags, "epp_config_file": None,
                "epp_config_text": stripped,
                "external_origin": f"{source}: dataLayer.discovery endpoint"}

    @model_validator(mode="after")
    def _endpoints(self) -> StackSpec:
        for item in self.external:
            try:
                parse_server_flag(item, self.external_origin)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _checks(self) -> StackSpec:
        if self.epp_config_file is not None and self.epp_config_text is not None:
            raise ValueError("give epp_config_file or epp_config_text, not both")
        n = self.fleet_size()
        epp_ports = len(epp_port_names(self.epp_replicas)) * self.epp_replicas
        if self.base_port and self.base_port + n + epp_ports > 65536:
            raise ValueError(f"base_port {self.base_port} leaves no room for {n} "
                             f"simulators/sidecars and the EPP replicas' {epp_ports} ports")
        if self.pd and not self.external and self.host != "127.0.0.1" and any(
                needs_side_port(e, self.model) and self.prefill_per_engine > 1
                for e in self.engines):
            raise ValueError(f"prefill_per_engine {self.prefill_per_engine}: prefill sims that "
                             "share a bootstrap port need loopback aliases (127.0.0.2, ...); "
                             "use host 127.0.0.1 or one prefill sim per engine")
        return self

    def fleet_size(self) -> int:
        """Processes (or, fronting external servers, port slots) before the EPP's: with pd
        one per external server, for the sidecar of each decode server."""
        if self.external:
            return len(self.external) if self.pd else 0
        return self.pd_layout().size if self.pd else len(self.engines)

    def pd_layout(self) -> PdLayout:
        """P/D children and their ports (decode sims, prefill sims, sidecars)."""
        named = tuple(dict.fromkeys(self.engines))
        return PdLayout(self.engines, tuple(e for e in named
                                            for _ in range(self.prefill_per_engine)),
                        self.base_port)

    def pd_args(self) -> PdArgs:
        return PdArgs(self.model, self.host, self.bootstrap_port,
                      ("--time-scale", repr(self.time_scale), *self.sim_args),
                      self.prefill_args, self.sidecar_args, self.start_timeout_s,
                      self.ssrf_protection)

    def epp_config(self) -> tuple[Path | None, str | None]:
        """The EPP's config: (file, text), text being P/D's built-in one when nothing is
        given with `pd`; (None, None) is llm-d's default config."""
        if self.epp_config_file is None and self.epp_config_text is None and self.pd:
            return None, PD_EPP_CONFIG
        return self.epp_config_file, self.epp_config_text

    def sim_children(self) -> list[SimChild]:
        """Every simulator the stack starts, with the port the EPP schedules it on (a decode
        sim's sidecar's) when the ports are fixed."""
        if self.external:
            return []
        if not self.pd:
            return [SimChild(name, engine, self.base_port + i if self.base_port else 0)
                    for i, (name, engine) in enumerate(zip(self.fleet().child_names(),
                                                           self.engines, strict=True))]
        layout = self.pd_layout()
        return ([SimChild(f"prefill-{e}-{i}", e, layout.port("prefill", i))
                 for i, e in enumerate(layout.prefill)]
                + [SimChild(f"decode-{e}-{i}", e, layout.port("sidecar", i))
                   for i, e in enumerate(layout.decode)])

    def servers(self) -> list[ServerFlag]:
        """The external servers' flags, parsed."""
        return [parse_server_flag(text, self.external_origin) for text in self.external]

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(max_restarts=self.max_restarts, window_s=self.restart_window_s)

    def fleet(self) -> FleetSpec:
        return FleetSpec(engines=self.engines, model=self.model, host=self.host,
                         port_base=self.base_port,
                         sim_args=("--time-scale", repr(self.time_scale), *self.sim_args))

    def fixed_ports(self) -> list[tuple[str, int]]:
        """`(what, port)` for every non-ephemeral port the stack will bind."""
        ports = [("gateway", self.gateway_port)] if self.gateway_port else []
        if self.pd and self.bootstrap_port and any(needs_side_port(e, self.model)
                                                   for e in self.engines):
            ports.append(("prefill bootstrap", self.bootstrap_port))
        if self.base_port:
            if self.external:
                pass
            elif self.pd:
                ports += self.pd_layout().names()
            else:
                ports += [(f"sim-{e}-{i}", self.base_port + i)
                          for i, e in enumerate(self.engines)]
            for r in range(self.epp_replicas if self.epp else 0):
                ports += [(f"{replica_name(r, self.epp_replicas)} {what}", port)
                          for what, port in zip(epp_port_names(self.epp_replicas),
                                                epp_ports(self, r), strict=True)]
        return ports


class LocalStack:
    """Fleet + EPP + Envoy, started on enter, stopped on exit (also when starting fails).

    After entering: `url` (the gateway), `endpoints` (the fleet, in `spec.engines` order),
    `epps` (the EPP replicas; `epp` is the first, None with `spec.epp=False`), `gateway` (the
    `EnvoyGateway`, its `admin_url` and `child.proc.pid`). `on_progress(name, state)` is told
    "starting" and "ready" per child (names: `sim-<engine>-<i>`, `epp` or with several
    replicas `epp-<i>`, `envoy`).
    """

    def __init__(self, spec: StackSpec, *, on_progress: Progress | None = None,
                 log_level: str = "warning") -> None:
        self.spec = spec
        self.log_level = log_level
        self._progress = on_progress or (lambda name, state: None)
        self._stack = contextlib.AsyncExitStack()
        self._sup = Supervisor()
        self.endpoints: list[FleetEndpoint] = []
        self.prefill: list[FleetEndpoint] = []
        self.decode: list[FleetEndpoint] = []
        self.servers: list[FrontedServer] = []
        """The external servers (`spec.external`), identified."""
        self.epp_endpoints: list[str] = []
        """The EPP's `--endpoint` flags when fronting external servers."""
        self.epps: list[EppProcess] = []
        """The EPP replicas, `spec.epp_replicas` of them (none with `spec.epp=False`)."""
        self.epp_sync_ports: list[int] = []
        """Each replica's replica-sync port (none with one replica)."""
        self.gateway: EnvoyGateway | None = None
        self.kv_events: SimKvEvents | None = None
        """The simulators' KV-event flags, when the EPP config routes by KV events."""

    def epp_argv(self, index: int, ports: list[int] | None = None) -> list[str]:
        """Replica `index`'s `llmd epp` command line (first start and restarts alike; a
        benchmark may wrap it, e.g. to profile the EPP)."""
        return epp_argv(self, index, ports)

    @property
    def url(self) -> str:
        assert self.gateway is not None, "the stack is not running"
        return self.gateway.url

    @property
    def model(self) -> str:
        """The model the pool serves: the external servers' when fronting them."""
        return self.servers[0].model if self.servers else self.spec.model

    @property
    def epp(self) -> EppProcess | None:
        """The first EPP replica (the only one by default); None without an EPP."""
        return self.epps[0] if self.epps else None

    @property
    def children(self) -> list[Child]:
        """Every child process (for pids and output tails)."""
        return list(self._sup.children)

    async def __aenter__(self) -> LocalStack:
        try:
            check_ports_free(self.spec.host, self.spec.fixed_ports())
            self.kv_events = self._plan_kv_events()
            await self._stack.enter_async_context(self._sup)
            per_sim = self.kv_events.sim_args if self.kv_events else {}
            if self.spec.external:
                await self._front_servers()
            elif self.spec.pd:
                pd = await start_pd_fleet(
                    self._sup, self.spec.pd_layout(),
                    dataclasses.replace(self.spec.pd_args(), per_sim_args=per_sim),
                    self._progress)
                self.prefill, self.decode, self.endpoints = pd.prefill, pd.decode, pd.sidecars
            else:
                self.endpoints = await start_fleet(
                    self._sup, dataclasses.replace(self.spec.fleet(), per_sim_args=per_sim),
                    self._progress)
            if self.spec.epp:
                self.epps = await start_epps(self._sup, self, self._progress)
            self._progress("envoy", "starting")
            self.gateway = await self._stack.enter_async_context(EnvoyGateway(
                GatewaySpec(host=self.spec.host, port=self.spec.gateway_port,
                            epp=tuple(e.replica for e in self.epps),
                            failure_mode=self.spec.failure_mode,
                            ext_proc_mode=self.spec.ext_proc_mode,
                            endpoints=tuple(e.address for e in self.endpoints)),
                supervisor=self._sup, concurrency=self.spec.envoy_concurrency,
                ready_timeout_s=self.spec.start_timeout_s))
            self._progress("envoy", "ready")
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def wait(self, stop: asyncio.Event, on_event: SupervisorEvent | None = None) -> None:
        """Run until `stop` is set, restarting children that exit (`on_event` hears of each);
        `ChildError` names a child that crash-loops."""
        await self._sup.supervise(stop, self.spec.restart_policy(), on_event)

    def child(self, name: str) -> Child:
        """The live child called `name` (its pid changes when it is restarted)."""
        return next(c for c in self._sup.children if c.spec.name == name)

    async def _front_servers(self) -> None:
        """Identify the external servers; with pd, start a sidecar per decode server."""
        self.servers = await resolve_servers(self.spec.servers(), self.spec.endpoint_wait_s,
                                             self._progress)
        if not self.spec.pd:
            self.endpoints = [s.endpoint for s in self.servers]
            self.epp_endpoints = [s.epp_flag() for s in self.servers]
            return
        pd = await start_fronted_pd(self._sup, self.servers, self.spec.pd_args(),
                                    self.spec.base_port, self._progress)
        self.prefill = [s.endpoint for s in pd.prefill]
        self.decode = [s.endpoint for s in pd.decode]
        self.endpoints = pd.sidecars
        self.epp_endpoints = [s.epp_flag(sidecar.address, "decode")
                              for s, sidecar in zip(pd.decode, pd.sidecars, strict=True)]
        self.epp_endpoints += [s.epp_flag() for s in pd.prefill]

    def _plan_kv_events(self) -> SimKvEvents | None:
        """Load the EPP config (its errors surface before anything starts) and, when it routes
        by KV events, plan the simulators' (see `llmd.gateway._kv_events`)."""
        if not self.spec.epp or self.spec.external:
            return None
        config_file, text = self.spec.epp_config()
        config = load_config(config_file, text=text)
        run_dir = Path(tempfile.mkdtemp(prefix="llmd-up-"))
        self._stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
        return plan_kv_events(config, self.spec.sim_children(), model=self.spec.model,
                              host=self.spec.host, run_dir=run_dir,
                              sim_flags=self.spec.sim_args)


def check_ports_free(host: str, ports: list[tuple[str, int]]) -> None:
    """Raise `ConfigError` naming the first fixed port something else already listens on."""
    seen: dict[int, str] = {}
    for what, port in ports:
        if port in seen:
            raise ConfigError(f"port {port} is asked for twice ({seen[port]} and {what})")
        seen[port] = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                reason = ("already in use" if exc.errno == errno.EADDRINUSE
                          else exc.strerror or str(exc))
                raise ConfigError(f"{what}: cannot listen on {host}:{port} ({reason}); free "
                                  "it or pick other ports (--gateway-port, --base-port)"
                                  ) from None



def engines_from_flag(text: str, per_engine: int = 2) -> tuple[EngineName, ...]:
    """`vllm,sglang` (each `per_engine` times) or `vllm=3,sglang=1` → the fleet's engines."""
    out: list[EngineName] = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, count_text = item.partition("=")
        if name not in ENGINES:
            raise ConfigError(f"--engines: {name!r} is not an engine (allowed: "
                              f"{', '.join(ENGINES)})")
        count = per_engine
        if sep:
            if not count_text.isdigit():
                raise ConfigError(f"--engines: {item!r}: the count must be a whole number")
            count = int(count_text)
        out += [get_adapter(name).name] * count
    if not out:
        raise ConfigError(f"--engines {text!r}: ask for at least one simulator")
    return tuple(out)
