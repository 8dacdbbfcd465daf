"""What every picker shares: `maxNumOfEndpoints` and an injectable random source."""

from __future__ import annotations

import random
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys


class PickerParams(LlmdModel):
    max_num_of_endpoints: int = Field(default=1, gt=0, description="targets returned, best first")


class PickerBase:
    """Pickers take `rng` so tests can seed tie-breaks and sampling."""

    Params = PickerParams
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    def __init__(self, name: str, params: PickerParams, rng: random.Random | None = None) -> None:
        self.name, self.params = name, params
        self.rng = rng or random.Random()
