"""`single-profile-handler`: run the one profile; its result is the decision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams, ProfileResult, SchedulingResult
from llmd.epp.request import InferenceRequest

if TYPE_CHECKING:
    from llmd.epp.scheduling import SchedulerProfile

__all__ = ["SingleProfileHandler"]


class SingleProfileHandler:
    """Runs exactly one profile (the loader rejects configs with more than one)."""

    type: ClassVar[str] = "single-profile-handler"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    max_profiles: ClassVar[int] = 1
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def pick(
        self,
        request: InferenceRequest,
        profiles: Mapping[str, SchedulerProfile],
        results: Mapping[str, ProfileResult | None],
    ) -> Mapping[str, SchedulerProfile]:
        return {} if results else profiles

    def process_results(
        self, request: InferenceRequest, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult | None:
        for name, result in results.items():
            if result is not None:
                return SchedulingResult({name: result}, primary=name)
        return None
