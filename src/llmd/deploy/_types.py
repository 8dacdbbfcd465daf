"""Scalar types of the values schema, as strict as the chart's `values.schema.json`.

Helm checks values against the chart's JSON Schema before rendering: an `integer` there takes
a whole number (`2`, also `2.0`) and nothing else, a `boolean` only `true`/`false`. pydantic's
lax mode would turn `replicas: true` into 1, `"2"` into 2 and `enabled: "no"` into False, so
every integer and boolean field of `Values` uses these types instead. Each rejection is one
`llmd_type` error whose message says what is expected and what was given, in YAML terms.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["TYPE_ERROR", "Bool", "Int", "Level", "Quantity", "yaml_repr"]

TYPE_ERROR = "llmd_type"


def yaml_repr(value: Any) -> str:
    """`true`, `1.5`, `'2'` (a string), `[...]`: the value as the user wrote it in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, dict):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _fail(expected: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(TYPE_ERROR, "expected {expected}, got {got}",
                               {"expected": expected, "got": yaml_repr(value)})


def _whole_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("an integer", value)
    if isinstance(value, float):
        if not value.is_integer():
            raise _fail("an integer", value)
        return int(value)
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _fail("true or false", value)
    return value


def _quantity(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail('a number or a quantity string (16, 0.5, "16Gi")', value)
    return value


def _level(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _fail('a level name or number ("debug", 2)', value)
    return value


Int = Annotated[int, BeforeValidator(_whole_number)]
"""JSON Schema `integer`: a whole number; never true/false, a string or a fraction."""
Bool = Annotated[bool, BeforeValidator(_boolean)]
"""JSON Schema `boolean`: true or false; never "true", "yes" or 1."""
Quantity = Annotated[str | int | float, BeforeValidator(_quantity)]
"""A Kubernetes quantity: a number or a string such as `16Gi`; never true/false."""
Level = Annotated[str | int, BeforeValidator(_level)]
"""A log level: a name or a number; never true/false."""
