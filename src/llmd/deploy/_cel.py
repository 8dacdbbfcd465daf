"""Cross-field rules written once, in CEL: the CRD carries them as `x-kubernetes-validations`
(so `kubectl apply` rejects a bad object before any controller sees it) and llmd evaluates the
same expressions on the same data (so `llmd render`, `llmd convert` and the operator behind an
API server that skipped them, or an older CRD, reject exactly what the API server would).

A model lists its rules in a `cel_rules` class variable; `check_rules` walks a model's data
and evaluates every rule of every nested model on its own sub-object as `self`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Union

import cel
from pydantic import BaseModel

__all__ = ["CelRule", "check_rules", "nested_models"]


@dataclass(frozen=True, slots=True)
class CelRule:
    """One `x-kubernetes-validations` entry: `rule` must hold for `self`, else `message`;
    `field_path` (`.prefill`) is where the API server reports it."""

    rule: str
    message: str
    field_path: str | None = None

    def holds(self, data: Any) -> bool:
        return _program(self.rule).execute({"self": data}) is True

    def schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


@cache
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _rules(model: type[BaseModel]) -> tuple[CelRule, ...]:
    return tuple(getattr(model, "cel_rules", ()))


def nested_models(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models inside a field's annotation, each with whether it is a list's items."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from nested_models(typing.get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from nested_models(arg)
    elif origin is list:
        for model, _ in nested_models(typing.get_args(annotation)[0]):
            yield model, True
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False


def check_rules(model: type[BaseModel], data: Any, path: str) -> list[str]:
    """`path.field: message` for every rule that fails anywhere in `data` (a model's aliased,
    JSON-like data as the user wrote it)."""
    if not isinstance(data, dict):
        return []
    problems = []
    for rule in _rules(model):
        if not rule.holds(data):
            problems.append(f"{path}{rule.field_path or ''}: {rule.message}")
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        for sub, is_list in nested_models(field.annotation):
            value = data[key]
            if is_list and isinstance(value, list):
                for i, item in enumerate(value):
                    problems += check_rules(sub, item, f"{path}.{key}[{i}]")
            elif not is_list:
                problems += check_rules(sub, value, f"{path}.{key}")
    return problems
