"""Run a real `llmd.operator.Operator` (kopf inside) in a thread of its own against `ApiServer`.

kopf owns its event loop's tasks (on stop it waits for, then cancels, every task created after
it started), so each operator gets a loop of its own in a thread; the emulator stays on the
test's loop. The operator plans with its default, `llmd.deploy.plan_service`: the objects
`llmd render` makes for the resource.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from llmd._kube import KubeApi
from llmd.operator import Operator, OperatorConfig

NS = "llm"
T = TypeVar("T")


def operator_for(url: str, **config: Any) -> Operator:
    config.setdefault("namespaces", (NS,))
    return Operator(OperatorConfig(KubeApi(url.rstrip("/")), **config))


class Running:
    """An operator running in its thread; `call()` runs a coroutine on the operator's loop
    (e.g. a reconcile pass, on the operator's own client session)."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.loop: asyncio.AbstractEventLoop | None = None

    async def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        assert self.loop is not None, "the operator is not running"
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)


@asynccontextmanager
async def running(operator: Operator, timeout_s: float = 20.0) -> AsyncIterator[Running]:
    """`operator` runs on its own loop in a thread for the block; stopped (and its error
    re-raised) on the way out."""
    state: dict[str, Any] = {}
    started = threading.Event()
    handle = Running(operator)

    def main() -> None:
        async def runner() -> None:
            handle.loop, state["stop"] = asyncio.get_running_loop(), asyncio.Event()
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
        yield handle
    finally:
        if handle.loop is not None and "stop" in state:
            handle.loop.call_soon_threadsafe(state["stop"].set)
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
