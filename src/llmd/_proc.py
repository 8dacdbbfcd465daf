"""Local child-process supervision for `llmd up`: start, wait until ready, watch, stop all.

    async with Supervisor() as sup:
        child = await sup.start(ChildSpec("sim-vllm", argv))       # waits for "listening on"
        await sup.wait_http(child, "/health")
        await sup.wait_any_exit(stop)                              # returns when stop is set

Children run in their own process group, get SIGTERM on exit (then SIGKILL after a bounded
wait), and on Linux are told by the kernel to die if this process dies (PR_SET_PDEATHSIG), so
Ctrl-C, an error or a crash never leaves orphans. Their output is kept in a bounded tail that
error messages quote.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp

from llmd.errors import LlmdError

__all__ = ["Child", "ChildError", "ChildSpec", "Supervisor", "stop_process"]

log = logging.getLogger(__name__)

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_TAIL_LINES = 40


class ChildError(LlmdError):
    """A child failed to start, did not become ready, or exited while it should be serving."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child: `argv`, extra `env`, and how long it may take to print `listening on`.

    `prints_listening=False` is for children that print no such line (Envoy): `start()` returns
    once the process is spawned and the caller checks readiness its own way. A child that
    listens on several ports (the EPP: ext_proc, health, metrics) sets `listening_lines`;
    `start()` then waits for that many lines and `Child.addresses` holds them in order.
    """

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 30.0
    prints_listening: bool = True
    listening_lines: int = 1


class Child:
    """A running child: its process, the address it printed, and its output tail."""

    def __init__(self, spec: ChildSpec, proc: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.proc = proc
        self.host = ""
        self.port = 0
        self.addresses: list[tuple[str, int]] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.listening: asyncio.Future[tuple[str, int]] = (
            asyncio.get_running_loop().create_future())

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def describe_exit(self) -> str:
        tail = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return f"{self.spec.name} exited with code {self.proc.returncode}; last output:\n{tail}"


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = 10.0) -> int:
    """SIGTERM `proc`, wait up to `timeout_s`, then SIGKILL; returns its exit code."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(timeout_s):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
    return await proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """Owns child processes; leaving the `async with` stops every one of them."""

    def __init__(self, stop_timeout_s: float = 5.0) -> None:
        self.children: list[Child] = []
        self.stop_timeout_s = stop_timeout_s
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_all()

    async def start(self, spec: ChildSpec) -> Child:
        """Spawn `spec` and wait (bounded) for its `listening on HOST:PORT` line."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        proc = await asyncio.create_subprocess_exec(
            *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        child = Child(spec, proc)
        self.children.append(child)
        self._readers.append(asyncio.create_task(self._read(child), name=f"out-{spec.name}"))
        if not spec.prints_listening:
            return child
        try:
            async with asyncio.timeout(spec.start_timeout_s):
                child.host, child.port = await asyncio.shield(child.listening)
        except TimeoutError:
            raise ChildError(f"{spec.name} did not print 'listening on' within "
                             f"{spec.start_timeout_s:g} s") from None
        return child

    async def _read(self, child: Child) -> None:
        assert child.proc.stdout is not None
        async for raw in child.proc.stdout:
            line = raw.rstrip()
            child.tail.append(line.decode(errors="replace"))
            if not child.listening.done():
                m = _LISTENING.search(line)
                if m:
                    child.addresses.append((m.group(1).decode(), int(m.group(2))))
                    if len(child.addresses) >= child.spec.listening_lines:
                        child.listening.set_result(child.addresses[0])
            log.debug("[%s] %s", child.spec.name, line.decode(errors="replace"))
        await child.proc.wait()
        if child.spec.prints_listening and not child.listening.done():
            child.listening.set_exception(ChildError(child.describe_exit()))

    async def wait_http(self, child: Child, path: str, timeout_s: float = 30.0) -> None:
        """Poll `GET child.url + path` until 200, the child exits, or the deadline passes."""
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        if child.proc.returncode is not None:
                            raise ChildError(child.describe_exit())
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                            async with session.get(child.url + path) as resp:
                                if resp.status == 200:
                                    return
                        await asyncio.sleep(0.05)
            except TimeoutError:
                raise ChildError(f"{child.spec.name}: {path} not ready within "
                                 f"{timeout_s:g} s") from None

    async def wait_any_exit(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise ChildError if a child exits before that."""
        waits = {asyncio.create_task(c.proc.wait(), name=f"wait-{c.spec.name}"): c
                 for c in self.children}
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [stopper, *waits]:
                task.cancel()
            await asyncio.wait([stopper, *waits])
        if stopper not in done:
            dead = next(waits[t] for t in done if t in waits)
            for reader in self._readers:  # let the tail catch the last lines
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(reader)
            raise ChildError(dead.describe_exit())

    async def stop_all(self) -> None:
        """SIGTERM every live child, wait (bounded), SIGKILL the rest; reap their readers."""
        live = [c for c in self.children if c.proc.returncode is None]
        for c in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)
        if live:
            _, pending = await asyncio.wait([asyncio.create_task(c.proc.wait()) for c in live],
                                            timeout=self.stop_timeout_s)
            for c in live:
                if c.proc.returncode is None:
                    log.warning("%s ignored SIGTERM; killing it", c.spec.name)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.proc.pid, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending)
        for reader in self._readers:
            reader.cancel()
        if self._readers:
            await asyncio.wait(self._readers)
        self._readers.clear()
