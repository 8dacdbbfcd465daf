"""`random-picker`: uniformly random targets, ignoring scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.datastore import Endpoint
from llmd.epp.plugins.picker._params import PickerBase
from llmd.epp.request import InferenceRequest

__all__ = ["RandomPicker"]


class RandomPicker(PickerBase):
    type: ClassVar[str] = "random-picker"

    def pick(
        self, request: InferenceRequest, scored: Sequence[tuple[Endpoint, float]]
    ) -> tuple[Endpoint, ...]:
        n = min(self.params.max_num_of_endpoints, len(scored))
        return tuple(ep for ep, _ in self.rng.sample(list(scored), n))
