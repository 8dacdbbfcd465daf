"""`edf-ordering-policy`: earliest deadline (enqueue time + the request's TTL) first, arrival
order breaking ties; a request without a TTL sorts after every request with one (as llm-d)."""

from __future__ import annotations

from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.flowcontrol._policy import QueueItem

__all__ = ["EdfOrderingPolicy"]


class EdfOrderingPolicy:
    type: ClassVar[str] = "edf-ordering-policy"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def sort_key(self, item: QueueItem) -> tuple[float, ...]:
        return (item.deadline, item.enqueued_at, item.seq)  # inf when there is no TTL
