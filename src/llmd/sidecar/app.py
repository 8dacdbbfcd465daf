"""`llmd sidecar`: the P/D routing proxy that runs in front of a decode engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from llmd._http import JsonErrorRunner, listen_socket
from llmd.errors import BadRequestError
from llmd.sidecar.allowlist import Allowlist
from llmd.sidecar.body import parse_body
from llmd.sidecar.config import SidecarConfig
from llmd.sidecar.connectors import Connector, PdRequest, build_connector
from llmd.sidecar.hostport import HostPort
from llmd.sidecar.pool import follow_pool, pool_watch
from llmd.sidecar.targets import PREFILLER_HEADER, parse_candidates
from llmd.sidecar.upstream import Upstream, forward_headers, json_error

__all__ = ["PREFILLER_HEADER", "build_app", "serve", "static_allowlist"]

log = logging.getLogger(__name__)

_INTERCEPTED = ("/v1/completions", "/v1/chat/completions")
_UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream", Upstream)


def build_app(cfg: SidecarConfig, allowlist: Allowlist | None = None) -> web.Application:
    """The sidecar's aiohttp application; its client session lives in `cleanup_ctx`."""
    app = web.Application(client_max_size=cfg.max_body_bytes,
                          middlewares=[_json_errors])
    connector = build_connector(cfg)
    allow = allowlist if allowlist is not None else static_allowlist(cfg)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with Upstream.new_session(cfg) as session:
            app[_UPSTREAM] = Upstream(cfg, session)
            yield

    app.cleanup_ctx.append(session_ctx)
    handler = _Handler(cfg, connector, allow)
    app.router.add_get("/health", _health)
    for path in _INTERCEPTED:
        app.router.add_post(path, handler.completions)
    app.router.add_route("*", "/{tail:.*}", handler.pass_through)
    return app


def static_allowlist(cfg: SidecarConfig, pool: str | None = None) -> Allowlist:
    """`--prefill-allow` (bare hosts on `cfg.known_prefill_ports`), following `pool` if given."""
    return Allowlist(cfg.prefill_allowlist, known_ports=cfg.known_prefill_ports, pool=pool)


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def _json_errors(request: web.Request, handler: Callable) -> web.StreamResponse:  # type: ignore[type-arg]
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception as exc:  # a sidecar bug: log it, answer JSON 500, keep serving
        log.exception("internal error serving %s %s", request.method, request.path)
        return json_error(500, f"internal error in the routing sidecar: {type(exc).__name__}")


class _Handler:
    def __init__(self, cfg: SidecarConfig, connector: Connector, allow: Allowlist) -> None:
        self.cfg, self.connector, self.allow = cfg, connector, allow

    async def pass_through(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return await request.app[_UPSTREAM].pass_through(request, body)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        upstream = request.app[_UPSTREAM]
        raw = await request.read()
        header = request.headers.get(PREFILLER_HEADER, "").strip()
        if not header:
            return await upstream.pass_through(request, raw)
        try:
            candidates = parse_candidates(header, sample=self.cfg.enable_prefiller_sampling)
        except ValueError as exc:
            return _bad_request(f"{PREFILLER_HEADER}: {exc}", PREFILLER_HEADER)
        if self.cfg.enable_ssrf_protection:
            candidates, refused = self._screen(candidates)
            if refused is not None:
                return refused
        try:
            body = parse_body(raw)
        except BadRequestError as exc:
            return web.json_response(exc.body(), status=exc.status)
        prefills = tuple(candidates[: self.cfg.max_prefill_candidates])
        req = PdRequest(request, request.path, body, forward_headers(request.headers), prefills,
                        upstream)
        return await self.connector.run(req)

    def _screen(self, candidates: list[HostPort]) -> tuple[list[HostPort], web.Response | None]:
        """The allowed candidates, in order; or the refusal when none is: 403 when every one
        is denied, 503 when one cannot be checked yet (the pool has not synced)."""
        verdicts = [(t, self.allow.check(t)) for t in candidates]
        allowed = [t for t, v in verdicts if v == "allow"]
        denied = [t.netloc() for t, v in verdicts if v == "deny"]
        if denied:
            log.warning("prefill target%s %s not in the allowlist%s", "s" * (len(denied) > 1),
                        ", ".join(denied), "; skipped" if allowed else "")
        if allowed:
            return allowed, None
        names = _targets(candidates)
        if any(v == "unsynced" for _, v in verdicts):
            # Fail closed, but say "later" (503), not "never" (403): the allowlist cannot yet
            # tell whether the target is a pool pod.
            resp = json_error(503, f"prefill {names} cannot be checked yet: "
                                   f"the SSRF allowlist has not synced with InferencePool "
                                   f"{self.allow.pool} (see the sidecar's log)")
            resp.headers["Retry-After"] = "1"
            return [], resp
        verb = "is" if len(candidates) == 1 else "are"
        return [], json_error(403, f"prefill {names} {verb} not allowed")


def _targets(targets: list[HostPort], shown: int = 4) -> str:
    """`target a:1`, `targets a:1, b:2` or `targets a:1, ... and 5 more` for a message."""
    names = ", ".join(t.netloc() for t in targets[:shown])
    more = f" and {len(targets) - shown} more" if len(targets) > shown else ""
    return f"target{'s' * (len(targets) > 1)} {names}{more}"


def _bad_request(message: str, param: str | None = None) -> web.Response:
    error = BadRequestError(message, param=param)
    return web.json_response(error.body(), status=error.status)


async def serve(cfg: SidecarConfig, stop: asyncio.Event,
                on_listening: Callable[[str, int], None] | None = None) -> None:
    """Run the sidecar until `stop` is set.

    With SSRF protection and an InferencePool, the allowlist follows the pool's pods from here
    on (`llmd.sidecar.pool`); the sidecar listens at once and answers P/D requests 503 until
    the first listing. Raises ConfigError (before listening) if the pool needs the in-cluster
    API and this is not a pod.
    """
    watch = pool_watch(cfg)
    allow = static_allowlist(cfg, pool=cfg.inference_pool if watch else None)
    async with _running(cfg, allow) as (host, port):
        if on_listening:
            on_listening(host, port)
        async with asyncio.TaskGroup() as tg:
            follower = None if watch is None else tg.create_task(
                follow_pool(watch, allow, stop, cfg.pool_retry_backoff_s),
                name="sidecar-pool-allowlist")
            await stop.wait()
            if follower is not None:
                follower.cancel()  # do not wait out an API request in flight


@asynccontextmanager
async def _running(cfg: SidecarConfig, allow: Allowlist) -> AsyncIterator[tuple[str, int]]:
    # The same header limits and JSON answers to malformed HTTP as the simulators behind it.
    runner = JsonErrorRunner(build_app(cfg, allow), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        sock = listen_socket(cfg.host, cfg.port)
    except OSError:
        await runner.cleanup()
        raise
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield cfg.host, sock.getsockname()[1]
    finally:
        await runner.cleanup()
