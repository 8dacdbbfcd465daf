"""The systems `llmd bench` drives: llmd (four EPP configs), Envoy round-robin, the SGLang and
vLLM routers, and "direct" (the client spreads requests over the simulators itself).

    async with running_system(SYSTEMS["sglang-cache_aware"], fleet, bins) as sys_:
        ... drive sys_.targets; sys_.router_pids are the router's processes ...

Every system gets a fresh fleet (the simulators' caches start empty) and is stopped, with its
fleet, when the block ends. llmd and Envoy round-robin run as `llmd.gateway.LocalStack`; a peer
router runs from its own venv (`llmd.bench.peers`) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import yaml

from llmd._proc import Child, ChildError, ChildSpec, Supervisor
from llmd.bench.peers import PEERS, router_argv
from llmd.engines import EngineName
from llmd.epp.config import DEFAULT_CONFIG
from llmd.gateway import LocalStack, StackSpec
from llmd.sim.fleet import FleetEndpoint, FleetSpec, start_fleet

__all__ = ["LLMD_CONFIGS", "SYSTEMS", "FleetOptions", "RunningSystem", "SystemDef",
           "running_system"]

SystemKind = Literal["llmd", "envoy-rr", "sglang-router", "vllm-router", "direct"]

_HEAD = "apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\n"
_PREFIX_ONLY = _HEAD + """\
plugins:
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-scorer
"""
_LOAD_ONLY = _HEAD + """\
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
  - pluginRef: kv-cache-utilization-scorer
"""
_RANDOM = _HEAD + """\
plugins:
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: random-picker
"""


def _with_autotune(config: str) -> str:
    """`config` plus an approx-prefix-cache-producer with `autoTune: true`: the prefix index sized
    from the block size and block count each endpoint reports instead of 31,250 blocks, so it
    forgets a prefix about when the engine evicts it."""
    doc = yaml.safe_load(config)
    doc["plugins"].append({"type": "approx-prefix-cache-producer",
                           "parameters": {"autoTune": True}})
    return str(yaml.safe_dump(doc, sort_keys=False))


LLMD_CONFIGS: dict[str, str | None] = {
    "default": None,  # llm-d's default: queue x2, kv-cache-utilization x2, prefix-cache x3
    "autotune": _with_autotune(DEFAULT_CONFIG),  # the same weights, autoTune on
    "prefix-only": _PREFIX_ONLY,
    "load-only": _LOAD_ONLY,
    "random": _RANDOM,
}


@dataclass(frozen=True, slots=True)
class SystemDef:
    name: str
    kind: SystemKind
    policy: str = ""
    """llmd: a LLMD_CONFIGS key; a peer router: its --policy."""

    @property
    def venv(self) -> str | None:
        """The peer router package (and .venv-peers/ directory) this system runs from."""
        return self.kind if self.kind in PEERS else None


SYSTEMS: dict[str, SystemDef] = {s.name: s for s in (
    SystemDef("llmd-default", "llmd", "default"),
    SystemDef("llmd-autotune", "llmd", "autotune"),
    SystemDef("llmd-prefix-only", "llmd", "prefix-only"),
    SystemDef("llmd-load-only", "llmd", "load-only"),
    SystemDef("llmd-random", "llmd", "random"),
    SystemDef("envoy-rr", "envoy-rr"),
    SystemDef("sglang-cache_aware", "sglang-router", "cache_aware"),
    SystemDef("sglang-round_robin", "sglang-router", "round_robin"),
    SystemDef("vllm-router-cache_aware", "vllm-router", "cache_aware"),
    SystemDef("direct", "direct"),
)}


@dataclass(frozen=True, slots=True)
class FleetOptions:
    engines: tuple[EngineName, ...] = ("vllm", "vllm", "sglang", "sglang")
    model: str = "llmd-sim"
    time_scale: float = 1.0
    sim_args: tuple[str, ...] = ()


@dataclass(slots=True)
class RunningSystem:
    name: str
    targets: str | list[str]
    endpoints: list[FleetEndpoint]
    router_pids: list[int] = field(default_factory=list)
    """The routing layer's processes (Envoy + EPP for llmd); empty for direct."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_routing(child: Child, url: str, model: str, timeout_s: float = 60.0) -> None:
    """Until a tiny completion through the router answers 200 (its workers are registered)."""
    body = {"model": model, "prompt": "ready?", "max_tokens": 1}
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while True:
            if child.proc.returncode is not None:
                await asyncio.sleep(0.2)  # let the reader catch the last lines
                raise ChildError(child.describe_exit())
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(url + "/v1/completions", json=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                tail = "\n".join(child.tail)
                raise ChildError(f"{child.spec.name} did not route a request within "
                                 f"{timeout_s:g} s:\n{tail}")
            await asyncio.sleep(0.1)  # polling a condition under a deadline


@contextlib.asynccontextmanager
async def running_system(system: SystemDef, fleet: FleetOptions,
                         bins: dict[str, Path] | None = None) -> AsyncIterator[RunningSystem]:
    """A fresh fleet plus `system` in front of it; both stopped on exit."""
    if system.kind in ("llmd", "envoy-rr"):
        spec = StackSpec(engines=fleet.engines, model=fleet.model, time_scale=fleet.time_scale,
                         sim_args=fleet.sim_args, epp=system.kind == "llmd",
                         epp_config_text=LLMD_CONFIGS[system.policy] if system.policy else None)
        async with LocalStack(spec) as stack:
            assert stack.gateway is not None and stack.gateway.child is not None
            pids = [stack.gateway.child.proc.pid] + ([stack.epp.pid] if stack.epp else [])
            yield RunningSystem(system.name, stack.url, list(stack.endpoints), pids)
        return
    async with Supervisor() as sup:
        endpoints = await start_fleet(sup, FleetSpec(
            engines=fleet.engines, model=fleet.model, port_base=0,
            sim_args=("--time-scale", repr(fleet.time_scale), *fleet.sim_args)))
        if system.kind == "direct":
            yield RunningSystem(system.name, [e.url for e in endpoints], endpoints)
            return
        if bins is None or system.kind not in bins:
            raise ChildError(f"{system.name}: {system.kind} is not installed")
        port = _free_port()
        argv = router_argv(system.kind, bins[system.kind], system.policy, port, _free_port(),
                           [e.url for e in endpoints])
        child = await sup.start(ChildSpec(system.name, argv, prints_listening=False))
        url = f"http://127.0.0.1:{port}"
        await _wait_routing(child, url, fleet.model)
        yield RunningSystem(system.name, url, endpoints, [child.proc.pid])


def describe(systems: Sequence[SystemDef]) -> list[str]:
    return [f"{s.name}: {s.kind} {s.policy}".strip() for s in systems]
