"""`disagg-headers-handler` (and its older name `prefill-header-handler`): accepted so the
P/D configs that still declare it load; it adds nothing.

In llm-d it was the PreRequest plugin that set `x-prefiller-host-port` from the prefill
profile's pick; llm-d v1 folded that into `disagg-profile-handler`, and llmd's
`disagg-profile-handler` has always set the header itself. The loader warns that the type is
deprecated in favour of `disagg-profile-handler`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import PoolSnapshot
from llmd.epp.plugins.base import SchedulingResult
from llmd.epp.request import InferenceRequest

__all__ = ["DisaggHeadersHandler", "PrefillHeaderHandler"]


class DisaggHeadersHandler:
    type: ClassVar[str] = "disagg-headers-handler"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        prefill_profile: str = Field(default="prefill", min_length=1,
                                     description="accepted for llm-d (no effect)")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def pre_request(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        return None  # disagg-profile-handler already set the headers with the decision


class PrefillHeaderHandler(DisaggHeadersHandler):
    type: ClassVar[str] = "prefill-header-handler"
