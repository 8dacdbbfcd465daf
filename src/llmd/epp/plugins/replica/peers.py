"""Peer discovery: `k8s-peer-discovery` (llm-d's) and `static-peer-discovery` (llmd's).

`k8s-peer-discovery` watches the pods `selector` picks (llm-d: the EPP Deployment's own labels)
in `namespace` (default: `POD_NAMESPACE`, else `default`) and reports every ready pod's
`podIP:port`, except this replica's own (`POD_IP`), as llm-d's plugin does. It reuses the EPP's
pod watch (`llmd._kube.PodWatch`), so it needs no RBAC beyond what endpoint discovery has.

`static-peer-discovery` reports a fixed list (`llmd epp --peer` adds to whichever is used).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys

__all__ = ["K8sPeerDiscovery", "StaticPeerDiscovery", "parse_peer", "parse_selector"]


def parse_peer(value: str) -> str:
    """`host:port` (`[v6]:port`), checked; ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


def parse_selector(value: str) -> dict[str, str]:
    """`a=b,c=d` (equality terms only, as llm-d's examples use)."""
    out = {}
    for term in value.split(","):
        key, sep, val = term.strip().partition("=")
        if not sep or not key.strip() or "!" in key:
            raise ValueError(f"{term.strip()!r} is not key=value (selector {value!r})")
        out[key.strip()] = val.strip().lstrip("=")
    return out


class StaticPeerDiscovery:
    type: ClassVar[str] = "static-peer-discovery"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        peers: list[str] = Field(default_factory=list, description="host:port of each peer's "
                                 "sync socket")

        @field_validator("peers")
        @classmethod
        def _peers(cls, value: list[str]) -> list[str]:
            return [parse_peer(p) for p in value]

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    async def peers(self, stop: asyncio.Event, kube: Any) -> AsyncIterator[tuple[str, ...]]:
        yield tuple(self.params.peers)
        await stop.wait()


class K8sPeerDiscovery:
    type: ClassVar[str] = "k8s-peer-discovery"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        selector: str = Field(default="", description="label selector of the EPP's pods, "
                              "like `app=my-epp` (required when the plugin is used)")
        port: int = Field(default=9005, gt=0, lt=65536, description="the peers' sync port "
                          "(llm-d writes it as a string)")
        namespace: str | None = Field(default=None, description="default: POD_NAMESPACE, "
                                      "else `default`")

        @field_validator("selector")
        @classmethod
        def _selector(cls, value: str) -> str:
            if value:
                parse_selector(value)
            return value

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        self.self_ip = os.environ.get("POD_IP", "")

    async def peers(self, stop: asyncio.Event, kube: Any) -> AsyncIterator[tuple[str, ...]]:
        from llmd._kube import KubeApi, PodWatch
        from llmd.epp.discovery_k8s import pod_endpoints

        api = kube if kube is not None else KubeApi.in_cluster()
        namespace = self.params.namespace or os.environ.get("POD_NAMESPACE") or "default"
        selector = parse_selector(self.params.selector)
        port = self.params.port
        watch = PodWatch(api, namespace, selector=selector, target_ports=(port,),
                         client="the EPP's k8s-peer-discovery")
        last: tuple[str, ...] | None = None
        async for pool in watch.snapshots(stop):
            found = sorted({ep.id for pod in pool.pods
                            for ep in pod_endpoints(pod, selector, (port,))
                            if ep.address != self.self_ip})
            if tuple(found) != last:
                last = tuple(found)
                yield last
