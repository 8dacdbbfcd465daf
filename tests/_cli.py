"""Run `llmd` commands as real processes in tests: what a user runs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

from llmd._proc import stop_process

LLMD = [sys.executable, "-c", "from llmd.cli import main; main()"]


@contextlib.asynccontextmanager
async def llmd_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`llmd *args` with stdout and stderr merged into one pipe; stopped (bounded) on exit."""
    proc = await asyncio.create_subprocess_exec(*LLMD, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        yield proc
    finally:
        await stop_process(proc, timeout_s=10)


async def read_until(proc: asyncio.subprocess.Process, pattern: str, timeout_s: float = 30
                     ) -> tuple[re.Match[str], str]:
    """Read output lines until `pattern` matches all of it; the match and the output so far."""
    assert proc.stdout is not None
    seen = ""
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"process exited before {pattern!r}; output:\n{seen}")
            seen += line
            m = re.search(pattern, seen)
            if m:
                return m, seen
