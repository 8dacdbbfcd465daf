"""`fcfs-ordering-policy`: first come, first served within a flow (llm-d's default)."""

from __future__ import annotations

from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.flowcontrol._policy import QueueItem

__all__ = ["FcfsOrderingPolicy"]


class FcfsOrderingPolicy:
    type: ClassVar[str] = "fcfs-ordering-policy"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def sort_key(self, item: QueueItem) -> tuple[float, ...]:
        return (item.enqueued_at, item.seq)
