"""KV events in `llmd up`: simulators publish where the EPP's precise prefix index reads.

When the EPP config holds a `precise-prefix-cache-producer` (or `-scorer`), every simulator
the stack starts (plain, P/D decode and prefill) gets its engine's own `--kv-events-config`
(the adapter's `serve_config`) and the EPP's endpoint flags say where each one publishes:

- per-endpoint subscriptions (llm-d's default, `discoverPods`): each simulator binds
  `ipc://<run dir>/<child name>.kv` (a socket file, nothing listening on the network) and its
  endpoint carries `kv-events=<that url>`, which the EPP dials instead of `<ip>:<socketPort>`;
- centralized (`kvEventsConfig.zmqEndpoint`): the EPP binds that endpoint and the simulators
  connect to it on the stack's host; the topic names the endpoint, so the ports must be known
  before the simulators start (a fixed `base_port`).

Topics follow llm-d's `kv@<ip>:<port>@<model>` with the port the EPP schedules on (a decode
sim's sidecar), or `kv@<child name>@<model>` when ports are ephemeral. Every endpoint also gets
`llm-d.ai/model`, the model its blocks are keyed under when a topic does not name one, and the
simulators' `--block-size` follows the plugin's `tokenProcessorConfig.blockSize` unless the
stack's simulator flags set one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmd.engines import EngineName, get_adapter, kv_topic
from llmd.epp import EndpointPickerConfig
from llmd.epp.plugins import PrecisePrefixCacheProducer
from llmd.errors import ConfigError

__all__ = ["KV_EVENTS_LABEL", "SimChild", "SimKvEvents", "plan_kv_events"]

KV_EVENTS_LABEL = "kv-events"
MODEL_LABEL = "llm-d.ai/model"


@dataclass(frozen=True, slots=True)
class SimChild:
    """A simulator the stack will start: its child name, dialect and the port the EPP
    schedules it on (0: not known before it starts)."""

    name: str
    engine: EngineName
    endpoint_port: int


@dataclass(frozen=True, slots=True)
class SimKvEvents:
    """Per child name: extra `llmd sim` flags and the suffix of its `llmd epp --endpoint`."""

    sim_args: Mapping[str, tuple[str, ...]]
    endpoint_labels: Mapping[str, str]

    def args(self, name: str) -> tuple[str, ...]:
        return self.sim_args.get(name, ())

    def labels(self, name: str) -> str:
        return self.endpoint_labels.get(name, "")


def plan_kv_events(config: EndpointPickerConfig, children: Sequence[SimChild], *, model: str,
                   host: str, run_dir: Path, sim_flags: Sequence[str]) -> SimKvEvents | None:
    """The simulators' KV-event flags for `config`, or None when no plugin reads events."""
    precise = [p for p in config.background if isinstance(p, PrecisePrefixCacheProducer)]
    if not precise:
        return None
    params = precise[0].params
    central = params.kv_events_config.zmq_endpoint
    block = () if "--block-size" in sim_flags else (
        "--block-size", str(params.token_processor_config.block_size))
    if central is not None and any(c.endpoint_port == 0 for c in children):
        raise ConfigError(
            f"{precise[0].name}: kvEventsConfig.zmqEndpoint ({central}): centralized KV events "
            "name each endpoint's port in the simulators' topics, so the ports must be fixed: "
            "give a base port (llmd up --base-port N), or drop zmqEndpoint")
    if central is not None and not central.startswith("tcp://"):
        raise ConfigError(
            f"{precise[0].name}: kvEventsConfig.zmqEndpoint ({central}): llmd up's "
            "simulators connect to a centralized endpoint over tcp://host:port only (vLLM "
            "binds any ipc:// endpoint); use tcp://127.0.0.1:<port>, or drop zmqEndpoint")
    args: dict[str, tuple[str, ...]] = {}
    labels: dict[str, str] = {}
    for child in children:
        dialect = get_adapter(child.engine).kv_events
        topic = (kv_topic(host, child.endpoint_port, model) if child.endpoint_port
                 else f"kv@{child.name}@{model}")
        if central is not None:
            url = _connect_url(central, host)
            label = ""
        else:
            url = f"ipc://{run_dir / child.name}.kv"
            label = f",{KV_EVENTS_LABEL}={url}"
        config_json = json.dumps(dialect.serve_config(url, topic), separators=(",", ":"))
        args[child.name] = ("--kv-events-config", config_json, *block)
        labels[child.name] = f"{label},{MODEL_LABEL}={model}"
    return SimKvEvents(args, labels)


def _connect_url(bind_url: str, host: str) -> str:
    """Where a simulator on `host` reaches the socket the EPP binds at `bind_url`."""
    address, _, port = bind_url[len("tcp://"):].rpartition(":")
    if address in ("*", "0.0.0.0", "[::]", "::", ""):
        address = f"[{host}]" if ":" in host else host
    return f"tcp://{address}:{port}"
