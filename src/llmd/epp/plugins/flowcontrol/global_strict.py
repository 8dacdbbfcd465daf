"""`global-strict-fairness-policy` (llm-d's default): ignore flow boundaries and serve the flow
whose head item the band's ordering policy ranks first (with FCFS: global arrival order)."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams
from llmd.epp.plugins.flowcontrol._policy import FlowQueueView, OrderingPolicy

__all__ = ["GlobalStrictFairnessPolicy"]


class GlobalStrictFairnessPolicy:
    type: ClassVar[str] = "global-strict-fairness-policy"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def pick(self, flows: Mapping[str, FlowQueueView], ordering: OrderingPolicy,
             state: MutableMapping[str, str]) -> str:
        return min(flows, key=lambda flow_id: ordering.sort_key(flows[flow_id].head()))
