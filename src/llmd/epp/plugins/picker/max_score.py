"""`max-score-picker`: the highest total score; ties broken at random (as llm-d's shuffle)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.datastore import Endpoint
from llmd.epp.plugins.picker._params import PickerBase
from llmd.epp.request import InferenceRequest

__all__ = ["MaxScorePicker"]


class MaxScorePicker(PickerBase):
    type: ClassVar[str] = "max-score-picker"

    def pick(
        self, request: InferenceRequest, scored: Sequence[tuple[Endpoint, float]]
    ) -> tuple[Endpoint, ...]:
        n = self.params.max_num_of_endpoints
        if n == 1 and scored:
            best = max(s for _, s in scored)
            top = [ep for ep, s in scored if s == best]
            return (top[0] if len(top) == 1 else self.rng.choice(top),)
        items = list(scored)
        self.rng.shuffle(items)
        items.sort(key=lambda item: item[1], reverse=True)
        return tuple(ep for ep, _ in items[:n])
