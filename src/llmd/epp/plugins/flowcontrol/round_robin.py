"""`round-robin-fairness-policy`: serve the band's flows in turn, one request each, in sorted
flow-id order from the one after the flow served last (llm-d's cursor), so no flow can starve
another however many requests it queues."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, MutableMapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.flowcontrol._policy import FlowQueueView, OrderingPolicy

__all__ = ["RoundRobinFairnessPolicy"]

_LAST = "last"


class RoundRobinFairnessPolicy:
    type: ClassVar[str] = "round-robin-fairness-policy"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def pick(self, flows: Mapping[str, FlowQueueView], ordering: OrderingPolicy,
             state: MutableMapping[str, str]) -> str:
        keys = sorted(flows)
        last = state.get(_LAST)
        # The first flow after the last one served (which may have left the band meanwhile).
        i = 0 if last is None else bisect.bisect_right(keys, last) % len(keys)
        state[_LAST] = keys[i]
        return keys[i]
