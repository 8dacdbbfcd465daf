"""The base of every llmd config model, and ValidationError → ConfigError translation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from llmd.errors import ConfigError

__all__ = ["LlmdModel", "PositiveDuration", "config_error", "did_you_mean", "format_loc",
           "parse_duration_s"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0}


class LlmdModel(BaseModel):
    """Strict, frozen, camelCase-aliased: a YAML typo is an error, not an ignored key."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


def parse_duration_s(value: str | float) -> float:
    """A Go-style duration (`200ms`, `2s`, `1m`), as llm-d's configs write them, or a number of
    seconds → seconds; ValueError naming the accepted forms."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a duration like 200ms, 2s or 1m")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be > 0")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(parse_duration_s), AfterValidator(_positive)]
"""Seconds > 0, written as a number of seconds or a Go-style duration (`200ms`, `2s`, `1m`)."""


def format_loc(loc: Sequence[int | str]) -> str:
    """`("plugins", 1, "type")` → `plugins[1].type`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    """A ` (did you mean 'x'?)` suffix when a close match exists, else ''."""
    match = difflib.get_close_matches(value, list(allowed), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def config_error(
    exc: ValidationError, source: str, prefix: Sequence[int | str] = ()
) -> ConfigError:
    """One `ConfigError` line per pydantic problem: `source: path: message`."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = format_loc([*prefix, *_clean_loc(err["loc"])])
        lines.append(f"{source}: {loc}: {_message(err)}")
    return ConfigError(lines)


def _clean_loc(loc: Sequence[Any]) -> list[int | str]:
    # pydantic puts validator/union tags (e.g. "function-after[...]") in loc; users never
    # wrote them.
    return [p for p in loc if isinstance(p, int) or ("[" not in p and "-" not in p[:1])]


def _message(err: Any) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected', '')}"
    if kind == "enum":
        return f"{value!r} is not one of {ctx.get('expected', '')}"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{msg} (got {value!r})" if not isinstance(value, dict | list) else msg
