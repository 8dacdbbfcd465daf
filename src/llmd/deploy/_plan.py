"""From values to a per-role plan: parallelism, ports, engines, P/D; impossible combinations fail.

Every check here turns a deploy-time surprise (a hung data-parallel group, two servers on one
port, P/D without the sidecar that runs it) into a `ConfigError` naming the values path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmd.deploy._pd import EngineSource, check_pd
from llmd.deploy.values import Container, RoleValues, Values
from llmd.engines import ADAPTERS, DEFAULT_ENGINE, EngineName, engine_for_command, get_adapter

__all__ = ["Parallel", "RolePlan", "plan_roles"]

RoleName = Literal["decode", "prefill"]
_COMMAND_ENGINE: dict[str, EngineName] = {
    a.serve_model_command: a.name for a in ADAPTERS.values()
}


@dataclass(frozen=True, slots=True)
class Parallel:
    """The chart's numbers (`tensor` per data-parallel rank, `data_local` ranks per pod,
    `workers` pods per group) and the engine-wide tensor parallelism they imply."""

    tensor: int
    data: int
    data_local: int
    workers: int

    @property
    def gpus_per_pod(self) -> int:
        return self.tensor * self.data_local

    @property
    def engine_tensor(self) -> int:
        """GPUs of the whole group over data-parallel ranks: equals `tensor` unless one tensor
        group spans several pods (SGLang multinode)."""
        return self.gpus_per_pod * self.workers // self.data


@dataclass(frozen=True, slots=True)
class RolePlan:
    name: RoleName
    values: RoleValues
    parallel: Parallel
    engine: EngineName
    """The engine of the role's serving containers (labels, probes, sidecar connector)."""
    container_engines: tuple[EngineName | None, ...]
    """Per container: its engine, None for a custom container that runs no known engine."""
    engine_source: EngineSource | None
    """Where `engine` comes from; None when no container runs a known engine (the default)."""
    engine_port: int
    pd: bool
    multinode: bool


def plan_roles(values: Values, warnings: list[str], errors: list[str]) -> list[RolePlan]:
    """The decode and prefill plans for roles with `create: true`; every problem found is
    appended to `errors` (the plans are then only good for finding more problems)."""
    routing = values.routing
    prefill, decode = values.prefill, values.decode
    pd = prefill.create and prefill.replicas > 0 and decode.create
    if pd and not routing.proxy.enabled:
        errors.append(
            "routing.proxy.enabled: false, but prefill.replicas is "
            f"{prefill.replicas}: P/D needs the routing sidecar in decode pods "
            "(enable the proxy, or set prefill.replicas: 0)")
    if routing.proxy.enabled and routing.proxy.target_port == routing.service_port:
        errors.append(
            f"routing.proxy.targetPort: {routing.proxy.target_port} is also "
            "routing.servicePort: the sidecar and the decode engine cannot share a port")
    plans = []
    for name, role in (("decode", decode), ("prefill", prefill)):
        if not role.create:
            continue
        plans.append(_plan_role(name, role, values, pd, errors, warnings))  # type: ignore[arg-type]
    check_pd(plans, values, errors)
    return plans


def _plan_role(name: RoleName, role: RoleValues, values: Values, pd: bool, errors: list[str],
               warnings: list[str]) -> RolePlan:
    parallel = _parallel(name, role, values.multinode, errors)
    found = [_container_engine(f"{name}.containers[{i}]", c, errors)
             for i, c in enumerate(role.containers)]
    engines = tuple(e for e, _ in found)
    if not role.containers:
        errors.append(f"{name}.containers: at least one container is required")
    serving = [(e, why) for e, why in found if e is not None]
    engine: EngineName = serving[0][0] if serving else DEFAULT_ENGINE
    if not serving and role.containers:
        warnings.append(
            f"{name}.containers: no container runs a known engine; pods are labelled "
            f"{DEFAULT_ENGINE!r} (set `engine:` on the serving container)")
    if parallel is None:  # reported; one rank per pod, so the containers are still checked
        parallel = Parallel(tensor=role.parallelism.tensor or 1, data=1, data_local=1, workers=1)
    elif values.multinode:
        adapter = get_adapter(engine)
        if parallel.data != parallel.data_local * parallel.workers and not adapter.tp_spans_nodes:
            errors.append(
                f"{name}.parallelism: {engine} spreads a multinode group only by data "
                f"parallelism: data ({parallel.data}) must equal dataLocal "
                f"({parallel.data_local}) x workers ({parallel.workers})")
        elif (parallel.gpus_per_pod * parallel.workers) % parallel.data:
            errors.append(
                f"{name}.parallelism: data ({parallel.data}) does not divide the group's "
                f"{parallel.gpus_per_pod * parallel.workers} accelerators "
                f"(tensor x dataLocal x workers)")
    proxy = values.routing.proxy
    port = values.routing.service_port if name == "prefill" or not proxy.enabled \
        else proxy.target_port
    return RolePlan(name=name, values=role, parallel=parallel, engine=engine,
                    container_engines=engines, engine_source=serving[0][1] if serving else None,
                    engine_port=port, pd=pd, multinode=values.multinode)


def _parallel(name: str, role: RoleValues, multinode: bool, errors: list[str]) -> Parallel | None:
    """The chart's helpers, applied to the fields the values actually set (so a v0.3-era
    `data: 8, dataLocal: 4` still means two workers)."""
    p = role.parallelism
    where = f"{name}.parallelism"
    tensor = p.tensor or 1
    if p.data:
        data = p.data
    elif p.data_local and p.workers:
        data = p.data_local * p.workers
    else:
        data = p.data_local or 1
    if p.data_local:
        local = p.data_local
    elif p.data and p.workers:
        if p.data % p.workers:
            errors.append(f"{where}.data: {p.data} is not a multiple of workers ({p.workers})")
            return None
        local = p.data // p.workers
    else:
        local = p.data or 1
    if p.workers:
        workers = p.workers
    elif p.data and p.data_local:
        if p.data % p.data_local:
            errors.append(
                f"{where}.data: {p.data} is not a multiple of dataLocal ({p.data_local})")
            return None
        workers = p.data // p.data_local
    else:
        workers = 1
    if data % local:
        errors.append(f"{where}.data: {data} is not a multiple of dataLocal ({local})")
        return None
    if not multinode and workers > 1:
        errors.append(f"{where}.workers: {workers} pods per group need `multinode: true`")
        return None
    if not multinode and data != local:
        errors.append(
            f"{where}: data ({data}) must equal dataLocal ({local}) without multinode: "
            "each pod is a whole data-parallel group")
        return None
    return Parallel(tensor=tensor, data=data, data_local=local, workers=workers)


def _container_engine(where: str, c: Container,
                      errors: list[str]) -> tuple[EngineName | None, EngineSource]:
    command = c.model_command or "custom"
    implied = _COMMAND_ENGINE.get(command)
    if implied is not None:
        if c.engine is not None and c.engine != implied:
            errors.append(f"{where}.engine: {c.engine!r} contradicts modelCommand {command} "
                          f"(which runs {implied})")
        return implied, EngineSource(f"{where}.modelCommand", repr(command))
    if c.engine is not None:
        source = EngineSource(f"{where}.engine", repr(c.engine))
        if command == "custom" and not c.command:
            errors.append(f"{where}.command: required when modelCommand is custom (or unset)")
        return c.engine, source
    if command == "imageDefault":
        return DEFAULT_ENGINE, EngineSource(f"{where}.modelCommand",
                                            "'imageDefault' (no engine: set)")
    source = EngineSource(f"{where}.command", "the command")
    if not c.command:
        errors.append(f"{where}.command: required when modelCommand is custom (or unset)")
        return None, source
    return engine_for_command([*c.command, *c.args]), source
