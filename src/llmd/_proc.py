"""Local child-process supervision for `llmd up`: start, wait until ready, restart, stop all.

    async with Supervisor() as sup:
        child = await sup.start(ChildSpec("sim-vllm", argv,            # waits for "listening
                                          ready=http_ready("/health"),  # on", then the probe
                                          restart_argv=same_ports))
        await sup.supervise(stop, RestartPolicy())                     # returns when stop is set

Children run in their own process group, get SIGTERM on exit (then SIGKILL after a bounded
wait), and on Linux are told by the kernel to die if this process dies (PR_SET_PDEATHSIG), so
Ctrl-C, an error or a crash never leaves orphans. Their output is kept in a bounded tail that
error messages quote.

`supervise` keeps the children running: one that exits is started again after a backoff
(0.1 s doubling to 5 s) with its `restart_argv`, which pins the ports it bound the first time,
and must pass its readiness check again; the others keep serving meanwhile. It gives up, with a
`ChildError` naming the child and quoting its last output, when a child without `restart_argv`
exits or one exits more than `max_restarts` times within `window_s` (a crash loop).
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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp

from llmd.errors import LlmdError

__all__ = ["Child", "ChildError", "ChildSpec", "ReadyCheck", "RestartArgv", "RestartPolicy",
           "Supervisor", "SupervisorEvent", "http_ready", "stop_process"]

log = logging.getLogger(__name__)

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_TAIL_LINES = 40


class ChildError(LlmdError):
    """A child failed to start, did not become ready, or exited while it should be serving."""


ReadyCheck = Callable[["Child"], Awaitable[None]]
"""Raises `ChildError` (or times out) unless the started child serves; run after every start."""

RestartArgv = Callable[["Child"], Sequence[str]]
"""The argv that runs an exited child again on the addresses it bound the first time
(`Child.first_addresses`, `Child.port`)."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child: `argv`, extra `env`, and how long it may take to become ready.

    `prints_listening=False` is for children that print no `listening on HOST:PORT` line
    (Envoy): then only `ready` tells when it serves. A child that listens on several ports (the
    EPP: ext_proc, health, metrics) sets `listening_lines`; `start()` then waits for that many
    lines and `Child.addresses` holds them in order. `ready` runs after those lines, within the
    same `start_timeout_s` (a health probe). `restart_argv` makes the child restartable by
    `Supervisor.supervise`; without it, its exit ends supervision.
    """

    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 30.0
    prints_listening: bool = True
    listening_lines: int = 1
    ready: ReadyCheck | None = None
    restart_argv: RestartArgv | None = None


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """A child may exit `max_restarts` times within `window_s` and be restarted each time;
    one more exit in that window is a crash loop. The wait before a restart starts at
    `backoff_s` and doubles with each recent exit, up to `max_backoff_s`."""

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0


SupervisorEvent = Callable[["Child", str, str], None]
"""`on_event(child, event, detail)`: event is "exited" (detail: how, and the restart delay),
"restarted" (the child serves again) or "failed" (a restart did not become ready)."""


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
        self.first_addresses: list[tuple[str, int]] = []
        """`addresses` of the first start, which a restart binds again."""
        self.restarts = 0
        self.exits: collections.deque[float] = collections.deque()
        """`time.monotonic()` of recent exits (within the restart window)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def describe_exit(self) -> str:
        tail = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return f"{self.spec.name} exited ({self.how_exited()}); last output:\n{tail}"

    def how_exited(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


def http_ready(path: str, timeout_s: float = 2.0) -> ReadyCheck:
    """A `ReadyCheck`: poll `GET child.url + path` until 200 (each try bounded by `timeout_s`);
    `ChildError` as soon as the child exits. The caller bounds the whole wait."""

    async def check(child: Child) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            while True:
                if child.proc.returncode is not None:
                    await asyncio.sleep(0.1)  # let the reader catch the last lines
                    raise ChildError(child.describe_exit())
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(child.url + path) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)  # polling a condition; the caller's deadline bounds it

    return check


async def _exited_before(proc: asyncio.subprocess.Process, stop: asyncio.Event) -> bool:
    """Wait for `proc` to exit or `stop`; True when the process exited first."""
    exited = asyncio.create_task(proc.wait(), name="child-exit")
    stopped = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait([exited, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (exited, stopped):
            task.cancel()
        await asyncio.wait([exited, stopped])
    return not stop.is_set() and proc.returncode is not None


async def _stopped_within(stop: asyncio.Event, delay_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await stop.wait()
    return stop.is_set()


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
        self._stopping = False  # set by stop_all: an exit from here on is not restarted

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_all()

    async def start(self, spec: ChildSpec) -> Child:
        """Spawn `spec` and wait (bounded) for its `listening on HOST:PORT` line(s), then its
        `ready` check."""
        child = Child(spec, await self._spawn(spec, spec.argv))
        self.children.append(child)
        self._start_reader(child)
        await self._until_ready(child)
        child.first_addresses = list(child.addresses)
        return child

    async def _spawn(self, spec: ChildSpec, argv: Sequence[str]) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    async def _until_ready(self, child: Child) -> None:
        spec = child.spec
        try:
            async with asyncio.timeout(spec.start_timeout_s):
                if spec.prints_listening:
                    child.host, child.port = await asyncio.shield(child.listening)
                if spec.ready is not None:
                    await spec.ready(child)
        except TimeoutError:
            what = "print 'listening on'" if not child.listening.done() else "become ready"
            raise ChildError(f"{spec.name} did not {what} within "
                             f"{spec.start_timeout_s:g} s") from None

    def _start_reader(self, child: Child) -> None:
        # The reader keeps its own process and future: a restart replaces the child's.
        self._readers.append(asyncio.create_task(
            self._read(child, child.proc, child.listening), name=f"out-{child.spec.name}"))

    async def _read(self, child: Child, proc: asyncio.subprocess.Process,
                    listening: asyncio.Future[tuple[str, int]]) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.rstrip()
            child.tail.append(line.decode(errors="replace"))
            if not listening.done():
                m = _LISTENING.search(line)
                if m:
                    child.addresses.append((m.group(1).decode(), int(m.group(2))))
                    if len(child.addresses) >= child.spec.listening_lines:
                        listening.set_result(child.addresses[0])
            log.debug("[%s] %s", child.spec.name, line.decode(errors="replace"))
        await proc.wait()
        if child.spec.prints_listening and not listening.done():
            listening.set_exception(ChildError(child.describe_exit()))

    async def supervise(self, stop: asyncio.Event, policy: RestartPolicy = RestartPolicy(),
                        on_event: SupervisorEvent | None = None) -> None:
        """Keep every child running until `stop` is set (see the module docstring); raise
        `ChildError` on an exit that cannot or may no longer be restarted."""
        notify = on_event or (lambda child, event, detail: None)
        try:
            async with asyncio.TaskGroup() as tg:
                for child in list(self.children):
                    tg.create_task(self._keep(child, stop, policy, notify),
                                   name=f"keep-{child.spec.name}")
        except BaseExceptionGroup as group:
            first = next((e for e in group.exceptions if isinstance(e, ChildError)), None)
            if first is None:
                raise
            raise first from None

    async def _keep(self, child: Child, stop: asyncio.Event, policy: RestartPolicy,
                    notify: SupervisorEvent) -> None:
        restart_argv = child.spec.restart_argv
        while await _exited_before(child.proc, stop):
            if self._stopping:
                return
            await self._drain(child)
            if restart_argv is None:
                raise ChildError(child.describe_exit())
            now = time.monotonic()
            child.exits.append(now)
            while now - child.exits[0] > policy.window_s:
                child.exits.popleft()
            recent = len(child.exits)
            if recent > policy.max_restarts:
                raise ChildError(f"{child.spec.name} is crash-looping: it exited {recent} times "
                                 f"within {policy.window_s:g} s. " + child.describe_exit())
            delay = min(policy.backoff_s * 2 ** (recent - 1), policy.max_backoff_s)
            notify(child, "exited", f"{child.how_exited()}; restarting in {delay:.1f} s")
            if await _stopped_within(stop, delay) or self._stopping:
                return
            try:
                await self._respawn(child, restart_argv(child))
            except ChildError as exc:
                notify(child, "failed", str(exc).splitlines()[0])
                await stop_process(child.proc, self.stop_timeout_s)  # counted as an exit
                continue
            child.restarts += 1
            notify(child, "restarted", f"pid {child.proc.pid}")

    async def _respawn(self, child: Child, argv: Sequence[str]) -> None:
        """Run `child` again with `argv`; the same Child object now stands for the new
        process (its tail continues)."""
        child.proc = await self._spawn(child.spec, argv)
        child.addresses = []
        child.listening = asyncio.get_running_loop().create_future()
        self._start_reader(child)
        log.info("%s restarted (pid %d)", child.spec.name, child.proc.pid)
        await self._until_ready(child)

    async def _drain(self, child: Child) -> None:
        """Let the output reader catch the last lines of an exited child (bounded)."""
        for reader in self._readers:
            if not reader.done() and reader.get_name() == f"out-{child.spec.name}":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await asyncio.shield(reader)

    async def stop_all(self) -> None:
        """SIGTERM every live child, wait (bounded), SIGKILL the rest; reap their readers.
        A `supervise` still running restarts none of them."""
        self._stopping = True
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
