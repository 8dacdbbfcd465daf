"""KV events for llm-d's precise prefix-cache routing: engines publish where the EPP reads.

When the EPP config the render uses (`routing.epp.config`; llmd's default config has no precise
plugin) holds `precise-prefix-cache-scorer` (llm-d's older name) or
`precise-prefix-cache-producer` (llm-d v1), the serving container of every decode and prefill
pod (a LeaderWorkerSet's leader only) gets a `KvEventsSpec`, which its adapter turns into
`--kv-events-config`, as that plugin's `kvEventsConfig` expects:

- pod discovery (`discoverPods: true`, llm-d's default): the engine binds
  `tcp://*:<podDiscoveryConfig.socketPort>` (default 5557), declared as container port
  `kv-events`; the EPP dials `tcp://<pod IP>:<socketPort>` of every endpoint it schedules on.
- centralized (`discoverPods: false`): the EPP binds `zmqEndpoint`; the engines connect to
  `tcp://<the EPP Service>:<that port>`, which the EPP container and Service then expose.

The topic is `kv@$(POD_IP):<routing.servicePort>@<served model name>`: llm-d's index keys an
endpoint as `ip:port` with the port the InferencePool gives the EPP, the routing sidecar's in
decode pods (not the engine's port behind it) and the engine's in prefill pods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmd.config import format_loc
from llmd.deploy._plan import RolePlan
from llmd.deploy.values import Values
from llmd.engines import ENGINE_TYPE_LABEL, KvEventsSpec, get_adapter
from llmd.errors import ConfigError

__all__ = ["PORT_NAME", "PRECISE_PLUGINS", "KvEvents", "arg_value", "check_role", "kv_events",
           "serving_index"]

PRECISE_PLUGINS = ("precise-prefix-cache-scorer", "precise-prefix-cache-producer")
PORT_NAME = "kv-events"
DEFAULT_SOCKET_PORT = 5557  # llm-d-kv-cache's PodDiscoveryConfig default (the guides use 5556)
DEFAULT_BLOCK_SIZE = 16  # llm-d-kv-cache's TokenProcessorConfig default
DEFAULT_POD_SELECTOR = "llm-d.ai/inference-serving=true"
_ZMQ_ENDPOINT = re.compile(r"^tcp://(?P<host>\*|\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)$")


@dataclass(frozen=True, slots=True)
class KvEvents:
    """Where the engines publish, from one precise plugin's parameters."""

    path: str
    """The plugin's values path, `routing.epp.config.plugins[N]`."""
    plugin_type: str
    discover_pods: bool
    port: int
    """Pod discovery: the socket port each engine binds; centralized: the EPP's bound port."""
    port_path: str
    """The values path that sets `port` (or would, when it is llm-d's default)."""
    epp_service: str
    """Centralized mode: the EPP Service the engines connect to."""
    topic_port: int
    block_size: int
    block_size_path: str
    pod_selector: str
    engine_type: str | None
    """`kvEventsConfig.engineType` when set: llm-d's EPP then decodes every pod's events so."""

    @property
    def endpoint(self) -> str:
        if self.discover_pods:
            return f"tcp://*:{self.port}"
        return f"tcp://{self.epp_service}:{self.port}"

    def spec(self, served_model_name: str) -> KvEventsSpec:
        return KvEventsSpec(endpoint=self.endpoint,
                            topic=f"kv@$(POD_IP):{self.topic_port}@{served_model_name}")

    def check_ports(self, taken: dict[int, str], ranks: int, role: str) -> None:
        """The socket port (and the `ranks` - 1 above it: engines offset it per local
        data-parallel rank) must not be a port the pod already uses."""
        if not self.discover_pods:
            return
        clashes = [(p, taken[p]) for p in range(self.port, self.port + ranks) if p in taken]
        if clashes:
            port, what = clashes[0]
            bound = (f" (with {ranks} data-parallel ranks the engine binds "
                     f"{self.port}-{self.port + ranks - 1}) takes {port}, which" if ranks > 1
                     else "")
            raise ConfigError(
                f"{self.port_path}: {self.port}{bound} is also {what} in {role} pods: choose "
                f"another (llm-d's default {DEFAULT_SOCKET_PORT})")


def kv_events(values: Values, epp_service: str, warnings: list[str]) -> KvEvents | None:
    """The KV-event plan of `routing.epp.config`, or None when it has no precise plugin.
    Every malformed or unsupported parameter is one line of the ConfigError."""
    config = values.routing.epp.config
    plugins = config.get("plugins") if isinstance(config, dict) else None
    if not isinstance(plugins, list):
        return None
    found = [(i, p) for i, p in enumerate(plugins)
             if isinstance(p, dict) and p.get("type") in PRECISE_PLUGINS]
    if not found:
        return None
    problems: list[str] = []
    plans = [_plan(values, i, plugin, epp_service, problems) for i, plugin in found]
    first = plans[0]
    for plan in plans[1:]:
        if first is not None and plan is not None and (first.endpoint, first.topic_port) != \
                (plan.endpoint, plan.topic_port):
            problems.append(f"{plan.path}: a second {plan.plugin_type} whose engines would "
                            f"publish on {plan.endpoint}, but {first.path} reads "
                            f"{first.endpoint}: an engine publishes to one endpoint; give both "
                            "the same kvEventsConfig")
    if problems:
        raise ConfigError(problems)
    ports = values.routing.inference_pool.target_ports
    if first is not None and ports and first.topic_port not in ports:
        warnings.append(
            f"routing.inferencePool.targetPorts: {ports} leaves out routing.servicePort "
            f"({first.topic_port}), the port the engines' KV-event topics name: the EPP would "
            "match no event to an endpoint")
    return first


def _plan(values: Values, index: int, plugin: dict[str, Any], epp_service: str,
          problems: list[str]) -> KvEvents | None:
    base = ("routing", "epp", "config", "plugins", index)
    path = format_loc(base)
    before = len(problems)
    params = _map(plugin, (*base, "parameters"), problems)
    kv = _map(params, (*base, "parameters", "kvEventsConfig"), problems)
    tokens = _map(params, (*base, "parameters", "tokenProcessorConfig"), problems)
    kv_loc = (*base, "parameters", "kvEventsConfig")
    discover = kv.get("discoverPods", True)
    if not isinstance(discover, bool):
        problems.append(f"{format_loc((*kv_loc, 'discoverPods'))}: expected true or false, "
                        f"got {discover!r}")
        discover = True
    pods_loc = (*kv_loc, "podDiscoveryConfig")
    pods = _map(kv, pods_loc, problems)
    selector = pods.get("podLabelSelector", DEFAULT_POD_SELECTOR)
    if not isinstance(selector, str):
        problems.append(f"{format_loc((*pods_loc, 'podLabelSelector'))}: expected a label "
                        f"selector string, got {selector!r}")
        selector = DEFAULT_POD_SELECTOR
    if pods.get("replaySocketPort") not in (None, 0):
        problems.append(
            f"{format_loc((*pods_loc, 'replaySocketPort'))}: not rendered: llmd gives the "
            "engines no replay endpoint; remove it, or put the engine's own "
            "--kv-events-config (with replay_endpoint) in the container's args")
    engine_type = kv.get("engineType")
    if engine_type is not None and not isinstance(engine_type, str):
        problems.append(f"{format_loc((*kv_loc, 'engineType'))}: expected an engine name, "
                        f"got {engine_type!r}")
        engine_type = None
    block_loc, block = _block_size(tokens, (*base, "parameters", "tokenProcessorConfig"),
                                   problems)
    port_loc: tuple[str | int, ...]
    if discover:
        port_loc = (*pods_loc, "socketPort")
        port = _port(pods.get("socketPort"), port_loc, problems)
    else:
        port_loc = (*kv_loc, "zmqEndpoint")
        port = _centralized_port(values, kv.get("zmqEndpoint"), kv_loc, problems)
    if len(problems) > before:
        return None
    return KvEvents(path=path, plugin_type=str(plugin["type"]), discover_pods=discover,
                    port=port, port_path=format_loc(port_loc), epp_service=epp_service,
                    topic_port=values.routing.service_port, block_size=block,
                    block_size_path=format_loc(block_loc), pod_selector=selector,
                    engine_type=engine_type or None)


def _map(parent: dict[str, Any], loc: tuple[str | int, ...],
         problems: list[str]) -> dict[str, Any]:
    value = parent.get(str(loc[-1]))
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{format_loc(loc)}: expected a map, got {value!r}")
        return {}
    return value


def _int(value: Any) -> int | None:
    """A whole number as YAML gives it (never true/false or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _port(value: Any, loc: tuple[str | int, ...], problems: list[str]) -> int:
    if value is None:
        return DEFAULT_SOCKET_PORT
    number = _int(value)
    if number == 0:  # llm-d's zero value: its default
        return DEFAULT_SOCKET_PORT
    if number is None or not 1 <= number <= 65535:
        problems.append(f"{format_loc(loc)}: {value!r} is not a port: expected an integer "
                        f"1-65535 (llm-d's default {DEFAULT_SOCKET_PORT})")
        return DEFAULT_SOCKET_PORT
    return number


def _block_size(tokens: dict[str, Any], loc: tuple[str | int, ...],
                problems: list[str]) -> tuple[tuple[str | int, ...], int]:
    # blockSizeTokens (llm-d v1) replaces the deprecated blockSize; zero means unset.
    for key in ("blockSizeTokens", "blockSize"):
        value = tokens.get(key)
        if value is None or _int(value) == 0:
            continue
        number = _int(value)
        if number is None or number < 0:
            problems.append(f"{format_loc((*loc, key))}: expected a positive integer (tokens "
                            f"per block), got {value!r}")
            return (*loc, key), DEFAULT_BLOCK_SIZE
        return (*loc, key), number
    return (*loc, "blockSizeTokens"), DEFAULT_BLOCK_SIZE


def _centralized_port(values: Values, endpoint: Any, kv_loc: tuple[str | int, ...],
                      problems: list[str]) -> int:
    """discoverPods false: the EPP binds `zmqEndpoint` and the engines connect to it through
    the rendered EPP Service, which reaches one EPP replica per connection."""
    where = format_loc((*kv_loc, "discoverPods"))
    if not values.routing.epp_on:
        problems.append(
            f"{where}: false: the engines would connect to the EPP's zmqEndpoint through the "
            "EPP Service llmd renders, but the EPP is not rendered (routing.epp.enabled); "
            "render it, or use discoverPods: true")
    if values.routing.epp.replicas > 1:
        problems.append(
            f"{where}: false with routing.epp.replicas {values.routing.epp.replicas}: each "
            "engine connects to one EPP replica through the Service, so no replica sees every "
            "pod's events; use discoverPods: true (every replica dials every pod) or 1 replica")
    zmq_loc = format_loc((*kv_loc, "zmqEndpoint"))
    if endpoint is None:
        problems.append(f"{zmq_loc}: required when discoverPods is false (the address the EPP "
                        f"binds, e.g. tcp://*:{DEFAULT_SOCKET_PORT})")
        return DEFAULT_SOCKET_PORT
    match = _ZMQ_ENDPOINT.match(endpoint) if isinstance(endpoint, str) else None
    port = int(match["port"]) if match else 0
    if not 1 <= port <= 65535:
        problems.append(f"{zmq_loc}: {endpoint!r} is not tcp://HOST:PORT (the address the EPP "
                        f"binds, e.g. tcp://*:{DEFAULT_SOCKET_PORT})")
        return DEFAULT_SOCKET_PORT
    return port


def serving_index(plan: RolePlan) -> int | None:
    """The container that serves the role (the first that runs a known engine): the one that
    publishes KV events; a second engine container would bind the same socket."""
    return next((i for i, e in enumerate(plan.container_engines) if e is not None), None)


def check_role(kv: KvEvents, plan: RolePlan, labels: dict[str, str]) -> tuple[list[str],
                                                                              list[str]]:
    """(problems, warnings) of one role's pods publishing to `kv`; `labels` are its pods'."""
    problems: list[str] = []
    warnings: list[str] = []
    adapter = get_adapter(plan.engine)
    kv_path = f"{kv.path}.parameters.kvEventsConfig"
    if kv.engine_type is not None and kv.engine_type != adapter.engine_type_label:
        problems.append(
            f"{kv_path}.engineType: {kv.engine_type!r}, but {plan.name} runs {plan.engine}: "
            "llm-d's EPP would decode its KV events as another engine's; omit engineType "
            f"(llmd's EPP decodes each endpoint's events after its {ENGINE_TYPE_LABEL} label) or "
            f"set {adapter.engine_type_label!r}")
    if plan.parallel.data > 1:
        warnings.append(
            f"{plan.name}.parallelism: data parallelism {plan.parallel.data}: the EPP reads one "
            "KV-event stream per pod endpoint, data-parallel rank 0's, so the precise index "
            f"misses what the other {plan.parallel.data - 1} ranks cache (the leader's other "
            "ranks publish on socketPort + rank, which nobody reads; worker pods publish "
            "nothing); for precise routing run one rank per pod (data: 1, more replicas)")
    if kv.discover_pods and not _selects(kv.pod_selector, labels):
        warnings.append(
            f"{kv_path}.podDiscoveryConfig.podLabelSelector: {kv.pod_selector!r} does not "
            f"select the {plan.name} pods (labels {labels}): llm-d's EPP reads KV events only "
            "from pods it selects; add the label to modelArtifacts.labels or change the "
            "selector")
    index = serving_index(plan)
    if index is None:
        return problems, warnings
    c = plan.values.containers[index]
    where = f"{plan.name}.containers[{index}]"
    if c.model_command in (None, "custom"):
        if not any("--kv-events-config" in a for a in [*c.command, *c.args]):
            warnings.append(
                f"{where}.modelCommand: custom containers get nothing injected, so this one "
                f"publishes no KV events for {kv.path} ({kv.plugin_type}); add "
                "--kv-events-config to its command, or use "
                f"{adapter.serve_model_command}")
        return problems, warnings
    flag = adapter.block_size_flag
    given = _arg(c.args, flag)
    if given is not None and given[1].isdigit() and int(given[1]) != kv.block_size:
        size = int(given[1])
        big, small = max(size, kv.block_size), min(size, kv.block_size)
        realign = ("the EPP's index realigns one to the other (one engine block maps to "
                   "several of its blocks, or several to one), keeping more key mappings"
                   if small and big % small == 0 else
                   f"{big} is not a multiple of {small}, so the EPP's index cannot realign "
                   "the engine's blocks to its own")
        warnings.append(
            f"{where}.args[{given[0]}]: {flag} {size} differs from {kv.block_size_path} "
            f"({kv.block_size}): {realign}; set both to the same size")
    return problems, warnings


def _selects(selector: str, labels: dict[str, str]) -> bool:
    """Whether a label selector of equality and existence terms selects `labels`; True for
    set-based selectors (`in (...)`), which this does not evaluate."""
    if "(" in selector:
        return True
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def arg_value(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value of the last `flag VALUE` or `flag=VALUE` in `args` (argparse: the last
    wins), or None."""
    found = _arg(args, flag)
    return found[1] if found else None


def _arg(args: list[str] | tuple[str, ...], flag: str) -> tuple[int, str] | None:
    """(index of the flag, its value) of the last `flag VALUE` or `flag=VALUE` in `args`."""
    found = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = i, args[i + 1]
        elif arg.startswith(flag + "="):
            found = i, arg[len(flag) + 1:]
    return found
