"""A local fleet of simulator processes: what `llmd up` runs at this stage (one per dialect).

Each simulator is a child `llmd sim` process on loopback, supervised by `llmd._proc`: the fleet
is up once every child printed its address and answers its engine's health probe; Ctrl-C (or a
child dying) stops all of them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmd._proc import Child, ChildError, ChildSpec, Supervisor
from llmd.engines import EngineName, get_adapter

__all__ = ["FleetEndpoint", "FleetSpec", "print_fleet", "run_fleet", "sim_argv"]


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """`vllm` + `sglang` simulators serving `model`; ports from `port_base` up (0: ephemeral)."""

    vllm: int = 1
    sglang: int = 1
    model: str = "llmd-sim"
    host: str = "127.0.0.1"
    port_base: int = 8100
    sim_args: tuple[str, ...] = ()

    def engines(self) -> list[EngineName]:
        vllm: list[EngineName] = ["vllm"] * self.vllm
        sglang: list[EngineName] = ["sglang"] * self.sglang
        return vllm + sglang


@dataclass(frozen=True, slots=True)
class FleetEndpoint:
    name: str
    engine: EngineName
    url: str
    pid: int


def sim_argv(engine: EngineName, model: str, host: str, port: int,
             extra: Sequence[str] = ()) -> list[str]:
    """argv that runs `llmd sim` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "from llmd.cli import main; main()", "sim",
            "--engine", engine, "--model", model, "--host", host, "--port", str(port), *extra]


async def run_fleet(spec: FleetSpec, stop: asyncio.Event,
                    on_ready: Callable[[list[FleetEndpoint]], None]) -> None:
    """Start the fleet, call `on_ready` once all are healthy, run until `stop`.

    Raises `ChildError` (an `LlmdError`) naming the child and quoting its output when one fails
    to start or dies; every child is stopped before this returns or raises.
    """
    engines = spec.engines()
    if not engines:
        raise ValueError("the fleet is empty: ask for at least one simulator")
    async with Supervisor() as sup:
        children: list[tuple[Child, EngineName]] = []

        async def start(i: int, engine: EngineName) -> None:
            port = 0 if spec.port_base == 0 else spec.port_base + i
            name = f"sim-{engine}-{i}"
            child = await sup.start(ChildSpec(name, sim_argv(engine, spec.model, spec.host,
                                                              port, spec.sim_args)))
            await sup.wait_http(child, get_adapter(engine).probes.liveness.path)
            children.append((child, engine))

        try:
            async with asyncio.TaskGroup() as tg:
                for i, engine in enumerate(engines):
                    tg.create_task(start(i, engine), name=f"start-{engine}-{i}")
        except BaseExceptionGroup as group:
            # Report the first child that failed, not a group: the others are stopped anyway.
            first = next((e for e in group.exceptions if isinstance(e, ChildError)), None)
            if first is None:
                raise
            raise first from None
        children.sort(key=lambda pair: int(pair[0].spec.name.rsplit("-", 1)[1]))
        on_ready([FleetEndpoint(c.spec.name, engine, c.url, c.proc.pid)
                  for c, engine in children])
        await sup.wait_any_exit(stop)


def print_fleet(endpoints: list[FleetEndpoint], model: str) -> None:
    """A rich table of the fleet with a ready-to-paste curl and openai example."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="llmd up: simulators (pair-of-sims stage; no gateway yet)")
    table.add_column("name")
    table.add_column("engine")
    table.add_column("url", no_wrap=True)
    table.add_column("health")
    table.add_column("pid", justify="right")
    for ep in endpoints:
        table.add_row(ep.name, ep.engine, ep.url, get_adapter(ep.engine).probes.liveness.path,
                      str(ep.pid))
    console.print(table)
    first, last = endpoints[0], endpoints[-1]
    console.print("Every endpoint also serves /v1/models and /metrics (the engine's own names).")
    console.print(f"\n[bold]curl[/bold] ({first.engine} dialect):")
    console.print(
        f"curl -N {first.url}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": "
        f"\"Hello\"}}], \"max_tokens\": 16, \"stream\": true}}'", soft_wrap=True, markup=False)
    console.print(f"\n[bold]openai[/bold] (python, {last.engine} dialect):")
    console.print(
        "from openai import OpenAI\n"
        f"client = OpenAI(base_url=\"{last.url}/v1\", api_key=\"none\")\n"
        f"for chunk in client.chat.completions.create(model=\"{model}\", stream=True,\n"
        "        messages=[{\"role\": \"user\", \"content\": \"Hello\"}], max_tokens=16):\n"
        "    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)",
        soft_wrap=True, markup=False, highlight=False)
    console.print("\nCtrl-C stops every simulator.")
