"""Values sources as Helm combines them: `-f` files deep-merged in order, then `--set` paths.

Maps merge key by key; lists and scalars replace; a later `null` removes an earlier value (the
models then see the key as unset). `--set` follows Helm's strvals: `a.b=c`, `a.b[0].c=d`,
several comma-separated, `\\.` for a literal dot, `{x,y}` for a list, and `true`/`false`/`null`
and integers typed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llmd.errors import ConfigError

__all__ = ["deep_merge", "load_values_sources", "parse_set", "render_tpl"]

_INDEX = re.compile(r"^(?P<key>.*?)\[(?P<index>\d+)\]$")
_TPL = re.compile(r"\{\{-?\s*(?P<expr>[^{}]*?)\s*-?\}\}")
_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, Helm style."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_values_sources(files: Sequence[Path | str], sets: Sequence[str] = ()) -> dict[str, Any]:
    """Merge the files in order, then apply each `--set` expression."""
    tree: dict[str, Any] = {}
    for file in files:
        tree = deep_merge(tree, _load_file(Path(file)))
    for expr in sets:
        for key, value in _split_set(expr):
            _assign(tree, key, value, expr)
    return tree


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
