"""`llmd._proc.Supervisor`: restarts on the same port, crash loops, children it may not restart.
The children are tiny Python processes that print `listening on` for a port they bind."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Sequence

import pytest

from llmd._proc import Child, ChildError, ChildSpec, RestartPolicy, Supervisor

SERVER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print(f"listening on 127.0.0.1:{s.getsockname()[1]}", flush=True)
print("serving", flush=True)
if sys.argv[2] == "crash":
    sys.exit(3)
time.sleep(600)
"""
FAST = RestartPolicy(max_restarts=2, window_s=30, backoff_s=0.01, max_backoff_s=0.05)


def _argv(port: int, mode: str = "serve") -> list[str]:
    return [sys.executable, "-c", SERVER, str(port), mode]


def _same_port(child: Child) -> Sequence[str]:
    return _argv(child.port)


async def _connects(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_a_killed_child_comes_back_on_its_port_while_the_others_run() -> None:
    events: list[tuple[str, str]] = []
    stop = asyncio.Event()
    async with Supervisor(stop_timeout_s=2) as sup:
        killed = await sup.start(ChildSpec("a", _argv(0), restart_argv=_same_port))
        other = await sup.start(ChildSpec("b", _argv(0), restart_argv=_same_port))
        port, other_pid = killed.port, other.proc.pid
        supervising = asyncio.create_task(sup.supervise(
            stop, FAST, lambda c, event, detail: events.append((c.spec.name, event))))
        killed.proc.kill()
        async with asyncio.timeout(10):
            while killed.restarts == 0:  # noqa: ASYNC110 (polling a condition under a deadline)
                await asyncio.sleep(0.02)
        assert killed.port == port and killed.first_addresses == [("127.0.0.1", port)]
        assert await _connects(port)
        assert other.proc.pid == other_pid and other.proc.returncode is None
        assert "serving" in killed.tail
        stop.set()
        async with asyncio.timeout(5):
            await supervising
    assert events == [("a", "exited"), ("a", "restarted")]


async def test_a_crash_loop_stops_supervision_naming_the_child_and_its_output() -> None:
    crash_after_start = {"crashes": 0}

    def crashing(child: Child) -> Sequence[str]:
        crash_after_start["crashes"] += 1
        return _argv(child.port, "crash")

    stop = asyncio.Event()
    async with Supervisor(stop_timeout_s=2) as sup:
        child = await sup.start(ChildSpec("flappy", _argv(0), restart_argv=crashing))
        child.proc.kill()
        with pytest.raises(ChildError, match=r"(?s)flappy is crash-looping: it exited 3 times "
                                             r"within 30 s.*exit code 3.*serving"):
            async with asyncio.timeout(20):
                await sup.supervise(stop, FAST)
    assert crash_after_start["crashes"] == FAST.max_restarts


async def test_a_child_without_restart_argv_ends_supervision() -> None:
    async with Supervisor(stop_timeout_s=2) as sup:
        child = await sup.start(ChildSpec("once", _argv(0)))
        child.proc.kill()
        with pytest.raises(ChildError, match="once exited \\(killed by SIGKILL\\)"):
            async with asyncio.timeout(10):
                await sup.supervise(asyncio.Event(), FAST)


async def test_a_restart_whose_port_is_taken_counts_as_an_exit() -> None:
    """The port went to someone else: each restart fails, until the crash-loop limit."""
    stop = asyncio.Event()
    async with Supervisor(stop_timeout_s=2) as sup:
        child = await sup.start(ChildSpec("a", _argv(0), restart_argv=_same_port,
                                          start_timeout_s=5))
        events: list[str] = []
        child.proc.kill()
        await child.proc.wait()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", child.port))
            squatter.listen()
            with pytest.raises(ChildError, match="crash-looping"):
                async with asyncio.timeout(30):
                    await sup.supervise(stop, FAST, lambda c, e, d: events.append(e))
    assert "failed" in events and "restarted" not in events


async def test_stop_all_is_not_undone_by_a_running_supervise() -> None:
    """Leaving the supervisor while `supervise` still runs stops the children for good."""
    stop = asyncio.Event()
    sup = Supervisor(stop_timeout_s=2)
    child = await sup.start(ChildSpec("a", _argv(0), restart_argv=_same_port))
    supervising = asyncio.create_task(sup.supervise(stop, FAST))
    await sup.stop_all()
    async with asyncio.timeout(5):
        await supervising  # returned on its own: the exit came from stop_all
    assert child.restarts == 0 and child.proc.returncode is not None
    assert not await _connects(child.port)
