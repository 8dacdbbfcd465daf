"""Run a real `llmd.operator.Operator` (kopf inside) in a thread of its own against `ApiServer`.

kopf owns its event loop's tasks (on stop it waits for, then cancels, every task created after
it started), so each operator gets a loop of its own in a thread; the emulator stays on the
test's loop. The plan function is a STAND-IN for `llmd.deploy.llmisvc.plan_service` until that
lands: it renders the resource's `spec` as a ModelService values tree with `render_values`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from llmd._kube import KubeApi
from llmd.deploy import Rendered, render_values
from llmd.operator import Operator, OperatorConfig

NS = "llm"


def stand_in_plan(body: Mapping[str, Any]) -> Rendered:
    """STAND-IN plan: the resource's spec is a ModelService values tree."""
    meta = body["metadata"]
    return render_values(copy.deepcopy(dict(body.get("spec") or {})), release=meta["name"],
                         namespace=meta["namespace"])


def operator_for(url: str, **config: Any) -> Operator:
    config.setdefault("namespaces", (NS,))
    return Operator(OperatorConfig(KubeApi(url.rstrip("/")), **config), plan=stand_in_plan)


@asynccontextmanager
async def running(operator: Operator, timeout_s: float = 20.0) -> AsyncIterator[Operator]:
    """`operator` runs on its own loop in a thread for the block; stopped (and its error
    re-raised) on the way out."""
    state: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        async def runner() -> None:
            state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
            started.set()
            await operator.run(state["stop"])

        try:
            asyncio.run(runner())
        except BaseException as exc:  # re-raised in the test below
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    await asyncio.to_thread(started.wait, timeout_s)
    try:
        yield operator
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        await asyncio.to_thread(thread.join, timeout_s)
        assert not thread.is_alive(), "the operator did not stop in time"
        if "error" in state:
            raise state["error"]


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0,
                     what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value (returned); fail after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
