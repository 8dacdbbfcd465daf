"""Peer routers and clients, each in its own virtual environment under `.venv-peers/`.

`ensure_venv(PEERS["sglang-router"], root)` creates `.venv-peers/sglang-router` with the pinned
package (never into llmd's own environment) and returns its `bin/` directory; an existing venv
that already holds the pinned version is reused. `router_argv` builds the command line of a
peer router on loopback with the settings `docs/benchmarks.md` explains (fair tuning for a
small fleet: see `ROUTER_TUNING`).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmd.errors import LlmdError

__all__ = ["PEERS", "ROUTER_TUNING", "PeerError", "PeerPackage", "ensure_venv", "find_python312",
           "router_argv"]


class PeerError(LlmdError):
    """A peer could not be installed or started."""


@dataclass(frozen=True, slots=True)
class PeerPackage:
    name: str
    """The venv's directory name under `.venv-peers/`."""
    requirement: str
    dist: str
    version: str
    python: str = ""
    """Interpreter for the venv: "" = this one's base, "3.12" = find a python3.12."""


PEERS = {
    "sglang-router": PeerPackage("sglang-router", "sglang-router==0.3.2", "sglang-router",
                                 "0.3.2"),
    "vllm-router": PeerPackage("vllm-router", "vllm-router==0.1.17", "vllm-router", "0.1.17"),
    "inference-perf": PeerPackage("inference-perf", "inference-perf==0.7.0", "inference-perf",
                                  "0.7.0", python="3.12"),
}

# What a competent operator sets for a 4-worker fleet with a handful of requests in flight per
# worker. The default balance_abs_threshold 64 never trips at this scale (cache_aware would never
# balance load); 8 in-flight requests of difference (and 1.5x relative) does. 2, 8, 16 and 64
# were tried on this fleet at 16 and 32 req/s: 8 gave sglang-router its best hit share and TTFT.
ROUTER_TUNING: dict[str, tuple[str, ...]] = {
    "cache_aware": ("--cache-threshold", "0.3", "--balance-abs-threshold", "8",
                    "--balance-rel-threshold", "1.5"),
    "round_robin": (),
    # kv_aware keeps its defaults (temperature 0: the lowest new-prefill cost wins; tier
    # credits only matter for CPU/disk tiers, which the simulators do not have); its KV-event
    # sources are the fleet's (see llmd.bench.systems).
    "kv_aware": (),
}


def find_python312() -> str:
    """A working python3.12: on PATH (a pyenv shim may be there without the version enabled,
    so each candidate is run once), else under pyenv's versions directory."""
    candidates = [shutil.which("python3.12") or ""]
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/python3.12"), reverse=True)
    for cand in filter(None, candidates):
        try:
            ok = subprocess.run([cand, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                                capture_output=True, timeout=30, check=False).returncode == 0
        except OSError:
            ok = False
        if ok:
            return cand
    raise PeerError("inference-perf needs Python >= 3.12: no working python3.12 on PATH or "
                    "under $(pyenv root)/versions/3.12*/bin/")


def _base_python() -> str:
    return getattr(sys, "_base_executable", "") or sys.executable


def _installed_version(bin_dir: Path, dist: str) -> str | None:
    python = bin_dir / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-m", "pip", "show", dist], capture_output=True,
                         text=True, timeout=60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def _run(argv: Sequence[str], what: str) -> None:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=1200, check=False)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise PeerError(f"{what} failed (exit {out.returncode}):\n{tail}")


def _ensure_venv_sync(pkg: PeerPackage, root: Path) -> Path:
    venv = root.resolve() / ".venv-peers" / pkg.name
    bin_dir = venv / "bin"
    marker = venv / ".llmd-installed"
    if marker.exists() and marker.read_text().strip() == pkg.requirement:
        return bin_dir
    if _installed_version(bin_dir, pkg.dist) == pkg.version:
        marker.write_text(pkg.requirement + "\n")
        return bin_dir
    python = find_python312() if pkg.python == "3.12" else _base_python()
    shutil.rmtree(venv, ignore_errors=True)
    _run([python, "-m", "venv", str(venv)], f"creating {venv}")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
         f"upgrading pip in {venv}")
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", pkg.requirement],
         f"pip install {pkg.requirement} into {venv}")
    marker.write_text(pkg.requirement + "\n")
    return bin_dir


async def ensure_venv(pkg: PeerPackage, root: Path) -> Path:
    """The venv's bin directory, creating and installing it first when needed."""
    return await asyncio.to_thread(_ensure_venv_sync, pkg, root)


def router_argv(router: str, bin_dir: Path, policy: str, port: int, metrics_port: int,
                workers: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Command line of `router` ("sglang-router" or "vllm-router") on 127.0.0.1; `extra`: more
    flags (vllm-router kv_aware's `--kv-event-source`s)."""
    common = ["--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers,
              "--policy", policy, "--prometheus-host", "127.0.0.1",
              "--prometheus-port", str(metrics_port), *ROUTER_TUNING.get(policy, ()), *extra]
    if router == "sglang-router":
        return [str(bin_dir / "python"), "-m", "sglang_router.launch_router", *common,
                "--log-level", "warn"]
    if router == "vllm-router":
        return [str(bin_dir / "vllm-router"), *common, "--log-level", "warning"]
    raise PeerError(f"unknown router {router!r} (sglang-router, vllm-router)")
