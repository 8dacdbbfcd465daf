"""`decode-filter`: endpoints that can decode; unlabelled endpoints pass (llm-d semantics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.filter._roles import DECODE_ROLES, role_of
from llmd.epp.request import InferenceRequest

__all__ = ["DecodeFilter"]


class DecodeFilter:
    type: ClassVar[str] = "decode-filter"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        return [ep for ep in pool.candidates if (r := role_of(ep)) is None or r in DECODE_ROLES]
