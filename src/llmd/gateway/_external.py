"""`llmd up --endpoint`: the stack in front of model servers that already run.

Each `--endpoint` is `URL[,engine=vllm|sglang][,role=decode|prefill|both][,model=NAME]
[,key=value]...` (`host:port` for the URL works too; other `key=value` pairs are EPP labels).
At start every server is asked, in parallel, for `/v1/models`, its `/metrics` and each engine
adapter's identifying routes (`llmd.engines.identify`), retried until `wait_s` passes: a
server still loading its model is waited for, one that never answers is an error naming it
(all of them, in one message). What the answers say fills in what the flag left out: the
engine (`engine=` wins), the model (`model=` wins), the P/D role and SGLang's bootstrap port
(`role=` wins). A server that dies later is the EPP's to handle (it leaves scheduling at the
next failed scrape; Envoy retries a refused connection on the next endpoint): nothing of ours
is restarted.

Hostnames are resolved once, here: the EPP names endpoints to Envoy by `ip:port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from llmd._proc import Supervisor
from llmd.engines import (
    ADAPTERS,
    ENGINES,
    MODELS_ROUTE,
    EngineName,
    Role,
    ServerAnswers,
    ServerIdentity,
    get_adapter,
    identify_server,
    metric_families,
    probe_routes,
)
from llmd.errors import ConfigError, EngineError
from llmd.gateway._pd import PdArgs, needs_side_port, start_sidecar
from llmd.sim.fleet import FleetEndpoint, Progress

__all__ = ["SERVER_FLAG", "FrontedPd", "FrontedServer", "ServerFlag", "parse_server_flag",
           "pd_side_ports", "resolve_servers", "start_fronted_pd"]

SERVER_FLAG = ("URL[,engine=vllm|sglang][,role=decode|prefill|both][,model=NAME]"
               "[,key=value]")
ROLES: tuple[Role, ...] = ("decode", "prefill", "both")
_PROBE_TIMEOUT_S = 5.0
_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class ServerFlag:
    """One parsed `--endpoint`: where the server is and what the user said about it."""

    text: str
    host: str
    port: int
    engine: EngineName | None = None
    role: Role | None = None
    model: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    origin: str = "--endpoint"
    """Where the user gave it, for errors: the flag, or a config's endpoint list."""

    @property
    def where(self) -> str:
        return f"{self.origin} {self.text!r}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_server_flag(text: str, origin: str = "--endpoint") -> ServerFlag:
    """`text` as `SERVER_FLAG`; `ConfigError` naming the part that is wrong (and `origin`)."""
    head, *opts = [p.strip() for p in text.split(",")]
    where = f"{origin} {text!r}"
    host, port = _location(head, where)
    given: dict[str, str] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{where}: {opt!r} is not key=value (expected {SERVER_FLAG})")
        key, value = key.strip(), value.strip()
        if key in given:
            raise ConfigError(f"{where}: {key} is given twice")
        given[key] = value
    engine, role, model = given.pop("engine", None), given.pop("role", None), given.pop("model",
                                                                                        None)
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"{where}: engine {engine!r} is not one of {', '.join(ENGINES)} "
                          "(leave it out to detect it)")
    if role is not None and role not in ROLES:
        raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    return ServerFlag(text, host, port, get_adapter(engine).name if engine else None,
                      next((r for r in ROLES if r == role), None), model,
                      tuple(given.items()), origin)


def _location(head: str, where: str) -> tuple[str, int]:
    """`http://host:port[/]` or `host:port` → (host, port)."""
    if "://" in head:
        url = urlsplit(head)
        if url.scheme != "http":
            raise ConfigError(f"{where}: scheme {url.scheme!r} is not supported: Envoy and the "
                              "EPP reach model servers over plain http://")
        if url.path not in ("", "/") or url.query or url.fragment:
            rest = head[head.index(url.netloc) + len(url.netloc):]
            raise ConfigError(f"{where}: {rest!r} after the address: give the server's root "
                              f"URL (http://HOST:PORT), not an API path")
        if url.username or url.password:
            raise ConfigError(f"{where}: credentials in the URL are not supported")
        netloc = url.netloc
    else:
        netloc = head
    host, sep, port_text = netloc.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or "]" in port_text:
        raise ConfigError(f"{where}: {head!r} is not http://HOST:PORT or HOST:PORT "
                          f"(expected {SERVER_FLAG})")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{where}: port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class FrontedServer:
    """A server `llmd up` fronts: its flag, the address it resolved to and what it is."""

    name: str
    flag: ServerFlag
    ip: str
    identity: ServerIdentity
    model: str
    """`model=`, else the first base model its `/v1/models` lists."""

    @property
    def engine(self) -> EngineName:
        return self.identity.engine

    @property
    def role(self) -> Role | None:
        """`role=`, else what the server reports (None: neither)."""
        return self.flag.role or self.identity.role

    @property
    def endpoint(self) -> FleetEndpoint:
        """As the stack lists it (no process of ours: pid 0)."""
        return FleetEndpoint(self.name, self.engine, self.ip, self.flag.port, 0)

    def epp_flag(self, address: str | None = None, role: Role | None = None) -> str:
        """Its `llmd epp --endpoint` (at `address`, a sidecar's, when given)."""
        role = role or self.role
        parts = [address or self.endpoint.address, f"engine={self.engine}"]
        parts += [f"role={role}"] if role else []
        return ",".join(parts + [f"{k}={v}" for k, v in self.flag.labels])

    def describe(self) -> str:
        """One line: what it is and how llmd knows."""
        how = ("given" if self.identity.evidence == ("given",)
               else "detected: " + ", ".join(self.identity.evidence))
        role = f", role {self.role}" if self.role in ("prefill", "decode") else ""
        return f"{self.name} {self.flag.url}: {self.engine} ({how}), model {self.model!r}{role}"


async def resolve_servers(flags: Sequence[ServerFlag], wait_s: float,
                          progress: Progress) -> list[FrontedServer]:
    """Probe every server in parallel until each answers `/v1/models` (at most `wait_s`) and
    identify it. `ConfigError` naming every server that did not answer or cannot be
    identified, and when the servers serve different models."""
    seen: dict[tuple[str, int], str] = {}
    for flag in flags:
        if (flag.host, flag.port) in seen:
            raise ConfigError(f"{flag.where}: {flag.url} is already given "
                              f"({seen[flag.host, flag.port]!r})")
        seen[flag.host, flag.port] = flag.text
    connector = aiohttp.TCPConnector(limit=32, force_close=True)
    async with aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)) as http:
        results = await asyncio.gather(
            *(_resolve(http, f"server-{i}", flag, wait_s, progress)
              for i, flag in enumerate(flags)), return_exceptions=True)
    problems = [str(r) for r in results if isinstance(r, ConfigError | EngineError)]
    if problems:
        raise ConfigError(problems)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    servers = [r for r in results if isinstance(r, FrontedServer)]
    models = {s.model for s in servers}
    if len(models) > 1:
        raise ConfigError("the servers serve different models (one pool serves one model; "
                          "model=NAME overrides what a server lists): "
                          + "; ".join(f"{s.flag.url}: {s.model!r}" for s in servers))
    return servers


async def _resolve(http: aiohttp.ClientSession, name: str, flag: ServerFlag, wait_s: float,
                   progress: Progress) -> FrontedServer:
    progress(name, "starting")
    where = flag.where
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            flag.host, flag.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot resolve {flag.host!r}: {exc}") from None
    # IPv4 first: `localhost` often lists ::1 first, where a server bound to 127.0.0.1 is not.
    ip = str(min(infos, key=lambda info: info[0] != socket.AF_INET)[4][0])
    deadline = time.monotonic() + wait_s
    while True:
        try:
            answers = await _probe(http, flag.url)
            break
        except _NotReady as exc:
            reason = str(exc)
        if time.monotonic() >= deadline:
            raise ConfigError(f"{where}: {flag.url}{MODELS_ROUTE} did not answer within "
                              f"{wait_s:g} s ({reason}); is the server running there? "
                              "(--endpoint-wait-s waits longer for one still loading)")
        await asyncio.sleep(_RETRY_S)  # polling a condition; the deadline above bounds it
    identity = identify_server(flag.url, answers, ADAPTERS, flag.engine)
    model = flag.model or (identity.models[0] if identity.models else None)
    if model is None:
        raise ConfigError(f"{where}: {flag.url}{MODELS_ROUTE} lists no model; give model=NAME")
    progress(name, "ready")
    return FrontedServer(name, flag, ip, identity, model)


@dataclass(frozen=True, slots=True)
class FrontedPd:
    """P/D in front of existing servers: the prefill servers, the decode servers and one
    sidecar of ours in front of each decode server (`sidecars[i]` fronts `decode[i]`)."""

    prefill: list[FrontedServer]
    decode: list[FrontedServer]
    sidecars: list[FleetEndpoint]


def pd_side_ports(servers: Sequence[FrontedServer], bootstrap_port: int
                  ) -> dict[EngineName, int]:
    """Check a P/D pool of existing servers and return the shared prefill side port (SGLang's
    bootstrap port) of each engine that has one: what its prefill servers report, else
    `bootstrap_port`. `ConfigError` for a server with no P/D role, no decode server, an engine
    whose decode servers cannot serve without a prefill peer and have none, or prefill servers
    of one engine on different side ports (the sidecar sends one)."""
    loose = [s for s in servers if s.role not in ("prefill", "decode")]
    if loose:
        raise ConfigError([f"{s.flag.where}: with --pd every server needs "
                           f"role=prefill or role=decode ({s.flag.url} "
                           + (f"reports role {s.role}" if s.role else "reports none") + ")"
                           for s in loose])
    if not any(s.role == "decode" for s in servers):
        raise ConfigError("--pd: no server has role=decode (each gets a sidecar, which the "
                          "gateway routes to)")
    out: dict[EngineName, int] = {}
    for engine in dict.fromkeys(s.engine for s in servers if s.role == "decode"):
        peers = [s for s in servers if s.role == "prefill" and s.engine == engine]
        if not peers and not get_adapter(engine).pd.decode_alone:
            raise ConfigError(f"--pd: the {engine} decode servers have no {engine} prefill "
                              "server, and a decode-mode server of that engine cannot serve "
                              "alone: add one with role=prefill")
        if not needs_side_port(engine, servers[0].model):
            continue
        reported = {p for s in peers if (p := s.identity.side_port) is not None}
        if len(reported) > 1:
            raise ConfigError(f"--pd: the {engine} prefill servers listen on different "
                              f"bootstrap ports ({', '.join(map(str, sorted(reported)))}); "
                              "the sidecar sends one, so give them the same")
        if not reported and not bootstrap_port:
            raise ConfigError(f"--pd: the {engine} prefill servers do not report their "
                              "bootstrap port; give it with --bootstrap-port")
        out[engine] = next(iter(reported)) if reported else bootstrap_port
    return out


async def start_fronted_pd(sup: Supervisor, servers: Sequence[FrontedServer], args: PdArgs,
                           base_port: int, progress: Progress) -> FrontedPd:
    """One `llmd sidecar` per decode server, in parallel, each until healthy (with a fixed
    `base_port`, the i-th server's on `base_port + i`)."""
    side_ports = pd_side_ports(servers, args.bootstrap_port)
    prefill = [s for s in servers if s.role == "prefill"]
    decode = [(i, s) for i, s in enumerate(servers) if s.role == "decode"]

    async def one(i: int, server: FrontedServer) -> FleetEndpoint:
        allow = tuple(p.endpoint.address for p in prefill if p.engine == server.engine)
        return await start_sidecar(sup, f"sidecar-{server.name}", server.endpoint,
                                   base_port + i if base_port else 0, args, allow,
                                   side_ports.get(server.engine), progress)

    tasks = [asyncio.create_task(one(i, s), name=f"sidecar-{s.name}") for i, s in decode]
    try:
        sidecars = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return FrontedPd(prefill, [s for _, s in decode], sidecars)


class _NotReady(Exception):
    """The server answered `/v1/models` with something other than a 200 JSON model list."""


async def _probe(http: aiohttp.ClientSession, url: str) -> ServerAnswers:
    """GET the model list (which must answer), the identifying routes and `/metrics`."""
    bodies: dict[str, object] = {}
    for route in probe_routes(list(ADAPTERS.values())):
        try:
            async with http.get(url + route) as resp:
                if resp.status == 200 and resp.content_type == "application/json":
                    bodies[route] = await resp.json()
                elif route == MODELS_ROUTE:
                    raise _NotReady(f"HTTP {resp.status}, {resp.content_type}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if route == MODELS_ROUTE:  # the one route every OpenAI server answers
                raise _NotReady(str(exc) or type(exc).__name__) from exc
    families: frozenset[str] = frozenset()
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, UnicodeDecodeError):
        async with http.get(url + "/metrics") as resp:
            if resp.status == 200:
                families = metric_families(await resp.text())
    return ServerAnswers(bodies, families)
