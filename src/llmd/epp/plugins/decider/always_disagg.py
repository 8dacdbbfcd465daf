"""`always-disagg-pd-decider`: every request gets a prefill stage (testing, or pools where
prefill should always run remotely)."""

from __future__ import annotations

from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["AlwaysDisaggPdDecider"]


class AlwaysDisaggPdDecider:
    type: ClassVar[str] = "always-disagg-pd-decider"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def disaggregate(self, request: InferenceRequest, endpoint: Endpoint) -> bool:
        return True
