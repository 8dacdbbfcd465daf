"""Cross-replica syncers: `zmq-mesh-syncer` (llmd's) and llm-d's `local-syncer`.

llm-d ships `local-syncer` (one replica: nothing shared) and `redis-state-store` (a Redis
server in between). llmd's `zmq-mesh-syncer` needs no server: each replica binds a ZeroMQ PUB
socket on `port` and subscribes to every peer's (from `dataLayer.peerDiscovery` and `llmd epp
--peer`); see `llmd.epp.replica_sync` for what travels and when.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel, PositiveDuration
from llmd.epp.cycle import DataKeys
from llmd.epp.plugins.base import NoParams

__all__ = ["LocalSyncer", "ZmqMeshSyncer"]


class ZmqMeshSyncer:
    type: ClassVar[str] = "zmq-mesh-syncer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    shares: ClassVar[bool] = True

    class Params(LlmdModel):
        port: int = Field(default=9005, ge=0, lt=65536, description="the PUB socket peers "
                          "subscribe to (`llmd epp --sync-port` overrides; 0: a free one)")
        peer_expiry: PositiveDuration = Field(
            default=1.0, description="a peer silent this long (seconds or a duration like `1s`) "
            "is gone: its in-flight gauges stop counting")
        catch_up_timeout: PositiveDuration = Field(
            default=5.0, description="how long a starting replica waits for its peers' "
            "snapshots before it reports SERVING anyway")
        max_frame_bytes: int = Field(default=16 << 20, ge=1024, description="a larger frame "
                                     "from a peer is dropped (and counted)")
        count_inflight: bool = Field(
            default=False, description="llmd: add every replica's requests sent since an "
            "endpoint's last scrape to its scraped queue/running counts (the gauges are shared "
            "and exported either way); off by default: it spreads prefix groups (see "
            "docs/benchmarks.md, \"EPP replicas\")")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    @property
    def counts_inflight(self) -> bool:
        return self.params.count_inflight


class LocalSyncer:
    """llm-d's single-replica fallback: in-flight accounting on, nothing leaves the replica."""

    type: ClassVar[str] = "local-syncer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    shares: ClassVar[bool] = False
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    @property
    def counts_inflight(self) -> bool:
        return True  # llm-d's local-syncer: accounting is all it does
