"""Flow control inside the ext_proc servicer, without Envoy: a queued request waits in its own
stream and is routed when capacity frees, higher priorities first and fairly between flows;
TTL expiry and full bands answer 429 with Retry-After and llm-d's dropped reason; an empty pool
answers 503; a stream cancelled while queued leaves the queue.

Saturation comes from `concurrency-detector` (`maxConcurrency: 1`, one endpoint) over the
scraped counts the test writes into the datastore, plus the requests flow control released
since the last scrape, as `serve()` wires them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from prometheus_client import CollectorRegistry

from llmd.engines import EndpointMetrics
from llmd.epp import Datastore, Director, load_config, parse_endpoint_flag
from llmd.epp.extproc import ExtProcServicer
from llmd.epp.flow_control import FlowController
from llmd.epp.metrics import EppMetrics, FlowControlMetrics

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- type: concurrency-detector
  parameters: {{maxConcurrency: 1}}
- {{type: round-robin-fairness-policy, name: rr}}
flowControl:
  defaultRequestTTL: {ttl}
  maxRequests: 50
  saturationDetector: {{pluginRef: concurrency-detector}}
  priorityBands:
  - {{priority: 0, fairnessPolicyRef: rr}}
  - {{priority: -1, maxRequests: 1}}
objectives:
- {{name: batch, priority: -1}}
- {{name: premium, priority: 10}}
"""
ENDPOINT = "10.0.0.1:8000"


class _Epp:
    def __init__(self, ttl: str = "10s", endpoints: tuple[str, ...] = (ENDPOINT,)) -> None:
        self.store = Datastore()
        self.store.set_endpoints([parse_endpoint_flag(e) for e in endpoints])
        config = load_config(text=CONFIG.format(ttl=ttl))
        assert config.flow_control is not None
        self.registry = CollectorRegistry()
        self.flow = FlowController(config.flow_control, self.store, config.detector,
                                   FlowControlMetrics(self.registry), tick_s=0.01)
        self.store.on_change(self.flow.poke)
        director = Director(self.store, config, EppMetrics(self.registry))
        self.servicer = ExtProcServicer(director, 1 << 20, flow=self.flow)

    def scrape(self, running: int) -> None:
        """A good scrape of the endpoint: the engine runs `running` requests, and every
        request sent before it is reflected there."""
        self.store.update_metrics(ENDPOINT, EndpointMetrics(running=running))

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def queued(self, priority: int = 0) -> float:
        return self.metric("llm_d_epp_flow_control_queue_size", priority=str(priority))

    def outcomes(self, outcome: str, priority: int = 0) -> float:
        return self.metric("llm_d_epp_flow_control_request_queue_duration_seconds_count",
                           priority=str(priority), outcome=outcome)


@contextlib.asynccontextmanager
async def _running(epp: _Epp) -> AsyncIterator[_Epp]:
    stop = asyncio.Event()
    task = asyncio.create_task(epp.flow.run(stop), name="flow control")
    try:
        yield epp
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def _messages(objective: str | None, flow: str | None
                    ) -> AsyncIterator[pb.ProcessingRequest]:
    pairs = [(":path", "/v1/completions"), (":method", "POST")]
    if objective:
        pairs.append(("x-gateway-inference-objective", objective))
    if flow:
        pairs.append(("x-gateway-inference-fairness-id", flow))
    yield pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
            base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=mode_pb2.ProcessingMode.BUFFERED))
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()
    yield pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))


async def _send(epp: _Epp, objective: str | None = None, flow: str | None = None,
                routed: list[str] | None = None) -> pb.ProcessingResponse:
    """One request; its last answer (the decision or an error). `routed` collects the flow
    of each request routed, in decision order."""
    last = None
    async for answer in epp.servicer.Process(_messages(objective, flow), None):
        last = answer
        if routed is not None and answer.WhichOneof("response") == "request_body":
            routed.append(flow or "")
    assert last is not None
    return last


def _error(answer: pb.ProcessingResponse) -> tuple[int, dict[str, str], dict[str, object]]:
    assert answer.WhichOneof("response") == "immediate_response", answer
    reply = answer.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in reply.headers.set_headers}
    return reply.status.code, headers, json.loads(reply.body)


async def _until(pred: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition under a deadline."""
    async with asyncio.timeout(timeout_s):
        while not pred():  # noqa: ASYNC110 (polling a condition under a deadline)
            await asyncio.sleep(0.005)


async def test_an_idle_pool_routes_at_once_without_queueing() -> None:
    async with _running(_Epp()) as epp:
        answer = await _send(epp)
        assert answer.WhichOneof("response") == "request_body"
        assert epp.outcomes("Dispatched") == 1 and epp.queued() == 0


async def test_a_queued_request_is_routed_when_capacity_frees() -> None:
    async with _running(_Epp()) as epp:
        epp.scrape(running=1)  # saturated
        task = asyncio.create_task(_send(epp))
        await _until(lambda: epp.queued() == 1)
        other = asyncio.create_task(_send(epp, objective="batch"))  # not blocked by the first
        await _until(lambda: epp.queued(-1) == 1)
        await asyncio.sleep(0.05)
        assert not task.done() and not other.done()
        epp.scrape(running=0)  # a request finished
        assert (await task).WhichOneof("response") == "request_body"
        assert epp.queued() == 0 and epp.outcomes("Dispatched") == 1
        assert not other.done()  # the one routed now runs
        epp.scrape(running=0)
        assert (await other).WhichOneof("response") == "request_body"


async def test_higher_priority_is_served_first_and_the_low_one_sheds_at_its_ttl() -> None:
    async with _running(_Epp(ttl="300ms")) as epp:
        epp.scrape(running=1)
        low = asyncio.create_task(_send(epp, objective="batch"))
        await _until(lambda: epp.queued(-1) == 1)
        high = asyncio.create_task(_send(epp, objective="premium"))
        await _until(lambda: epp.queued(10) == 1)
        epp.scrape(running=0)  # room for one: the high one goes, and then occupies it
        assert (await high).WhichOneof("response") == "request_body"
        status, headers, body = _error(await low)
        assert status == 429
        assert headers["retry-after"] == "1"
        assert headers["x-llm-d-request-dropped-reason"] == "rejected-ttl-expired"
        assert "saturated" in body["error"]["message"]  # type: ignore[index]
        assert epp.outcomes("EvictedTTL", -1) == 1 and epp.outcomes("Dispatched", 10) == 1


async def test_a_full_band_answers_429_at_once_other_bands_still_queue() -> None:
    async with _running(_Epp()) as epp:
        epp.scrape(running=1)
        first = asyncio.create_task(_send(epp, objective="batch"))
        await _until(lambda: epp.queued(-1) == 1)
        status, headers, body = _error(await _send(epp, objective="batch"))  # band max 1
        assert status == 429 and headers["retry-after"] == "1"
        assert headers["x-llm-d-request-dropped-reason"] == "rejected-saturated"
        assert "priority band -1 holds its maximum of 1 requests" in \
            body["error"]["message"]  # type: ignore[index]
        other = asyncio.create_task(_send(epp))
        await _until(lambda: epp.queued(0) == 1)
        assert epp.outcomes("RejectedCapacity", -1) == 1
        first.cancel()
        other.cancel()
        await asyncio.gather(first, other, return_exceptions=True)


async def test_the_global_limit_answers_429() -> None:
    async with _running(_Epp()) as epp:
        epp.scrape(running=1)
        held = [asyncio.create_task(_send(epp, flow=f"t{i}")) for i in range(50)]
        await _until(lambda: epp.queued() == 50)
        status, _, body = _error(await _send(epp, objective="premium"))
        assert status == 429
        assert "the queue holds its maximum of 50 requests" in \
            body["error"]["message"]  # type: ignore[index]
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert epp.queued() == 0


async def test_an_empty_pool_answers_503_with_flow_control_on() -> None:
    async with _running(_Epp(endpoints=())) as epp:
        status, headers, _ = _error(await _send(epp, objective="batch"))
        assert status == 503 and "retry-after" not in headers
        assert epp.outcomes("RejectedNoEndpoints", -1) == 1


async def test_a_cancelled_stream_leaves_the_queue() -> None:
    """Envoy cancels the ext_proc stream when the client goes away."""
    async with _running(_Epp()) as epp:
        epp.scrape(running=1)
        task = asyncio.create_task(_send(epp))
        await _until(lambda: epp.queued() == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert epp.queued() == 0 and epp.outcomes("EvictedContextCancelled") == 1
        assert epp.servicer.pending == 0
        epp.scrape(running=0)
        assert (await _send(epp)).WhichOneof("response") == "request_body"


async def test_round_robin_shares_capacity_between_fairness_ids() -> None:
    """A noisy tenant queues 30 requests before a quiet one queues 10; capacity frees one
    request at a time. Tolerance: the quiet tenant gets 10 ± 1 of the first 20 dispatches
    (round robin alternates exactly; ±1 allows for which flow the cursor starts on)."""
    async with _running(_Epp()) as epp:
        epp.scrape(running=1)
        routed: list[str] = []
        tasks = [asyncio.create_task(_send(epp, flow="noisy", routed=routed))
                 for _ in range(30)]
        await _until(lambda: epp.queued() == 30)
        tasks += [asyncio.create_task(_send(epp, flow="quiet", routed=routed))
                  for _ in range(10)]
        await _until(lambda: epp.queued() == 40)
        for n in range(1, 21):
            epp.scrape(running=0)  # one finished: room for exactly one more
            await _until(lambda n=n: len(routed) == n)  # type: ignore[misc]
            epp.scrape(running=1)  # ... which now runs
        assert abs(routed[:20].count("quiet") - 10) <= 1, routed
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
