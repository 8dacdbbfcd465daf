"""P/D pairs that can never work: decode and prefill on different engines, or a routing-sidecar
connector that speaks another engine's protocol than the decode engine behind it.

The engine of each role and why (`EngineSource`) come from the plan; which connector speaks
which engine's protocol comes from the adapters (`sidecar_connector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmd.config import did_you_mean
from llmd.deploy.values import Values
from llmd.engines import ADAPTERS, EngineName

if TYPE_CHECKING:
    from llmd.deploy._plan import RolePlan

__all__ = ["GO_SIDECAR_IMAGES", "EngineSource", "check_pd", "go_sidecar"]

GO_SIDECAR_IMAGES = ("llm-d-routing-sidecar", "llm-d-router-disagg-sidecar")
_CONNECTOR_FLAGS = ("--kv-connector", "--connector")  # llmd sidecar's, llm-d's Go sidecar's


@dataclass(frozen=True, slots=True)
class EngineSource:
    """The values path that decides a role's engine, and what it says there."""

    path: str
    shown: str
    """e.g. `'sglangServe'`, `'imageDefault' (no engine: set)`, `the command`."""


def go_sidecar(values: Values) -> bool:
    """Whether `routing.proxy.image` is llm-d's Go sidecar (which gets the chart's flags)."""
    return any(image in values.routing.proxy.image for image in GO_SIDECAR_IMAGES)


def check_pd(plans: list[RolePlan], values: Values, errors: list[str]) -> None:
    by_name = {p.name: p for p in plans}
    decode, prefill = by_name.get("decode"), by_name.get("prefill")
    if decode is not None and prefill is not None and decode.pd \
            and decode.engine_source is not None and prefill.engine_source is not None \
            and decode.engine != prefill.engine:
        p, d = prefill.engine_source, decode.engine_source
        errors.append(
            f"{p.path}: {p.shown} runs {prefill.engine}, but {d.path} {d.shown} runs "
            f"{decode.engine}: decode and prefill must run the same engine (prefill hands the "
            "KV cache to decode over the engine's own protocol)")
    if decode is not None and values.routing.proxy.enabled:
        for path, connector in _explicit_connectors(values):
            _check_connector(path, connector, decode, values, errors)


def _explicit_connectors(values: Values) -> list[tuple[str, str]]:
    proxy = values.routing.proxy
    found = [] if proxy.connector is None else [("routing.proxy.connector", proxy.connector)]
    args = proxy.extra_args
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag in _CONNECTOR_FLAGS:
            if eq:
                found.append((f"routing.proxy.extraArgs[{i}]", value))
            elif i + 1 < len(args):
                found.append((f"routing.proxy.extraArgs[{i + 1}]", args[i + 1]))
    return found


def _check_connector(path: str, connector: str, decode: RolePlan, values: Values,
                     errors: list[str]) -> None:
    speaks: dict[str, EngineName] = {a.sidecar_connector: a.name for a in ADAPTERS.values()}
    own = ADAPTERS[decode.engine].sidecar_connector
    source = decode.engine_source
    if connector in speaks and connector != own and source is not None:
        errors.append(
            f"{path}: {connector!r} speaks {speaks[connector]}'s P/D protocol, but decode runs "
            f"{decode.engine} ({source.path} {source.shown}): use {own!r}, or set no "
            "connector (the decode engine's own is the default)")
    elif connector not in speaks and not go_sidecar(values):
        # llm-d's Go sidecar knows more connectors (lmcache, ...); `llmd sidecar` these.
        errors.append(
            f"{path}: {connector!r} is not a connector of `llmd sidecar` (one of "
            f"{', '.join(speaks)}){did_you_mean(connector, list(speaks))}")
