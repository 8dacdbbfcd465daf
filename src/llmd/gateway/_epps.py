"""The local stack's EPP replicas (`StackSpec.epp_replicas`, `llmd up --epp-replicas N`): each an
`llmd epp` child of the stack's supervisor on ports of its own, restarted on them when it dies.

`epp_argv` is the one place a replica's command line is built (first start and restarts alike):
flags that differ per replica, or name the other replicas, go there. With several replicas each
also binds a replica-sync port and names every other replica's (`--sync-port`, `--peer`), so
they share their approximate prefix index and in-flight load (`llmd.epp.replica_sync`); those
ports are chosen before any replica starts (`base_port`'s layout, else free ephemeral ports),
because every replica must name all the others from its first start.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd._proc import ChildSpec, Supervisor
from llmd.gateway._kv_events import SimKvEvents
from llmd.gateway.envoy import EppReplica
from llmd.sim.fleet import Progress

if TYPE_CHECKING:
    from llmd.gateway.stack import LocalStack, StackSpec

__all__ = ["EPP_PORTS", "EppProcess", "epp_argv", "epp_port_names", "epp_ports", "replica_name",
           "start_epps"]

EPP_PORTS = ("ext_proc", "grpc health", "metrics")
SYNC_PORT = "replica sync"


def epp_port_names(replicas: int) -> tuple[str, ...]:
    """What each replica listens on: one EPP's three ports, and a sync port with peers."""
    return EPP_PORTS if replicas == 1 else (*EPP_PORTS, SYNC_PORT)


@dataclass(frozen=True, slots=True)
class EppProcess:
    """A running `llmd epp` replica: its child name, first pid (for /proc/<pid>/stat) and the
    ports it bound (a restart binds them again)."""

    name: str
    pid: int
    host: str
    grpc_port: int
    health_port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def replica(self) -> EppReplica:
        """As Envoy's `epp` cluster lists it (health-checked on its gRPC health port)."""
        return EppReplica(address=self.address, health_port=self.health_port)


def replica_name(index: int, replicas: int) -> str:
    """`epp` when there is one replica (as before replicas existed), else `epp-<index>`."""
    return "epp" if replicas == 1 else f"epp-{index}"


def epp_ports(spec: StackSpec, index: int) -> list[int]:
    """Replica `index`'s ext_proc, health and metrics ports (and sync port, with several):
    after the fleet's with a fixed `base_port`; all 0 (ephemeral) otherwise."""
    names = epp_port_names(spec.epp_replicas)
    if not spec.base_port:
        return [0] * len(names)
    first = spec.base_port + spec.fleet_size() + index * len(names)
    return [first + i for i in range(len(names))]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def sync_ports(spec: StackSpec) -> list[int]:
    """Each replica's sync port (none with one replica): `base_port`'s layout, else a free one
    chosen now, so every replica can name the others before any starts."""
    if spec.epp_replicas == 1:
        return []
    return [epp_ports(spec, i)[3] or _free_port(spec.host) for i in range(spec.epp_replicas)]


def epp_argv(stack: LocalStack, index: int, ports: list[int] | None = None) -> list[str]:
    """Replica `index`'s `llmd epp` command line for the stack's fleet (static discovery,
    engine labels); `ports` (ext_proc, health, metrics) pins them, as a restart does.

    Every replica gets the same pool, config and flags; with several, its own sync port
    (`stack.epp_sync_ports[index]`) and every other replica's as `--peer`."""
    spec = stack.spec
    ports = ports or epp_ports(spec, index)
    argv = [sys.executable, "-c", "from llmd.cli import main; main()", "epp",
            "--host", spec.host, "--grpc-port", str(ports[0]),
            "--grpc-health-port", str(ports[1]), "--metrics-port", str(ports[2]),
            "--fallback-endpoints", str(spec.fallback_endpoints),
            "--log-level", stack.log_level]
    if stack.epp_sync_ports:
        argv += ["--sync-port", str(stack.epp_sync_ports[index])]
        for j, port in enumerate(stack.epp_sync_ports):
            if j != index:
                argv += ["--peer", _join(spec.host, port)]
    for flag in stack.epp_endpoints if spec.external else _sim_endpoints(stack):
        argv += ["--endpoint", flag]
    config_file, text = spec.epp_config()
    if config_file is not None:
        argv += ["--config-file", str(config_file)]
    if text is not None:
        argv += ["--config-text", text]
    return argv + list(spec.epp_args)


def _sim_endpoints(stack: LocalStack) -> list[str]:
    """The EPP's `--endpoint` flags for the stack's own simulators (or, with P/D, the decode
    sims' sidecars and the prefill sims), with their engine, role and KV-event labels."""
    role = ",role=decode" if stack.spec.pd else ""
    kv = stack.kv_events or SimKvEvents({}, {})
    # A sidecar's endpoint carries the labels of the decode sim behind it.
    sims = stack.decode if stack.spec.pd else stack.endpoints
    flags = [f"{ep.address},engine={ep.engine}{role}{kv.labels(sim.name)}"
             for ep, sim in zip(stack.endpoints, sims, strict=True)]
    return flags + [f"{ep.address},engine={ep.engine},role=prefill{kv.labels(ep.name)}"
                    for ep in stack.prefill]


async def start_epps(sup: Supervisor, stack: LocalStack, progress: Progress) -> list[EppProcess]:
    """Start `spec.epp_replicas` replicas under `sup`, in parallel; each is ready once `llmd
    epp` prints its listening lines (after its gRPC health says SERVING: with peers, once it
    has their snapshots or their catch-up timeout passed)."""
    count = stack.spec.epp_replicas
    stack.epp_sync_ports = sync_ports(stack.spec)

    async def one(index: int) -> EppProcess:
        name = replica_name(index, count)
        progress(name, "starting")
        child = await sup.start(ChildSpec(
            name, stack.epp_argv(index), start_timeout_s=stack.spec.start_timeout_s,
            listening_lines=len(epp_port_names(count)),
            restart_argv=lambda c: stack.epp_argv(index,
                                                  [port for _, port in c.first_addresses])))
        (host, grpc_port), (_, health_port), (_, metrics_port) = child.addresses[:3]
        if count > 1:  # with peers it reports SERVING once caught up with them
            await _until_serving(host, health_port, stack.spec.start_timeout_s)
        progress(name, "ready")
        return EppProcess(name, child.proc.pid, host, grpc_port, health_port, metrics_port)

    tasks = [asyncio.create_task(one(i), name=replica_name(i, count)) for i in range(count)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _until_serving(host: str, port: int, timeout_s: float) -> None:
    """Watch the replica's gRPC health ("" service, what Envoy checks) until SERVING."""
    async with grpc.aio.insecure_channel(_join(host, port)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(timeout_s):
            async for status in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
