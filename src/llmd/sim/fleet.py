"""A local fleet of simulator processes, the model servers behind `llmd up`.

Each simulator is a child `llmd sim` process on loopback, supervised by `llmd._proc`: the fleet
is up once every child printed its address and answers its engine's health probe. The caller's
`Supervisor` owns the children, so leaving it (Ctrl-C, an error, one child dying at start)
stops every one of them; under `Supervisor.supervise` a simulator that exits is started again
on the port it had.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from llmd._proc import Child, ChildError, ChildSpec, Supervisor, http_ready
from llmd.engines import EngineName, get_adapter

__all__ = ["FleetEndpoint", "FleetSpec", "Progress", "sim_argv", "start_fleet"]

Progress = Callable[[str, str], None]
"""`on_progress(name, state)`: state is "starting" or "ready" (one call each per child)."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """One simulator per entry of `engines`, all serving `model`.

    Ports: `port_base + i` for the i-th simulator, or ephemeral ones with `port_base=0`.
    `sim_args` are extra `llmd sim` flags given to every simulator (`--time-scale 0`),
    `per_sim_args` more for the one of that child name (`sim-<engine>-<i>`).
    """

    engines: tuple[EngineName, ...] = ("vllm", "sglang")
    model: str = "llmd-sim"
    host: str = "127.0.0.1"
    port_base: int = 8100
    sim_args: tuple[str, ...] = ()
    per_sim_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def child_names(self) -> list[str]:
        return [f"sim-{engine}-{i}" for i, engine in enumerate(self.engines)]


@dataclass(frozen=True, slots=True)
class FleetEndpoint:
    """A running simulator: `address` is `host:port`, what the EPP and Envoy route to."""

    name: str
    engine: EngineName
    host: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def sim_argv(engine: EngineName, model: str, host: str, port: int,
             extra: Sequence[str] = ()) -> list[str]:
    """argv that runs `llmd sim` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "from llmd.cli import main; main()", "sim",
            "--engine", engine, "--model", model, "--host", host, "--port", str(port), *extra]


async def start_fleet(sup: Supervisor, spec: FleetSpec,
                      on_progress: Progress | None = None) -> list[FleetEndpoint]:
    """Start every simulator of `spec` under `sup` (in parallel) and wait until all are healthy.

    Returns them in `spec.engines` order. Raises `ChildError` (an `LlmdError`) naming the first
    child that failed and quoting its output; the caller's supervisor stops the others.
    """
    if not spec.engines:
        raise ChildError("the fleet is empty: ask for at least one simulator")
    progress = on_progress or (lambda name, state: None)
    found: dict[int, FleetEndpoint] = {}

    async def start(i: int, engine: EngineName) -> None:
        port = 0 if spec.port_base == 0 else spec.port_base + i
        name = spec.child_names()[i]
        progress(name, "starting")
        extra = (*spec.sim_args, *spec.per_sim_args.get(name, ()))

        def same_port(child: Child) -> list[str]:
            return sim_argv(engine, spec.model, spec.host, child.port, extra)

        child = await sup.start(ChildSpec(
            name, sim_argv(engine, spec.model, spec.host, port, extra),
            ready=http_ready(get_adapter(engine).probes.liveness.path),
            restart_argv=same_port))
        found[i] = FleetEndpoint(name, engine, child.host, child.port, child.proc.pid)
        progress(name, "ready")

    try:
        async with asyncio.TaskGroup() as tg:
            for i, engine in enumerate(spec.engines):
                tg.create_task(start(i, engine), name=f"start-sim-{engine}-{i}")
    except BaseExceptionGroup as group:
        # Report the first child that failed, not a group: the others are stopped anyway.
        first = next((e for e in group.exceptions if isinstance(e, ChildError)), None)
        if first is None:
            raise
        raise first from None
    return [found[i] for i in range(len(spec.engines))]
