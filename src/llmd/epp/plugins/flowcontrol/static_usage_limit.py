"""`static-usage-limit-policy` (llm-d's default): one fixed saturation ceiling for every band
(`threshold` 1.0: a band dispatches while the pool is not saturated)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys

__all__ = ["StaticUsageLimitPolicy"]


class StaticUsageLimitPolicy:
    type: ClassVar[str] = "static-usage-limit-policy"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        threshold: float = Field(default=1.0, gt=0, description="pool saturation up to "
                                 "which every band dispatches")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def ceiling(self, priority: int, saturation: float) -> float:
        return self.params.threshold
