"""The systems `llmd bench` drives: llmd (several EPP configs), Envoy round-robin, the SGLang and
vLLM routers, and "direct" (the client spreads requests over the simulators itself).

    async with running_system(SYSTEMS["sglang-cache_aware"], fleet, bins) as sys_:
        ... drive sys_.targets; sys_.router_pids are the router's processes ...

Every system gets a fresh fleet (the simulators' caches start empty) and is stopped, with its
fleet, when the block ends. llmd and Envoy round-robin run as `llmd.gateway.LocalStack`; a peer
router runs from its own venv (`llmd.bench.peers`) on 127.0.0.1.

Systems that follow the engines' KV events:

- `llmd-precise`: llm-d's default weights with `precise-prefix-cache-producer` feeding
  `prefix-cache-scorer` (instead of the approximate producer); `LocalStack` turns the
  simulators' KV events on (each binds an ipc:// socket of its own) and the producer tokenizes
  with the fleet's tokenizer (`FleetOptions.tokenizer`), exactly as the simulators do.
  `llmd-precise-speculative` adds `speculativeIndexing` (`SPECULATIVE_TTL`).
- `vllm-router-kv_aware`: vllm-router 0.1.17's `kv_aware` policy. Its SUB sockets connect
  (`--kv-event-source WORKER_URL=tcp://host:port`) and its static sources match only the empty
  topic, so every vLLM-dialect simulator publishes with topic "" on
  `tcp://[::ffff:127.0.0.1]:<port>`: the "::" makes vLLM's rule bind, on the IPv4-mapped
  loopback address only (nothing listens on another interface), and the router connects to
  `tcp://127.0.0.1:<port>`. SGLang-dialect simulators publish nothing: the router decodes only
  vLLM's event schema (an SGLang batch is rejected, "missing KV event field: lora_name"), so it
  routes to them on load alone. See docs/benchmarks.md, "Precise prefix-cache routing".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from llmd.engines import EngineName, get_adapter
from llmd.epp.config import DEFAULT_CONFIG, v1_default_config
from llmd.gateway import LocalStack, StackSpec
from llmd.sim.fleet import FleetEndpoint, FleetSpec, start_fleet

__all__ = ["LLMD_CONFIGS", "SPECULATIVE_TTL", "SYSTEMS", "FleetOptions", "RunningSystem",
           "SystemDef", "epp_config", "precise_config", "running_system"]

SystemKind = Literal["llmd", "envoy-rr", "sglang-router", "vllm-router", "direct"]

_HEAD = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
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


SPECULATIVE_TTL = "10s"
"""`llmd-precise-speculative`'s `speculativeTTL`: a speculative entry must outlive the
request's wait in the engine's queue until its prefill stores the blocks (seconds at the top of
the ladder), or a group's next requests find nothing and spread; llm-d's default is 2s."""


def precise_config(tokenizer: str | None, block_size: int = 16,
                   speculative: bool = False) -> str:
    """llm-d's default weights (queue x2, kv-cache-utilization x2, prefix-cache x3, max-score
    picker) with `precise-prefix-cache-producer` feeding the prefix scorer instead of the
    approximate producer. `tokenizer`: the model directory the simulators tokenize with (None:
    their built-in tokenizer); the EPP must tokenize exactly as they do. `speculative`:
    `speculativeIndexing` with `SPECULATIVE_TTL`."""
    doc = yaml.safe_load(DEFAULT_CONFIG)
    params: dict[str, object] = {"tokenProcessorConfig": {"blockSize": block_size},
                                 "speculativeIndexing": speculative}
    if speculative:
        params["speculativeTTL"] = SPECULATIVE_TTL
    if tokenizer:
        params["tokenizer"] = str(Path(tokenizer).resolve())
    doc["plugins"].append({"type": "precise-prefix-cache-producer", "parameters": params})
    return str(yaml.safe_dump(doc, sort_keys=False))


LLMD_CONFIGS: dict[str, str | None] = {
    "default": None,  # llm-d's default: queue x2, kv-cache-utilization x2, prefix-cache x3
    "autotune": _with_autotune(DEFAULT_CONFIG),  # the same weights, autoTune on
    "precise": precise_config(None),  # the same weights, the engines' KV events (see above)
    "precise-speculative": precise_config(None, speculative=True),
    # llm-d v1.0's recommended default (approx-prefix-cache-producer + inflight-load-producer +
    # prefix-cache-affinity-filter + token-load-scorer), plugin-default peakPrefillThroughput
    "v1-default": v1_default_config(),
    "prefix-only": _PREFIX_ONLY,
    "load-only": _LOAD_ONLY,
    "random": _RANDOM,
}
"""EPP configs by name. `precise` here uses the built-in tokenizer; `epp_config` gives the one
for a fleet (its tokenizer and block size)."""


@dataclass(frozen=True, slots=True)
class SystemDef:
    name: str
    kind: SystemKind
    policy: str = ""
    """llmd: a LLMD_CONFIGS key; a peer router: its --policy."""
    kv_events_of: frozenset[str] = frozenset()
    """A peer router fed KV events: the engines whose event dialect it decodes (their
    simulators publish to it, the others publish nothing and it routes to them on load)."""
    epp_replicas: int = 1
    """llmd: `llmd epp` replicas sharing one view behind the one Envoy (`llmd up
    --epp-replicas`)."""

    @property
    def venv(self) -> str | None:
        """The peer router package (and .venv-peers/ directory) this system runs from."""
        return self.kind if self.kind in PEERS else None


SYSTEMS: dict[str, SystemDef] = {s.name: s for s in (
    SystemDef("llmd-default", "llmd", "default"),
    SystemDef("llmd-v1-default", "llmd", "v1-default"),
    SystemDef("llmd-autotune", "llmd", "autotune"),
    SystemDef("llmd-precise", "llmd", "precise"),
    SystemDef("llmd-precise-speculative", "llmd", "precise-speculative"),
    SystemDef("llmd-prefix-only", "llmd", "prefix-only"),
    SystemDef("llmd-load-only", "llmd", "load-only"),
    SystemDef("llmd-random", "llmd", "random"),
    SystemDef("envoy-rr", "envoy-rr"),
    SystemDef("sglang-cache_aware", "sglang-router", "cache_aware"),
    SystemDef("sglang-round_robin", "sglang-router", "round_robin"),
    SystemDef("llmd-default-x2", "llmd", "default", epp_replicas=2),
    SystemDef("llmd-default-x4", "llmd", "default", epp_replicas=4),
    SystemDef("llmd-precise-speculative-x2", "llmd", "precise-speculative", epp_replicas=2),
    SystemDef("llmd-precise-speculative-x4", "llmd", "precise-speculative", epp_replicas=4),
    SystemDef("vllm-router-cache_aware", "vllm-router", "cache_aware"),
    # vllm-router rejects an SGLang batch ("missing KV event field: lora_name").
    SystemDef("vllm-router-kv_aware", "vllm-router", "kv_aware", frozenset({"vllm"})),
    SystemDef("direct", "direct"),
)}


@dataclass(frozen=True, slots=True)
class FleetOptions:
    engines: tuple[EngineName, ...] = ("vllm", "vllm", "sglang", "sglang")
    model: str = "llmd-sim"
    time_scale: float = 1.0
    sim_args: tuple[str, ...] = ()
    tokenizer: str | None = None
    """The simulators' `--tokenizer` (also in `sim_args`): what a precise EPP tokenizes with."""
    block_size: int = 16
    """The simulators' `--block-size`: the block size of a KV-event index."""


def epp_config(policy: str, fleet: FleetOptions) -> str | None:
    """The EPP config text of LLMD_CONFIGS[policy] for `fleet` (None: llm-d's default)."""
    if policy.startswith("precise"):
        return precise_config(fleet.tokenizer, fleet.block_size,
                              speculative=policy == "precise-speculative")
    return LLMD_CONFIGS[policy]


@dataclass(slots=True)
class RunningSystem:
    name: str
    targets: str | list[str]
    endpoints: list[FleetEndpoint]
    router_pids: list[int] = field(default_factory=list)
    """The routing layer's processes (Envoy + EPP replicas for llmd); empty for direct."""
    epp_pids: list[int] = field(default_factory=list)
    """llmd: the EPP replicas' processes (also in `router_pids`)."""


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
                         epp_replicas=system.epp_replicas,
                         epp_config_text=epp_config(system.policy, fleet) if system.policy
                         else None)
        async with LocalStack(spec) as stack:
            assert stack.gateway is not None and stack.gateway.child is not None
            epps = [e.pid for e in stack.epps]
            yield RunningSystem(system.name, stack.url, list(stack.endpoints),
                                [stack.gateway.child.proc.pid, *epps], epps)
        return
    kv_ports = _kv_event_ports(fleet, system.kv_events_of)
    async with Supervisor() as sup:
        endpoints = await start_fleet(sup, FleetSpec(
            engines=fleet.engines, model=fleet.model, port_base=0,
            sim_args=("--time-scale", repr(fleet.time_scale), *fleet.sim_args),
            per_sim_args={name: _kv_events_args(engine, port)
                          for name, (engine, port) in kv_ports.items()}))
        if system.kind == "direct":
            yield RunningSystem(system.name, [e.url for e in endpoints], endpoints)
            return
        if bins is None or system.kind not in bins:
            raise ChildError(f"{system.name}: {system.kind} is not installed")
        port = _free_port()
        extra: list[str] = []
        if kv_ports:
            extra = ["--kv-event-block-size", str(fleet.block_size), "--kv-event-model",
                     fleet.model]
            for ep in endpoints:
                if ep.name in kv_ports:
                    extra += ["--kv-event-source",
                              f"{ep.url}=tcp://127.0.0.1:{kv_ports[ep.name][1]}"]
        argv = router_argv(system.kind, bins[system.kind], system.policy, port, _free_port(),
                           [e.url for e in endpoints], extra)
        child = await sup.start(ChildSpec(system.name, argv, prints_listening=False))
        url = f"http://127.0.0.1:{port}"
        await _wait_routing(child, url, fleet.model)
        yield RunningSystem(system.name, url, endpoints, [child.proc.pid])


def _kv_event_ports(fleet: FleetOptions, engines: frozenset[str]) -> dict[str, tuple[str, int]]:
    """Per simulator whose engine is in `engines` (child name -> engine, port), a free loopback
    port for its KV events."""
    names = FleetSpec(engines=fleet.engines).child_names()
    return {name: (engine, _free_port())
            for name, engine in zip(names, fleet.engines, strict=True) if engine in engines}


def _kv_events_args(engine: str, port: int) -> tuple[str, ...]:
    """The engine's own `--kv-events-config` for a peer router's KV-event policy: bind (both
    engines bind an endpoint containing "::") on the IPv4-mapped loopback address, so the
    router's SUB, which connects over IPv4 and cannot reach `[::1]`, finds it at
    tcp://127.0.0.1:<port>, and nothing listens beyond loopback; topic "", the only one
    vllm-router's static sources accept."""
    config = get_adapter(engine).kv_events.serve_config(f"tcp://[::ffff:127.0.0.1]:{port}", "")
    return ("--kv-events-config", json.dumps(config, separators=(",", ":")))


def describe(systems: Sequence[SystemDef]) -> list[str]:
    return [f"{s.name}: {s.kind} {s.policy}".strip() for s in systems]
