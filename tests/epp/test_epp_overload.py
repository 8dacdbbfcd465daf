"""Overload protection of the ext_proc servicer, without Envoy: over its bound of undecided
streams, or for a stream that waited too long inside the EPP, it answers a 429 with
Retry-After at once (never a gRPC error); a sheddable request met by a saturated pool gets
Retry-After too; a burst below the bound is routed whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from prometheus_client import CollectorRegistry

from llmd.engines import EndpointMetrics
from llmd.epp import Datastore, Director, load_config, parse_endpoint_flag
from llmd.epp.extproc import STREAM_TIMEOUT, ExtProcServicer, grpc_options
from llmd.epp.metrics import EppMetrics

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
objectives:
- {name: batch, priority: -1}
"""
BODY = json.dumps({"model": "m", "prompt": "hello"}).encode()
TIMEOUT_S = float(STREAM_TIMEOUT.rstrip("S"))


def _servicer(max_pending_streams: int = 4096, waiting: int = 0,
              max_wait_s: float = 5.0) -> ExtProcServicer:
    store = Datastore()
    spec = parse_endpoint_flag("10.0.0.1:8000")
    store.set_endpoints([spec])
    store.update_metrics(spec.id, EndpointMetrics(waiting=waiting))
    director = Director(store, load_config(text=CONFIG), EppMetrics(CollectorRegistry()))
    return ExtProcServicer(director, max_body_bytes=1 << 20,
                           max_pending_streams=max_pending_streams, max_wait_s=max_wait_s)


def _headers(objective: str | None = None) -> pb.ProcessingRequest:
    pairs = [(":path", "/v1/completions"), (":method", "POST")]
    if objective is not None:
        pairs.append(("x-gateway-inference-objective", objective))
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
            base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])),
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=mode_pb2.ProcessingMode.BUFFERED))


def _body() -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=BODY, end_of_stream=True))


class _Context:
    """What the servicer reads of grpc's ServicerContext: the time left to the deadline."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


class _Envoy:
    """One ext_proc stream as Envoy drives it in BUFFERED mode: the headers message, then the
    body once `body_sent` is set (a client still uploading holds it back)."""

    def __init__(self, servicer: ExtProcServicer, objective: str | None = None,
                 context: _Context | None = None) -> None:
        self.body_sent = asyncio.Event()
        self.answers: list[pb.ProcessingResponse] = []
        self.first = asyncio.Event()
        self._servicer, self._objective, self._context = servicer, objective, context

    async def _messages(self) -> AsyncIterator[pb.ProcessingRequest]:
        yield _headers(self._objective)
        await self.body_sent.wait()
        yield _body()

    async def run(self) -> list[pb.ProcessingResponse]:
        async for answer in self._servicer.Process(self._messages(), self._context):
            self.answers.append(answer)
            self.first.set()
        return self.answers


def _kinds(answers: list[pb.ProcessingResponse]) -> list[str]:
    return [str(a.WhichOneof("response")) for a in answers]


def _shed(answer: pb.ProcessingResponse) -> dict[str, object]:
    """The 429's headers and body; fails unless `answer` is one."""
    assert answer.WhichOneof("response") == "immediate_response"
    reply = answer.immediate_response
    assert reply.status.code == 429
    headers = {h.header.key: h.header.raw_value.decode() for h in reply.headers.set_headers}
    assert headers == {"content-type": "application/json", "retry-after": "1"}
    body: dict[str, object] = json.loads(reply.body)
    return body


def _overloaded(servicer: ExtProcServicer) -> float:
    metrics = servicer.director.metrics
    assert metrics is not None
    value = metrics.registry.get_sample_value(
        "llmd_epp_decisions_total", {"endpoint": "", "outcome": "overloaded"})
    return value or 0.0


async def test_over_the_bound_a_stream_is_shed_with_429_and_retry_after() -> None:
    servicer = _servicer(max_pending_streams=2)
    held = [_Envoy(servicer) for _ in range(2)]  # bodies still uploading: undecided
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(stream.run()) for stream in held]
        for stream in held:
            await stream.first.wait()
        assert servicer.pending == 2

        late = await _Envoy(servicer).run()  # answered at its headers, body never read
        error = _shed(late[0])["error"]
        assert len(late) == 1
        assert error["type"] == "TooManyRequests"  # type: ignore[index]
        assert "overloaded" in error["message"]  # type: ignore[index]
        assert _overloaded(servicer) == 1

        for stream in held:
            stream.body_sent.set()
    for task in tasks:
        assert _kinds(task.result()) == ["request_headers", "request_body"]  # routed
    assert servicer.pending == 0

    after = _Envoy(servicer)  # the slots are free again
    after.body_sent.set()
    assert _kinds(await after.run()) == ["request_headers", "request_body"]
    assert _overloaded(servicer) == 1


@pytest.mark.parametrize(("remaining", "shed"), [
    pytest.param(TIMEOUT_S - 6.0, True, id="waited-6s-of-max-5s"),
    pytest.param(TIMEOUT_S - 0.01, False, id="waited-10ms"),
    pytest.param(None, False, id="no-deadline-sent"),
    pytest.param(8.0, False, id="another-gateways-real-deadline"),
])
async def test_a_stream_that_waited_too_long_in_the_epp_is_shed(remaining: float | None,
                                                                 shed: bool) -> None:
    """The wait is the gateway's `grpc-timeout` marker minus what grpc says is left of it;
    a deadline that is not llmd's marker says nothing about the wait."""
    servicer = _servicer(max_wait_s=5.0)
    stream = _Envoy(servicer, context=_Context(remaining))
    stream.body_sent.set()
    answers = await stream.run()
    if shed:
        assert "waited 6.0 s" in _shed(answers[0])["error"]["message"]  # type: ignore[index]
        assert len(answers) == 1
    else:
        assert _kinds(answers) == ["request_headers", "request_body"]
    assert _overloaded(servicer) == (1 if shed else 0)
    assert servicer.pending == 0


async def test_sheddable_request_on_a_saturated_pool_gets_retry_after() -> None:
    servicer = _servicer(waiting=1000)  # far over the detector's queue threshold
    stream = _Envoy(servicer, objective="batch")
    stream.body_sent.set()
    answers = await stream.run()
    error = _shed(answers[-1])["error"]
    assert "saturated" in error["message"]  # type: ignore[index]
    assert _overloaded(servicer) == 0  # shed by the pool's saturation, not by the EPP's load
    assert servicer.pending == 0


async def test_a_burst_below_the_bound_is_routed_whole() -> None:
    servicer = _servicer(max_pending_streams=512)
    burst = [_Envoy(servicer) for _ in range(400)]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(stream.run()) for stream in burst]
        for stream in burst:
            await stream.first.wait()
        assert servicer.pending == 400  # all undecided at once, none shed
        for stream in burst:
            stream.body_sent.set()
    assert all(_kinds(t.result()) == ["request_headers", "request_body"] for t in tasks)
    assert _overloaded(servicer) == 0 and servicer.pending == 0


def test_grpc_backlog_is_raised_past_its_random_drops() -> None:
    """grpc's default (soft 1,000, hard 3,000, random drops between) cancelled streams of a
    1,500-stream burst before the EPP saw them; soft = hard, far above the EPP's bound."""
    options = dict(grpc_options(1 << 20, max_pending_streams=4096))
    soft = options["grpc.server.max_pending_requests"]
    assert soft == options["grpc.server.max_pending_requests_hard_limit"]
    assert soft >= 2 * 4096
