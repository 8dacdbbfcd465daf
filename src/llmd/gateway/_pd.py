"""The P/D half of `LocalStack` (`StackSpec.pd`): prefill sims, decode sims, one sidecar each.

Per engine named in `engines`: `prefill_per_engine` simulators with `--role prefill`, and one
`--role decode` simulator per `engines` entry, each behind its own `llmd sidecar` whose
`--kv-connector` is the engine adapter's `sidecar_connector`. The EPP's pool is the sidecars
(role decode) and the prefill simulators (role prefill); Envoy only ever talks to sidecars.

Side ports (SGLang's bootstrap server): the sidecar sends every SGLang prefill leg's
`bootstrap_port` from one flag, so all prefill sims of such an engine share one port number.
The first one binds `bootstrap_port` (0: an ephemeral one, read from its `bootstrap listening
on` line); the others bind that same number on their own loopback address, 127.0.0.2,
127.0.0.3, ... (Linux routes all of 127.0.0.0/8 to `lo`; macOS needs `ifconfig lo0 alias`).

SSRF protection (`PdArgs.ssrf_protection`, on unless `llmd up --no-ssrf-protection`): each
sidecar may send prefill legs only to the prefill sims of its own engine (`--prefill-allow
host:port` each), so a client calling a sidecar directly cannot make it fetch anything else.

Every child is restartable: a restart pins the ports (and SGLang bootstrap port) it bound first.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmd._proc import Child, ChildError, ChildSpec, Supervisor, http_ready
from llmd.engines import EngineName, ServeSpec, get_adapter
from llmd.sim.fleet import FleetEndpoint, Progress, sim_argv

__all__ = ["PD_EPP_CONFIG", "PdArgs", "PdFleet", "PdLayout", "needs_side_port",
           "start_pd_fleet", "start_sidecar"]

SIDECAR_HEALTH = "/health"

PD_EPP_CONFIG = """\
# examples/epp-pd.yaml plus llmd's decode-engine-filter in the prefill profile, so a pool that
# holds both engines pairs each decode endpoint with a prefill endpoint of its own engine.
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: disagg-profile-handler
  parameters: {deciders: {prefill: prefix-based-pd-decider}}
- type: prefix-based-pd-decider
  parameters: {nonCachedTokens: 16}
- type: approx-prefix-cache-producer
  parameters: {blockSizeTokens: 16}
- type: decode-filter
- type: prefill-filter
- type: decode-engine-filter
- type: prefix-cache-scorer
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: max-score-picker
schedulingProfiles:
- name: decode
  plugins:
  - pluginRef: decode-filter
  - {pluginRef: prefix-cache-scorer, weight: 3}
  - {pluginRef: queue-scorer, weight: 2}
  - {pluginRef: kv-cache-utilization-scorer, weight: 2}
  - pluginRef: max-score-picker
- name: prefill
  plugins:
  - pluginRef: prefill-filter
  - pluginRef: decode-engine-filter
  - {pluginRef: prefix-cache-scorer, weight: 1}
  - {pluginRef: queue-scorer, weight: 2}
  - pluginRef: max-score-picker
"""


def needs_side_port(engine: EngineName, model: str) -> bool:
    """Whether the engine's prefill server listens on a second, shared port (SGLang bootstrap)."""
    return bool(get_adapter(engine).side_ports(ServeSpec(model=model, role="prefill")))


def loopback_alias(host: str, k: int) -> str:
    """The k-th side-port prefill sim's host: `host` first, then 127.0.0.2, 127.0.0.3, ..."""
    return host if k == 0 else f"127.0.0.{k + 1}"


@dataclass(frozen=True, slots=True)
class PdLayout:
    """Which child gets which port: decode sims, prefill sims, sidecars (`base=0`: all 0)."""

    decode: tuple[EngineName, ...]
    prefill: tuple[EngineName, ...]
    base: int

    @property
    def size(self) -> int:
        return 2 * len(self.decode) + len(self.prefill)

    def port(self, kind: str, i: int) -> int:
        if not self.base:
            return 0
        offset = {"decode": 0, "prefill": len(self.decode),
                  "sidecar": len(self.decode) + len(self.prefill)}[kind]
        return self.base + offset + i

    def names(self) -> list[tuple[str, int]]:
        """`(child name, port)` of every child, in start order."""
        out = [(f"prefill-{e}-{i}", self.port("prefill", i)) for i, e in enumerate(self.prefill)]
        out += [(f"decode-{e}-{i}", self.port("decode", i)) for i, e in enumerate(self.decode)]
        out += [(f"sidecar-{e}-{i}", self.port("sidecar", i)) for i, e in enumerate(self.decode)]
        return out


@dataclass(frozen=True, slots=True)
class PdFleet:
    """The running P/D children. `sidecars[i]` fronts `decode[i]`; `side_ports` maps each
    engine with a shared prefill side port (SGLang bootstrap) to its number."""

    prefill: list[FleetEndpoint]
    decode: list[FleetEndpoint]
    sidecars: list[FleetEndpoint]
    side_ports: dict[EngineName, int]


@dataclass(frozen=True, slots=True)
class PdArgs:
    model: str
    host: str
    bootstrap_port: int
    sim_args: tuple[str, ...]
    prefill_args: tuple[str, ...]
    sidecar_args: tuple[str, ...]
    start_timeout_s: float
    ssrf_protection: bool = True
    per_sim_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """More flags for the simulator of that child name (`decode-<engine>-<i>`, ...)."""


async def start_pd_fleet(sup: Supervisor, layout: PdLayout, args: PdArgs,
                         progress: Progress) -> PdFleet:
    """Start prefill sims (side-port ones first, to learn the shared port), decode sims, then
    one sidecar per decode sim, each until healthy. `ChildError` names the first failure."""
    prefill: dict[int, FleetEndpoint] = {}
    side_ports: dict[EngineName, int] = {}
    alias = 0
    order: list[tuple[int, EngineName, str]] = []
    for i, engine in enumerate(layout.prefill):
        host = args.host
        if needs_side_port(engine, args.model):
            host = loopback_alias(args.host, alias)
            alias += 1
        order.append((i, engine, host))

    async def start_sim(name: str, engine: EngineName, host: str, port: int,
                        extra: Callable[[int | None], list[str]], side: bool) -> FleetEndpoint:
        """`extra(side_port)`: the sim's flags; on a restart, with the side port it bound."""
        progress(name, "starting")

        def same_ports(child: Child) -> list[str]:
            side_port = child.first_addresses[1][1] if side else None
            return sim_argv(engine, args.model, host, child.port, extra(side_port))

        child = await sup.start(ChildSpec(
            name, sim_argv(engine, args.model, host, port, extra(None)),
            start_timeout_s=args.start_timeout_s, listening_lines=1 + side,
            ready=http_ready(get_adapter(engine).probes.liveness.path),
            restart_argv=same_ports))
        if side:
            side_ports.setdefault(engine, child.addresses[1][1])
        progress(name, "ready")
        return FleetEndpoint(name, engine, child.host, child.port, child.proc.pid)

    def prefill_extra(i: int, engine: EngineName) -> Callable[[int | None], list[str]]:
        extra = [*args.sim_args, "--role", "prefill", *args.prefill_args,
                 *args.per_sim_args.get(f"prefill-{engine}-{i}", ())]
        if not needs_side_port(engine, args.model):
            return lambda _: extra
        first = side_ports.get(engine, args.bootstrap_port)
        return lambda bound: extra + ["--disaggregation-bootstrap-port",
                                      str(first if bound is None else bound)]

    async def start_prefill(i: int, engine: EngineName, host: str) -> None:
        prefill[i] = await start_sim(f"prefill-{engine}-{i}", engine, host,
                                     layout.port("prefill", i), prefill_extra(i, engine),
                                     needs_side_port(engine, args.model))

    # The first side-port prefill sim of each engine fixes the shared port for the others.
    firsts = {engine: (i, host) for i, engine, host in reversed(order)
              if needs_side_port(engine, args.model)}
    await _all([start_prefill(i, e, h) for e, (i, h) in firsts.items()])
    decode: dict[int, FleetEndpoint] = {}

    async def start_decode(i: int, engine: EngineName) -> None:
        name = f"decode-{engine}-{i}"
        extra = [*args.sim_args, "--role", "decode", *args.per_sim_args.get(name, ())]
        decode[i] = await start_sim(name, engine, args.host,
                                    layout.port("decode", i), lambda _: extra, False)

    await _all([start_prefill(i, e, h) for i, e, h in order if i not in prefill]
               + [start_decode(i, e) for i, e in enumerate(layout.decode)])
    sidecars: dict[int, FleetEndpoint] = {}

    async def start_one(i: int, engine: EngineName) -> None:
        allow = tuple(ep.address for ep in prefill.values() if ep.engine == engine)
        sidecars[i] = await start_sidecar(sup, f"sidecar-{engine}-{i}", decode[i],
                                          layout.port("sidecar", i), args, allow,
                                          side_ports.get(engine), progress)

    await _all([start_one(i, e) for i, e in enumerate(layout.decode)])
    return PdFleet([prefill[i] for i in range(len(layout.prefill))],
                   [decode[i] for i in range(len(layout.decode))],
                   [sidecars[i] for i in range(len(layout.decode))], side_ports)


async def start_sidecar(sup: Supervisor, name: str, behind: FleetEndpoint, port: int,
                        args: PdArgs, prefill_allow: tuple[str, ...], bootstrap_port: int | None,
                        progress: Progress) -> FleetEndpoint:
    """One `llmd sidecar` in front of the decode server `behind`, until healthy: its engine's
    connector, the SGLang bootstrap port of its prefill peers (None: the engine has none) and,
    with SSRF protection, those peers (`prefill_allow`, `host:port`) as the only allowed ones."""
    progress(name, "starting")

    def argv(bound: int) -> list[str]:
        out = [sys.executable, "-c", "from llmd.cli import main; main()", "sidecar",
               "--host", args.host, "--port", str(bound),
               "--model-server-host", behind.host, "--model-server-port", str(behind.port),
               "--kv-connector", get_adapter(behind.engine).sidecar_connector,
               "--log-level", "warning"]
        if bootstrap_port is not None:
            out += ["--sglang-bootstrap-port", str(bootstrap_port)]
        if args.ssrf_protection:
            out.append("--enable-ssrf-protection")
            for address in prefill_allow:
                out += ["--prefill-allow", address]
        return out + list(args.sidecar_args)

    child = await sup.start(ChildSpec(
        name, argv(port), start_timeout_s=args.start_timeout_s,
        ready=http_ready(SIDECAR_HEALTH), restart_argv=lambda c: argv(c.port)))
    progress(name, "ready")
    return FleetEndpoint(name, behind.engine, child.host, child.port, child.proc.pid)


async def _all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run the coroutines in a TaskGroup; re-raise the first `ChildError`, not a group."""
    try:
        async with asyncio.TaskGroup() as tg:
            for coro in coros:
                tg.create_task(coro)
    except BaseExceptionGroup as group:
        first = next((e for e in group.exceptions if isinstance(e, ChildError)), None)
        if first is None:
            raise
        raise first from None
