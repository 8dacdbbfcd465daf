"""Every problem of a render at once, each blamed on its source, with "did you mean" for typos.

A render has two stages: the schema (`Values`, one pydantic pass) and the checks that need the
whole plan (engines, ports, P/D, routing). So that one run reports the problems of both, values
the schema rejects are removed (the key falls back to its default) and the tree is validated
again; the checks then run on that tree, and a check's problem that names a removed value, or
the list item it sat in, is dropped: it would be about a default the user never chose.

Each line is `SOURCE: PATH: MESSAGE`, SOURCE being the file or `--set` argument that set the
value (`Sources.blame`). A required key that is missing beside an unknown key close to it
(`imgae:`) is reported at the unknown key, with the suggestion.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from llmd.config import config_error, did_you_mean, format_loc
from llmd.deploy._sources import Loc, Sources, parse_loc
from llmd.deploy._types import TYPE_ERROR
from llmd.deploy.values import Values
from llmd.errors import ConfigError

__all__ = ["Problems", "Unknown", "mentions", "report", "split", "unknown_entries", "validate"]

_REPAIR_ROUNDS = 3
_PATH = re.compile(r"[A-Za-z][\w/-]*(?:\[\d+\])*(?:\.[A-Za-z][\w/-]*(?:\[\d+\])*)*")
# A path named inside a message: at least two parts (`routing.servicePort`, `decode[0]`).
_MENTION = re.compile(r"(?<![\w./\[-])[A-Za-z][\w/-]*(?:\[\d+\])*(?:(?:\.[A-Za-z][\w/-]*|\[\d+\])"
                      r"(?:\[\d+\])*)+(?![\w/-])")
_REQUIRED = ("required", "field required")


class Problems:
    """The problems (and warnings) found so far, in order, without repeats (a
    LeaderWorkerSet's leader and worker pods fail the same way)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def add(self, *lines: str) -> None:
        for line in lines:
            if line not in self.lines:
                self.lines.append(line)

    def warn(self, line: str) -> None:
        if line not in self.warnings:
            self.warnings.append(line)

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record a ConfigError raised inside and carry on with the next independent part."""
        try:
            yield
        except ConfigError as exc:
            self.add(*exc.problems)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A key the schema does not know at `loc`, and the known key it is close to, if any."""

    loc: Loc
    key: str
    suggestion: str | None

    @property
    def line(self) -> str:
        hint = f" (did you mean '{self.suggestion}'?)" if self.suggestion else ""
        return f"{format_loc([*self.loc, self.key])}: unknown key, ignored{hint}"


def validate(tree: dict[str, Any]) -> tuple[Values | None, list[str], list[str]]:
    """(values or None, the schema's problems as `path: message`, the paths removed to get
    the values: checks that mention them are not reported)."""
    problems: list[str] = []
    removed: list[str] = []
    tree = copy.deepcopy(tree)
    for _ in range(_REPAIR_ROUNDS):
        try:
            values = Values.model_validate(tree)
        except ValidationError as exc:
            lines = _schema_lines(exc)
            problems += [line for line in lines if line not in problems]
            locs = dict.fromkeys(_clean(err["loc"]) for err in exc.errors())  # once each
            scopes = [_remove(tree, loc) for loc in locs]
            if None in scopes:
                return None, problems, removed
            removed += [format_loc(s) for s in scopes if s is not None]
            continue
        return values, problems, removed
    return None, problems, removed


def _schema_lines(exc: ValidationError) -> list[str]:
    """`path: message` per error; enum choices listed plainly (`'x' is not one of a, b`)."""
    out = []
    for err, line in zip(exc.errors(include_url=False), config_error(exc, "-").problems,
                         strict=True):
        loc = format_loc(_clean(err["loc"]))
        if err["type"] == TYPE_ERROR:
            line = f"{loc}: {err['msg']}"
        elif err["type"] == "literal_error":
            expected = str((err.get("ctx") or {}).get("expected", ""))
            allowed = [a.strip().strip("'") for a in expected.replace(" or ", ", ").split(",")]
            value = err.get("input")
            line = (f"{loc}: {value!r} is not one of {', '.join(allowed)}"
                    f"{did_you_mean(str(value), allowed)}")
        else:
            line = line.removeprefix("-: ")
        out.append(line)
    return out


def _clean(loc: Sequence[Any]) -> Loc:
    # pydantic puts validator/union tags (e.g. "function-after[...]") in loc.
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and "-" not in p[:1]))


def _remove(tree: dict[str, Any], loc: Loc) -> Loc | None:
    """Delete the deepest key on `loc` that exists in a map; return the scope of what was
    lost: that key, or the list item it sat in. None: nothing on `loc` can be removed."""
    for n in range(len(loc), 0, -1):
        parent: Any = tree
        for key in loc[:n - 1]:
            parent = _child(parent, key)
        key = loc[n - 1]
        if isinstance(parent, dict) and isinstance(key, str) and key in parent:
            del parent[key]
            scope = loc[:n]
            return scope[:-1] if len(scope) > 1 and isinstance(scope[-2], int) else scope
    return None


def _child(node: Any, key: str | int) -> Any:
    if isinstance(key, int) and isinstance(node, list) and key < len(node):
        return node[key]
    if isinstance(key, str) and isinstance(node, dict):
        return node.get(key)
    return None


def mentions(line: str, paths: Sequence[str]) -> bool:
    """Whether `line` names one of `paths` (or something under it)."""
    return any(re.search(rf"(?<![\w.\[/-]){re.escape(p)}(?![\w/-])", line) for p in paths)


def unknown_entries(model: type[BaseModel], data: Any, loc: Loc = ()) -> list[Unknown]:
    """Every key of the raw values `data` that the chart would silently ignore, with a close
    known key if there is one. Read from the tree, not the validated model, so keys inside
    values the schema rejected are found too."""
    if not isinstance(data, dict):
        return []
    fields = {info.alias or name: (name, info) for name, info in model.model_fields.items()}
    known = [*fields, *(name for name, _ in fields.values())]
    out = []
    for key, value in data.items():
        if not isinstance(key, str) or value is None:
            continue
        if key not in known:
            hint = did_you_mean(key, list(fields))
            out.append(Unknown(loc, key, hint.split("'")[1] if hint else None))
            continue
        info = fields[key][1] if key in fields else model.model_fields[key]
        sub = _model_of(info.annotation)
        if sub is not None and isinstance(value, dict):
            out += unknown_entries(sub, value, (*loc, key))
        elif sub is not None and isinstance(value, list):
            for i, item in enumerate(value):
                out += unknown_entries(sub, item, (*loc, key, i))
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, alone, optional or in a list."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        if typing.get_origin(arg) is list:
            return _model_of(typing.get_args(arg)[0])
    return None


def split(line: str) -> tuple[Loc | None, str]:
    """`path: message` → (loc, message); (None, line) when it does not start with a path."""
    path, sep, message = line.partition(": ")
    if sep and _PATH.fullmatch(path):
        return parse_loc(path), message
    return None, line


def report(lines: Sequence[str], sources: Sources, unknown: Sequence[Unknown]) -> list[str]:
    """Each line blamed on its sources. A missing key with a typo of it beside it is reported
    at the typo; the other typos (unknown keys close to a known one) follow, as they may be
    the cause of the rest."""
    out, used = [], set()
    for line in lines:
        loc, message = split(line)
        if loc is not None and message.startswith(_REQUIRED) and isinstance(loc[-1], str):
            typo = next((u for u in unknown if u.loc == loc[:-1] and u.suggestion == loc[-1]),
                        None)
            if typo is not None:
                used.add(typo)
                line = (f"{format_loc([*typo.loc, typo.key])}: unknown key (did you mean "
                        f"'{typo.suggestion}'?); {typo.suggestion} is "
                        f"{message.removeprefix('field ')}")
                loc = (*typo.loc, typo.key)
        mentioned = [parse_loc(m[0]) for m in _MENTION.finditer(line.partition(": ")[2])]
        out.append(f"{sources.blame(loc or (), mentioned)}: {line}")
    for u in unknown:
        if u.suggestion and u not in used:
            out.append(f"{sources.blame((*u.loc, u.key))}: {u.line}")
    return out
