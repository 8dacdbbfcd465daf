"""`label-selector-filter`: a Kubernetes label selector over endpoint labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.request import InferenceRequest

__all__ = ["LabelSelectorFilter"]


class MatchExpression(LlmdModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> MatchExpression:
        needs = self.operator in ("In", "NotIn")
        if needs and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if not needs and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "In" else not present


class LabelSelectorFilter:
    """Keep endpoints whose labels match every `matchLabels` entry and every expression."""

    type: ClassVar[str] = "label-selector-filter"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        match_labels: dict[str, str] = Field(default_factory=dict)
        match_expressions: tuple[MatchExpression, ...] = ()

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        want = self.params.match_labels.items()
        exprs = self.params.match_expressions
        return [
            ep for ep in pool.candidates
            if all(ep.labels.get(k) == v for k, v in want)
            and all(e.matches(ep.labels) for e in exprs)
        ]
