"""`prefill-filter`: endpoints labelled for prefill; unlabelled endpoints do not pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.filter._roles import PREFILL_ROLES, role_of
from llmd.epp.request import InferenceRequest

__all__ = ["PrefillFilter"]


class PrefillFilter:
    type: ClassVar[str] = "prefill-filter"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        return [ep for ep in pool.candidates if role_of(ep) in PREFILL_ROLES]
