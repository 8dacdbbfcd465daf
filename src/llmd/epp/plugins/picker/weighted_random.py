"""`weighted-random-picker`: random targets with probability proportional to score.

A-Res weighted sampling without replacement (key = u^(1/score), largest keys win), as llm-d.
Zero scores are picked only when nothing scores above zero, then uniformly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.datastore import Endpoint
from llmd.epp.plugins.picker._params import PickerBase
from llmd.epp.request import InferenceRequest

__all__ = ["WeightedRandomPicker"]


class WeightedRandomPicker(PickerBase):
    type: ClassVar[str] = "weighted-random-picker"

    def pick(
        self, request: InferenceRequest, scored: Sequence[tuple[Endpoint, float]]
    ) -> tuple[Endpoint, ...]:
        n = self.params.max_num_of_endpoints
        positive = [(ep, s) for ep, s in scored if s > 0]
        if not positive:
            return tuple(ep for ep, _ in self.rng.sample(list(scored), min(n, len(scored))))
        keyed = [(self.rng.random() ** (1.0 / s), ep) for ep, s in positive]
        keyed.sort(key=lambda item: item[0], reverse=True)
        return tuple(ep for _, ep in keyed[:n])
