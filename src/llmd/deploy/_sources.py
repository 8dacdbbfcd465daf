"""Values sources as Helm combines them: `-f` files deep-merged in order, then `--set` paths.

Maps merge key by key; lists and scalars replace; a later `null` removes an earlier value (the
models then see the key as unset). `--set` follows Helm's strvals: `a.b=c`, `a.b[0].c=d`,
several comma-separated, `\\.` for a literal dot, `{x,y}` for a list, and `true`/`false`/`null`
and integers typed.

`load_sources()` also remembers which source set each value (`Sources.blame`), so a problem
caused by `--set decode.replicas=true` names that argument and one caused by a file names the
file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmd.errors import ConfigError

__all__ = ["Loc", "Sources", "deep_merge", "load_sources", "load_values_sources", "parse_loc",
           "parse_set", "render_tpl"]

Loc = tuple[str | int, ...]

_INDEX = re.compile(r"^(?P<key>.*?)\[(?P<index>\d+)\]$")
_TPL = re.compile(r"\{\{-?\s*(?P<expr>[^{}]*?)\s*-?\}\}")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_LOC_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, Helm style."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Sources:
    """The merged values tree and, per value, the source that set it last: a file's path or
    `--set EXPR`. Lists are values as a whole unless a `--set` indexed into one."""

    tree: dict[str, Any]
    origins: dict[Loc, str] = field(default_factory=dict)
    fallback: str = "values"
    """Named when nothing in the tree says where a problem came from."""

    def blame(self, loc: Loc, mentioned: Iterable[Loc] = ()) -> str:
        """The sources behind a problem at `loc` that also names the paths `mentioned`: the
        setter of `loc` (or of the list it is in) and of each mentioned path; when none of
        them was set by anyone, the sources that set anything under `loc`'s nearest parent."""
        labels: list[str] = []
        for where in (loc, *mentioned):
            label = self._setter(where)
            if label is not None and label not in labels:
                labels.append(label)
        for n in range(len(loc), -1, -1):
            if labels:
                break
            for path, label in self.origins.items():
                if path[:n] == loc[:n] and label not in labels:
                    labels.append(label)
        return ", ".join(labels) or self.fallback

    def _setter(self, loc: Loc) -> str | None:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.origins:
                return self.origins[loc[:n]]
        return None


def load_values_sources(files: Sequence[Path | str], sets: Sequence[str] = ()) -> dict[str, Any]:
    """Merge the files in order, then apply each `--set` expression."""
    return load_sources(files, sets).tree


def load_sources(files: Sequence[Path | str], sets: Sequence[str] = ()) -> Sources:
    """`load_values_sources` that also records where each value came from. Every unreadable
    file and bad `--set` is reported at once, in one ConfigError."""
    tree: dict[str, Any] = {}
    origins: dict[Loc, str] = {}
    problems: list[str] = []
    for file in files:
        try:
            data = _load_file(Path(file))
        except ConfigError as exc:
            problems += exc.problems
            continue
        tree = deep_merge(tree, data)
        _record(origins, (), data, str(file))
    for expr in sets:
        try:
            for key, value in _split_set(expr):
                _assign(tree, key, value, expr)
                _record(origins, tuple(_keys(key)), value, f"--set {expr}")
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    for loc in [loc for loc in origins if not _is_leaf(tree, loc)]:
        del origins[loc]  # replaced by a map, or removed
    return Sources(tree, origins, ", ".join(str(f) for f in files) or "values")


def _record(origins: dict[Loc, str], loc: Loc, value: Any, label: str) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _record(origins, (*loc, key), child, label)
        return
    for path in [p for p in origins if p[:len(loc)] == loc]:
        del origins[path]  # a later source replaced the value and everything under it
    origins[loc] = label


def _is_leaf(tree: Any, loc: Loc) -> bool:
    node = tree
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            node = node[key]
        elif isinstance(key, str) and isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return False
    return not isinstance(node, dict) or not node


def parse_loc(path: str) -> Loc:
    """`decode.containers[0].image` → `("decode", "containers", 0, "image")`."""
    return tuple(int(m[1]) if m[1] is not None else m[2] for m in _LOC_PART.finditer(path))


def _load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: <root>: expected a mapping of values, got {kind}")
    return data


def parse_set(expr: str) -> list[tuple[str, Any]]:
    """`a.b=1,c=x` → `[("a.b", 1), ("c", "x")]`."""
    return _split_set(expr)


def _split_set(expr: str) -> list[tuple[str, Any]]:
    parts, depth, current = [], 0, ""
    for i, ch in enumerate(expr):
        escaped = i > 0 and expr[i - 1] == "\\"
        if ch == "{" and not escaped:
            depth += 1
        elif ch == "}" and not escaped:
            depth -= 1
        if ch == "," and depth == 0 and not escaped:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    out = []
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {expr}: expected key=value, got {part!r}")
        out.append((key, _typed(raw.replace("\\,", ","))))
    return out


def _typed(raw: str) -> Any:
    if raw.startswith("{") and raw.endswith("}"):
        inner = raw[1:-1]
        return [_typed(x) for x in inner.split(",")] if inner else []
    if raw in ("true", "false"):
        return raw == "true"
    if raw == "null":
        return None
    if _INT.match(raw):
        return int(raw)
    return raw


def _keys(path: str) -> list[str | int]:
    keys: list[str | int] = []
    for part in re.split(r"(?<!\\)\.", path):
        part = part.replace("\\.", ".")
        indexes: list[int] = []
        while (m := _INDEX.match(part)) is not None:
            indexes.insert(0, int(m["index"]))
            part = m["key"]
        keys.append(part)
        keys.extend(indexes)
    return keys


def _assign(tree: dict[str, Any], path: str, value: Any, expr: str) -> None:
    keys = _keys(path)
    node: Any = tree
    for key, nxt in zip(keys, keys[1:], strict=False):
        child: Any = [] if isinstance(nxt, int) else {}
        node = _child(node, key, child, expr)
    last = keys[-1]
    if isinstance(last, int):
        if not isinstance(node, list):
            raise ConfigError(f"--set {expr}: {path} indexes something that is not a list")
        while len(node) <= last:
            node.append(None)
        node[last] = value
    elif not isinstance(node, dict):
        raise ConfigError(f"--set {expr}: {path} sets a key inside something that is not a map")
    else:
        node[last] = value


def _child(node: Any, key: str | int, empty: Any, expr: str) -> Any:
    if isinstance(key, int):
        if not isinstance(node, list):
            raise ConfigError(f"--set {expr}: index [{key}] of something that is not a list")
        while len(node) <= key:
            node.append(None)
        if not isinstance(node[key], dict | list):
            node[key] = empty
        return node[key]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {expr}: key {key!r} inside something that is not a map")
    if not isinstance(node.get(key), dict | list):
        node[key] = empty
    elif isinstance(node[key], dict):
        node[key] = dict(node[key])  # never write into a dict shared with a loaded file
    return node[key]


def render_tpl(text: str, values: dict[str, Any], release: dict[str, str], where: str) -> str:
    """Helm's `tpl` for the references values files use: `{{ .Values.a.b }}` and
    `{{ .Release.Name }}`/`{{ .Release.Namespace }}`. Anything else is an error naming `where`."""

    def replace(match: re.Match[str]) -> str:
        expr = match["expr"]
        if expr.startswith(".Values."):
            node: Any = values
            for key in expr[len(".Values."):].split("."):
                if not isinstance(node, dict) or key not in node:
                    raise ConfigError(f"{where}: {match[0]!r} refers to a value that is not set")
                node = node[key]
            return str(node)
        if expr.startswith(".Release.") and expr[len(".Release."):] in release:
            return release[expr[len(".Release."):]]
        raise ConfigError(
            f"{where}: template {match[0]!r} is not supported (only .Values.* and "
            ".Release.Name/.Release.Namespace references)")

    return _TPL.sub(replace, text) if "{{" in text else text
