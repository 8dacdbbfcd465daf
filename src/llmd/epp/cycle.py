"""Per-request data that plugins exchange: typed keys (`DataKey[T]`) in a `CycleState`.

llm-d's scheduling cycle state, typed: a producer puts a value under a key it declares in
`produces`, a consumer reads the keys it declares in `consumes`, and neither knows the other's
class. The loader checks that every consumed key has a producer (see `llmd.epp.config`). One
`CycleState` lives on each `InferenceRequest` and is dropped with it.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["CycleState", "DataKey", "DataKeys", "MissingDataError"]

T = TypeVar("T")


class DataKey(Generic[T]):
    """A named slot of per-request data holding values of `type_` (checked on `put`).

    Keys compare by identity: define each once, at module level, where producers and consumers
    both import it (a neutral module, never a plugin's own). `name` is what messages and
    `llmd epp --list-plugins` show; it should be unique.
    """

    __slots__ = ("name", "type")

    def __init__(self, name: str, type_: type[T]) -> None:
        self.name = name
        self.type = type_

    def __repr__(self) -> str:
        return f"DataKey({self.name!r}, {self.type.__name__})"


DataKeys = tuple[DataKey[Any], ...]
"""What a plugin class declares in `produces` and `consumes`."""


class MissingDataError(LookupError):
    """A consumer required data that no producer put this cycle (a bug: the loader checks
    that every consumed key has a producer, so a producer skipped its key)."""

    def __init__(self, key: DataKey[Any], reader: str) -> None:
        super().__init__(key, reader)
        self.key, self.reader = key, reader

    def __str__(self) -> str:
        return (f"{self.reader} reads {self.key.name}, but no plugin put it for this request "
                "(its producer did not run or skipped it)")


class CycleState:
    """The data producers computed for one request; filled before filtering (data producers)
    or during scheduling (a profile handler), read by filters, scorers, pickers, deciders and
    PreRequest hooks."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[DataKey[Any], object] = {}

    def put(self, key: DataKey[T], value: T) -> None:
        """Store `value` under `key` (replacing any). TypeError if it is not a `key.type`."""
        if not isinstance(value, key.type):
            raise TypeError(f"{key.name} holds {key.type.__name__}, "
                            f"not {type(value).__name__}")
        self._values[key] = value

    def get(self, key: DataKey[T]) -> T | None:
        """The value under `key`, or None when nothing was put."""
        value = self._values.get(key)
        return value if isinstance(value, key.type) else None

    def require(self, key: DataKey[T], reader: str) -> T:
        """The value under `key`; `MissingDataError` naming `reader` when there is none."""
        value = self._values.get(key)
        if not isinstance(value, key.type):
            raise MissingDataError(key, reader)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"CycleState({', '.join(k.name for k in self._values)})"
