"""Helpers for P/D simulator tests: prefill/decode pairs, both engines' two-leg handshakes driven
by hand, and the simulator's P/D counters."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from llmd.engines import get_adapter
from llmd.sim import RunningSim, SimConfig, running_sim

MODEL = "llmd-sim"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def kv_source(self) -> str | None:
        return self.headers.get("x-llmd-kv-source")


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
               path: str = "/v1/completions") -> Answer:
    async with http.post(url + path, json=body) as resp:
        data = await resp.json(content_type=None)
        return Answer(resp.status, data, {k.lower(): v for k, v in resp.headers.items()})


@asynccontextmanager
async def pd_pair(engine: str, prefill: dict[str, Any] | None = None,
                  decode: dict[str, Any] | None = None
                  ) -> AsyncIterator[tuple[RunningSim, RunningSim]]:
    """A prefill and a decode simulator of `engine`'s dialect on 127.0.0.1:0 (zero latency)."""
    base = {"engine": engine, "port": 0, "time_scale": 0.0, "bootstrap_port": 0}
    async with AsyncExitStack() as stack:
        p = await stack.enter_async_context(
            running_sim(SimConfig(**{**base, "role": "prefill", **(prefill or {})})))
        d = await stack.enter_async_context(
            running_sim(SimConfig(**{**base, "role": "decode", **(decode or {})})))
        yield p, d


def room_fields(prefill: RunningSim, room: int | None = None) -> dict[str, Any]:
    return {"bootstrap_host": prefill.host, "bootstrap_port": prefill.side_ports["bootstrap"],
            "bootstrap_room": secrets.randbits(63) if room is None else room}


async def _nixl_legs(http: aiohttp.ClientSession, prefill: RunningSim, decode: RunningSim,
                     body: dict[str, Any]) -> tuple[Answer, Answer]:
    """vLLM NIXL v2, as llm-d's sidecar runs it: prefill first, its params to decode."""
    first = await post(http, prefill.url, {**body, "max_tokens": 1, "stream": False,
                                           "kv_transfer_params": {"do_remote_decode": True}})
    assert first.status == 200, first.body
    second = await post(http, decode.url,
                        {**body, "kv_transfer_params": first.body["kv_transfer_params"]})
    return first, second


async def _bootstrap_legs(http: aiohttp.ClientSession, prefill: RunningSim, decode: RunningSim,
                          body: dict[str, Any]) -> tuple[Answer, Answer]:
    """SGLang: the same room on both legs, sent at once."""
    legs = {**body, **room_fields(prefill)}
    first, second = await asyncio.gather(post(http, prefill.url, {**legs, "stream": False}),
                                         post(http, decode.url, legs))
    return first, second


Legs = Callable[[aiohttp.ClientSession, RunningSim, RunningSim, dict[str, Any]],
                Awaitable[tuple[Answer, Answer]]]
LEGS: dict[str, Legs] = {"kv-transfer-params": _nixl_legs, "bootstrap-room": _bootstrap_legs}


def two_legs(engine: str) -> Legs:
    """The engine's own handshake, picked by its adapter."""
    return LEGS[get_adapter(engine).pd.handoff]


async def pd_counters(http: aiohttp.ClientSession, sim: RunningSim, engine: str
                      ) -> dict[str, float]:
    """computed / sent / received prompt tokens, held blocks, transfer misses, injected fails."""
    async with http.get(sim.url + "/metrics") as resp:
        text = await resp.text()
    misses = get_adapter(engine).metric_names.pd_transfer_misses
    out = {"computed": 0.0, "sent": 0.0, "received": 0.0, "held": 0.0, "misses": 0.0,
           "injected": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llmd_sim_prompt_tokens_computed_total":
                out["computed"] = s.value
            elif s.name == "llmd_sim_kv_transfer_tokens_total":
                out[s.labels["direction"]] = s.value
            elif s.name == "llmd_sim_kv_held_blocks":
                out["held"] = s.value
            elif s.name == f"{misses}_total":
                out["misses"] = s.value
            elif s.name == "llmd_sim_injected_failures_total":
                out["injected"] = s.value
    return out

