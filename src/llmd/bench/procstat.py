"""CPU time and peak memory of processes from /proc (Linux), for router-overhead numbers.

    before = cpu_seconds(pids)
    ... run the measured stage ...
    used = cpu_seconds(pids) - before       # user + system seconds over the stage
    peak = peak_rss_kib(pids)               # sum of VmHWM (peak resident set) over pids

Each pid counts with its live descendants (Envoy's workers are threads, a Python router's
helpers may be processes), so "the router" is the whole process tree the system started.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds", "peak_rss_kib", "process_tree"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def process_tree(pids: Iterable[int]) -> list[int]:
    """`pids` and all their live descendants, each once."""
    seen: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(_children(pid))
    return seen


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # fields[11:13] are utime, stime (the 14th and 15th fields of the whole line).
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by `pids` and their descendants."""
    return sum(_cpu_ticks(p) for p in process_tree(pids)) / _TICKS


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kib(pids: Iterable[int]) -> int:
    """Sum of the peak resident set sizes (VmHWM, KiB) of `pids` and their descendants."""
    return sum(_hwm_kib(p) for p in process_tree(pids))
