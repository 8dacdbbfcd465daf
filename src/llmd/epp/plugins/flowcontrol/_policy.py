"""The flow-control extension points: fairness, ordering and usage-limit policies.

A queued request is a `QueueItem`. Each priority band holds one queue per flow (the request's
`x-llm-d-inference-fairness-id`, or `x-gateway-inference-fairness-id`); the band's
`OrderingPolicy` orders each flow's queue, its `FairnessPolicy` picks the flow to serve next,
and the `UsageLimitPolicy` says up to which pool saturation the band may dispatch. Policies are
pure and synchronous, like scorers: the controller (`llmd.epp.flow_control`) owns all state
except the per-band scratch `state` a fairness policy keeps (a round-robin cursor).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from llmd.epp.plugins.base import Plugin

__all__ = ["FairnessPolicy", "FlowQueueView", "OrderingPolicy", "QueueItem",
           "UsageLimitPolicy"]


@dataclass(eq=False, slots=True)
class QueueItem:
    """One request waiting in flow control. `enqueued_at` is monotonic seconds; `ttl_s` the
    longest it may wait (infinite: no TTL); `seq` breaks ties in arrival order."""

    request_id: str
    flow_id: str
    priority: int
    size_bytes: int
    enqueued_at: float
    ttl_s: float
    seq: int
    queued: bool = field(default=False)
    """True while the item is in a queue (removal is lazy: heaps skip items no longer queued)."""

    @property
    def deadline(self) -> float:
        return self.enqueued_at + self.ttl_s


class FlowQueueView(Protocol):
    """A flow's queue as a fairness policy sees it (never empty when handed to one)."""

    def __len__(self) -> int: ...

    def head(self) -> QueueItem:
        """The item the band's ordering policy would dispatch next from this flow."""
        ...


@runtime_checkable
class OrderingPolicy(Plugin, Protocol):
    def sort_key(self, item: QueueItem) -> tuple[float, ...]:
        """Items with smaller keys dispatch first (pure)."""
        ...


@runtime_checkable
class FairnessPolicy(Plugin, Protocol):
    def pick(self, flows: Mapping[str, FlowQueueView], ordering: OrderingPolicy,
             state: MutableMapping[str, str]) -> str:
        """The id of the flow to serve next, among `flows` (non-empty, each flow non-empty).
        `state` is this band's scratch space, kept between calls."""
        ...


@runtime_checkable
class UsageLimitPolicy(Plugin, Protocol):
    def ceiling(self, priority: int, saturation: float) -> float:
        """The pool saturation up to which the band of `priority` may dispatch (it dispatches
        while saturation < ceiling)."""
        ...
