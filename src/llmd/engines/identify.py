"""Recognising a running server: which engine it is, what model it serves, its P/D role.

`llmd up --endpoint URL` fronts servers it did not start. The caller GETs `PROBE_ROUTES` from
the server (the OpenAI model list, `/metrics` and every adapter's `identity_routes`) and hands
the answers here as plain data; each adapter says what in them is its own
(`EngineAdapter.recognize`: `/v1/models` `owned_by`, its metric prefix, routes only it serves)
and what the server reports of its P/D setup (`EngineAdapter.reported_pd`). Nothing here does
I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llmd.engines._common import MODELS_ROUTE
from llmd.engines.base import EngineAdapter, EngineName, Role, ServerAnswers
from llmd.errors import EngineError

__all__ = ["MODELS_ROUTE", "ServerIdentity", "identify_server", "metric_families",
           "probe_routes", "served_models"]


def probe_routes(adapters: Sequence[EngineAdapter]) -> tuple[str, ...]:
    """Every JSON route to GET (the model list first, then each adapter's own), once each."""
    routes = [MODELS_ROUTE, *(r for a in adapters for r in a.identity_routes)]
    return tuple(dict.fromkeys(routes))


def metric_families(text: str) -> frozenset[str]:
    """The metric names on a Prometheus text page (from `# TYPE` lines and samples)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split(" ", 3)
            if len(parts) >= 3:
                names.add(parts[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return frozenset(names)


def served_models(answers: ServerAnswers) -> tuple[str, ...]:
    """The base models `/v1/models` lists (LoRA adapters, which name a `parent`, left out)."""
    body = answers.json.get(MODELS_ROUTE)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return ()
    return tuple(card["id"] for card in data if isinstance(card, dict)
                 and isinstance(card.get("id"), str) and not card.get("parent"))


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What llmd makes of a running server: its engine (with the evidence, or "given"), the
    base models it lists, and the P/D role and side port it reports (None: not reported)."""

    engine: EngineName
    evidence: tuple[str, ...]
    models: tuple[str, ...]
    role: Role | None = None
    side_port: int | None = None


def identify_server(where: str, answers: ServerAnswers, adapters: Mapping[str, EngineAdapter],
                    engine: str | None = None) -> ServerIdentity:
    """The engine of the server at `where` (the URL, for messages) from its `answers`; a given
    `engine` wins over what the answers say. `EngineError` when no adapter, or more than one,
    recognises the server."""
    evidence: tuple[str, ...] = ("given",)
    if engine is not None:
        adapter = adapters[engine]
    else:
        found = {name: a.recognize(answers) for name, a in adapters.items()}
        matched = {name: why for name, why in found.items() if why}
        if len(matched) != 1:
            seen = "; ".join(f"{name}: {', '.join(why)}" for name, why in matched.items())
            raise EngineError(
                f"{where}: cannot tell which engine this is ("
                + (f"it looks like several: {seen}" if matched else
                   "no /v1/models owned_by, metric prefix or engine route of "
                   + " or ".join(adapters) + " answered")
                + f"); say it: {where},engine={'|'.join(adapters)}")
        name, evidence = next(iter(matched.items()))
        adapter = adapters[name]
    pd = adapter.reported_pd(answers)
    return ServerIdentity(adapter.name, evidence, served_models(answers), pd.role, pd.side_port)
