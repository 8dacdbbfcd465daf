"""`llmd up`: run the local stack until Ctrl-C, with progress, a status table and examples.

A child that dies is restarted on its ports (`LocalStack.wait`); each exit and each return is
one line, and the status table is printed again, with its restarts, once the child is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmd._proc import Child
from llmd.gateway._epps import replica_name
from llmd.gateway.stack import LocalStack, StackSpec

__all__ = ["print_stack", "run_up"]


async def run_up(spec: StackSpec, stop: asyncio.Event, *, log_level: str = "warning",
                 console: Console | None = None) -> None:
    """Start `spec`, show progress until every child is healthy, print how to use it, run
    until `stop`. A child failing (at start or later) raises `ChildError`; everything started
    is stopped before this returns or raises."""
    console = console or Console()
    names = ([f"server-{i}" for i in range(len(spec.external))] if spec.external else
             [name for name, _ in spec.pd_layout().names()] if spec.pd
             else [f"sim-{e}-{i}" for i, e in enumerate(spec.engines)])
    if spec.epp:
        names += [replica_name(i, spec.epp_replicas) for i in range(spec.epp_replicas)]
    names.append("envoy")
    async with contextlib.AsyncExitStack() as exits:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            tasks = {name: progress.add_task(f"{name}: waiting", total=1) for name in names}

            def on_progress(name: str, state: str) -> None:
                if name not in tasks:  # a sidecar in front of an external decode server
                    tasks[name] = progress.add_task(name, total=1)
                progress.update(tasks[name], description=f"{name}: {state}",
                                completed=1 if state == "ready" else 0)

            stack = LocalStack(spec, on_progress=on_progress, log_level=log_level)
            if not await _until_started(exits, stack, stop):
                return
        print_stack(stack, console)

        def on_event(child: Child, event: str, detail: str) -> None:
            style = {"exited": "yellow", "failed": "red", "restarted": "green"}[event]
            console.print(f"[{style}]{child.spec.name} {event}[/{style}]: {detail}",
                          highlight=False)
            if event == "restarted":
                console.print(status_table(stack))

        await stack.wait(stop, on_event)


async def _until_started(exits: contextlib.AsyncExitStack, stack: LocalStack,
                         stop: asyncio.Event) -> bool:
    """Enter `stack` into `exits`; False when `stop` is set first (Ctrl-C while waiting for a
    server still loading its model), after the stack stopped what it had started."""
    entering = asyncio.create_task(exits.enter_async_context(stack), name="llmd-up-start")
    stopped = asyncio.create_task(stop.wait(), name="llmd-up-stop")
    try:
        await asyncio.wait([entering, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not entering.done():
            entering.cancel()  # LocalStack stops what it started when its start is cancelled
            await asyncio.gather(entering, return_exceptions=True)
    if entering.cancelled():
        return False
    entering.result()  # its error, if starting failed
    return True


def status_table(stack: LocalStack) -> Table:
    """Every child with its current pid and, once any was restarted, how often each was."""
    spec, gw = stack.spec, stack.gateway
    assert gw is not None
    restarted = any(c.restarts for c in stack.children)
    servers = "your servers" if spec.external else "simulators (loopback)"
    table = Table(title=f"llmd up: Envoy → llmd EPP → {servers}")
    columns = ["name", "kind", "address", "pid", "status"] + (["restarts"] if restarted else [])
    for column in columns:
        table.add_column(column, no_wrap=True,
                         justify="right" if column in ("pid", "restarts") else "left")

    def row(name: str, kind: str, address: str, status: str) -> None:
        child = stack.child(name)
        cells = [name, kind, address, str(child.proc.pid),
                 status if child.proc.returncode is None else "down"]
        table.add_row(*cells, *([str(child.restarts)] if restarted else []))

    row("envoy", "gateway", gw.url, "ready")
    for epp in stack.epps:
        row(epp.name, "picker", epp.address, "serving")
    if spec.external:
        for server in stack.servers:  # not our processes: no pid, no restarts
            ep = server.endpoint
            table.add_row(ep.name, ep.engine, ep.url, "-", "external",
                          *(["-"] if restarted else []))
        for ep in stack.endpoints if spec.pd else ():
            row(ep.name, "sidecar", ep.url, "healthy")
    elif spec.pd:
        for kind, eps in (("prefill", stack.prefill), ("decode", stack.decode),
                          ("sidecar", stack.endpoints)):
            for ep in eps:
                row(ep.name, kind, ep.url, "healthy")
    else:
        for ep in stack.endpoints:
            row(ep.name, ep.engine, ep.url, "healthy")
    return table


def print_stack(stack: LocalStack, console: Console) -> None:
    """The gateway URL, a table of every child, and a ready-to-paste curl and openai example."""
    spec, gw = stack.spec, stack.gateway
    assert gw is not None
    console.print(status_table(stack))
    for server in stack.servers:
        console.print(server.describe(), soft_wrap=True, highlight=False, markup=False)
    for epp in stack.epps:
        console.print(f"{epp.name} metrics: {epp.metrics_url}   gRPC health: "
                      f"{epp.host}:{epp.health_port}", soft_wrap=True, highlight=False)
    console.print(f"Envoy admin: {gw.admin_url}", soft_wrap=True, highlight=False)
    routing = "the EPP picks the endpoint" if stack.epps else "round robin, no EPP"
    if len(stack.epps) > 1:
        routing = (f"{len(stack.epps)} EPP replicas take turns picking; Envoy fails over "
                   "when one dies")
    if spec.pd and spec.external:
        routing = ("P/D: the EPP picks a decode server's sidecar and, for long uncached "
                   "prompts, a prefill server")
    elif spec.pd:
        routing = ("P/D: the EPP picks a decode sidecar and, for long uncached prompts, a "
                   "prefill sim; x-llmd-kv-source says local or transfer")
    console.print(f"\n[bold]gateway[/bold]: {gw.url}  ({routing}; every response names its "
                  "endpoint in x-llmd-served-by)")
    body = {"model": stack.model, "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 16, "stream": True}
    console.print("\n[bold]curl[/bold]:")
    console.print(f"curl -N {gw.url}/v1/chat/completions -H 'Content-Type: application/json' "
                  f"-d '{json.dumps(body)}'", soft_wrap=True, markup=False, highlight=False)
    console.print("\n[bold]openai[/bold] (python):")
    console.print(
        "from openai import OpenAI\n"
        f"client = OpenAI(base_url=\"{gw.url}/v1\", api_key=\"none\")\n"
        f"for chunk in client.chat.completions.create(model=\"{stack.model}\", stream=True,\n"
        "        messages=[{\"role\": \"user\", \"content\": \"Hello\"}], max_tokens=16):\n"
        "    print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)",
        soft_wrap=True, markup=False, highlight=False)
    if spec.external:
        console.print("\nThe servers are yours: one that stops is taken out of scheduling by "
                      "the EPP until it answers again; llmd up does not restart it.",
                      highlight=False)
    console.print(f"\nA child that dies is restarted on its ports (giving up after "
                  f"{spec.max_restarts} restarts within {spec.restart_window_s:g} s). "
                  "Ctrl-C stops every process.", highlight=False)
