"""Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor`) over grpcio aio.

Two request body modes, told apart by the `protocol_config` Envoy sends first:

- `BUFFERED` (llmd's gateway, see gateway/envoy.py): the headers message is answered at once
  with an empty HeadersResponse (Envoy sends the body only after that answer); the whole body
  arrives as one `request_body` with end_of_stream and its answer carries the decision, after
  which the EPP closes the stream cleanly (Envoy then proceeds without it).
- `FULL_DUPLEX_STREAMED` (GIE's EPP and the gateways configured for it): headers are held until
  the body ends (or trailers arrive), then the decision goes out as the HeadersResponse and the
  body is handed back as streamed chunks; response bodies are echoed chunk by chunk.

The decision is header `x-gateway-destination-endpoint` (overwriting any client value), the same
value in `envoy.lb` dynamic metadata, and clear_route_cache; with P/D also `x-prefiller-host-port`
(removed when the request is not disaggregated, so a client-sent value never survives). Errors
become ImmediateResponses with an OpenAI-style JSON body.

Response headers the decision implies (the session token) go out with the decision in
`llmd.response_headers` dynamic metadata, which llmd's gateway route copies onto the response:
no response round trip in BUFFERED mode. In FULL_DUPLEX_STREAMED mode the EPP also sets them in
its answer to `response_headers`, as llm-d's EPP does, so they reach the client behind any
gateway configured for that mode.

Overload: the EPP sheds instead of looking dead. A stream that, when its handler starts,
finds `max_pending_streams` streams undecided (opened, no decision or error answered yet) or
has waited more than `max_wait_s` inside the EPP (grpc's backlog and the event loop) is
answered at its first message with a 429 (`RequestShedError`, `Retry-After`) without reading
its body or scheduling, and counted as outcome `overloaded`. Without that, Envoy's ext_proc
message timeout (15 s in llmd's gateway) would expire or grpc would cancel the stream, and
Envoy would apply the pool's failure mode (a FailClose 503 or an unscheduled FailOpen request)
to a picker that is only busy. The wait is known without comparing clocks: llmd's gateway
opens each stream with `grpc-timeout: STREAM_TIMEOUT` (`gateway/envoy.py`), grpc sets the
call's deadline from it when the stream reaches the EPP's transport, and `time_remaining()`
then tells how long ago that was; behind a gateway that does not send it, only the count
applies. grpc's own backlog of calls not yet handed to Python is raised (`grpc_options`): by
default grpc cancels calls beyond 1,000 waiting at random, which Envoy turned into FailClose
503s in bursts of 1,500 streams (the aio server takes one new call per event-loop turn).

Flow control (`flow`, with the `flowControl` feature gate): the message that completes a
request is parsed and handed to `FlowController.admit` before it is handled; a queued request
waits there inside its own stream (others go on), is answered with the controller's 429/503
when refused, and leaves the queue when Envoy cancels the stream (the client went away). In
FULL_DUPLEX_STREAMED mode the end of each response body pokes the controller.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from llmd.epp._extproc_msgs import (
    header_dict,
    immediate,
    response_headers_answer,
    routed,
    streamed_body,
)
from llmd.epp.director import Decision, Director
from llmd.epp.flow_control import FlowController, Ticket
from llmd.epp.headers import DESTINATION_HEADER, LB_METADATA_NAMESPACE
from llmd.epp.request import InferenceRequest
from llmd.errors import PayloadTooLargeError, RequestError, RequestShedError

__all__ = ["DEFAULT_MAX_PENDING_STREAMS", "DEFAULT_MAX_WAIT_S", "DESTINATION_HEADER",
           "ExtProcServicer", "LB_METADATA_NAMESPACE", "STREAM_TIMEOUT", "grpc_options"]

log = logging.getLogger(__name__)

_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED
# Answers without content, built once (never modified; grpc serializes them per write).
_HEADERS_NEXT = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
_REQUEST_TRAILERS_NEXT = pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
_RESPONSE_BODY_NEXT = pb.ProcessingResponse(response_body=pb.BodyResponse())
_RESPONSE_TRAILERS_NEXT = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

DEFAULT_MAX_PENDING_STREAMS = 4096
"""Undecided ext_proc streams the EPP holds before shedding (see `EppSettings`)."""
DEFAULT_MAX_WAIT_S = 8.0
"""Longest wait inside the EPP before a stream is shed: 7 s under the message timeout of
llmd's gateway (15 s), room for Envoy's own queueing and the answer's way back."""

STREAM_TIMEOUT = "99999999S"
"""The `grpc-timeout` llmd's gateway sends on each ext_proc stream: a deadline no stream
reaches (about 3 years), only there so that the EPP can tell how long a stream waited."""
_STREAM_TIMEOUT_S = float(STREAM_TIMEOUT[:-1])

# grpc's backlog of calls that reached the transport but that the aio server has not picked up
# yet (`grpc.server.max_pending_requests`, default soft 1,000 / hard 3,000 with random drops in
# between); at least this, and twice the EPP's own bound.
_GRPC_MIN_BACKLOG = 16_384


class ExtProcServicer(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """`pending` is the number of undecided streams now (read by the metrics gauge)."""

    def __init__(self, director: Director, max_body_bytes: int,
                 max_pending_streams: int = DEFAULT_MAX_PENDING_STREAMS,
                 max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 flow: FlowController | None = None) -> None:
        self.director = director
        self.flow = flow
        self.max_body_bytes = max_body_bytes
        self.max_pending_streams = max_pending_streams
        self.max_wait_s = max_wait_s
        self.pending = 0

    async def Process(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        reason = self._overload(context)
        if reason is not None:
            async for _ in request_iterator:  # answered at Envoy's first message
                yield self._shed(reason)
                break
            return
        stream = _Stream(self)
        self.pending += 1
        try:
            async for msg in request_iterator:
                try:
                    if msg.HasField("protocol_config"):
                        stream.configure(msg.protocol_config)
                    if self.flow is not None:
                        refused = await stream.admit(msg, self.flow)
                        if refused is not None:
                            yield refused
                            return
                    responses = list(stream.handle(msg))
                except Exception:
                    # A bug, never the client's input: answer it as a JSON 500 instead of
                    # failing the gRPC stream, which FailOpen would turn into an unscheduled
                    # request.
                    log.exception("internal error handling an ext_proc %s message",
                                  msg.WhichOneof("request"))
                    yield immediate(RequestError("internal error in the endpoint picker"))
                    return
                for response in responses:
                    yield response
                stream.after()
                if stream.closed:
                    return
        finally:
            stream.release()
            stream.settle()

    def _overload(self, context: Any) -> str | None:
        """Why this new stream must be shed, or None."""
        if self.pending >= self.max_pending_streams:
            return f"{self.pending} requests are waiting for a routing decision"
        waited = _waited_s(context)
        if waited is not None and waited > self.max_wait_s:
            return f"this request waited {waited:.1f} s for it"
        return None

    def _shed(self, reason: str) -> pb.ProcessingResponse:
        metrics = self.director.metrics
        if metrics is not None:
            metrics.decisions.labels("", "overloaded").inc()
        log.debug("shedding an ext_proc stream: %s", reason)
        return immediate(RequestShedError(
            f"the endpoint picker is overloaded ({reason}); retry later"))


def _waited_s(context: Any) -> float | None:
    """Seconds since the stream reached the EPP's gRPC transport, when the gateway sent
    `grpc-timeout: STREAM_TIMEOUT`; None otherwise (another timeout, or none)."""
    remaining = context.time_remaining() if context is not None else None
    if remaining is None:
        return None
    waited = _STREAM_TIMEOUT_S - float(remaining)
    return waited if 0.0 <= waited < 3600.0 else None


class _Stream:
    """One HTTP request's ext_proc exchange."""

    def __init__(self, servicer: ExtProcServicer) -> None:
        self.servicer = servicer
        self.duplex_request = False
        self.duplex_response = False
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.decided = False
        self.closed = False
        self._pending: Decision | None = None
        self._response_headers: Mapping[str, str] = {}
        self._counted = True  # in servicer.pending until decided or ended
        self._request: InferenceRequest | None = None  # parsed for flow control's admission
        self._ticket: Ticket | None = None
        self._request_id: str | None = None

    def release(self) -> None:
        """Leave the servicer's count of undecided streams (once)."""
        if self._counted:
            self._counted = False
            self.servicer.pending -= 1

    def settle(self, endpoint: str | None = None) -> None:
        """Tell flow control this request's decision is recorded (`endpoint`: where it went),
        or that it ended (once)."""
        if self._ticket is not None:
            self._ticket.settle(endpoint)
            self._ticket = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = self.headers.get("x-request-id") or uuid.uuid4().hex
        return self._request_id

    async def admit(self, msg: pb.ProcessingRequest, flow: FlowController
                    ) -> pb.ProcessingResponse | None:
        """Flow control, when `msg` completes the request: parse it, then wait until `flow`
        lets it through; the answer when it is refused (400, 429, 503), else None."""
        ready, body = self._completed(msg)
        if not ready:
            return None
        director = self.servicer.director
        try:
            self._request = director.parse(self.request_id, self.headers.get(":path", "/"),
                                           self.headers, body)
            self._ticket = await flow.admit(self._request, len(body or b""))
        except RequestError as exc:
            log.debug("%s: %s %s", self.request_id, exc.status, exc.message)
            self.decided = self.closed = True
            self.release()
            if director.metrics is not None:
                director.metrics.decisions.labels("", _REFUSED.get(exc.status, "error")).inc()
            return immediate(exc)
        return None

    def _completed(self, msg: pb.ProcessingRequest) -> tuple[bool, bytes | None]:
        """Whether `msg` completes the request (as `handle` will see it), with its body."""
        kind = msg.WhichOneof("request")
        if kind == "request_headers" and msg.request_headers.end_of_stream:
            self.headers = header_dict(msg.request_headers.headers)
            return True, None
        if kind == "request_body" and msg.request_body.end_of_stream:
            size = len(self.body) + len(msg.request_body.body)
            if size > self.servicer.max_body_bytes:
                return False, None  # `handle` answers 413
            return True, bytes(self.body) + msg.request_body.body
        if kind == "request_trailers" and self.duplex_request and not self.decided:
            return True, bytes(self.body)
        return False, None

    def configure(self, config: pb.ProtocolConfiguration) -> None:
        self.duplex_request = config.request_body_mode == _DUPLEX
        self.duplex_response = config.response_body_mode == _DUPLEX

    def handle(self, msg: pb.ProcessingRequest) -> Iterator[pb.ProcessingResponse]:
        kind = msg.WhichOneof("request")
        if kind == "request_headers":
            self.headers = header_dict(msg.request_headers.headers)
            if msg.request_headers.end_of_stream:
                yield self._decide("request_headers", None)
            elif not self.duplex_request:
                yield _HEADERS_NEXT
        elif kind == "request_body":
            yield from self._request_body(msg.request_body)
        elif kind == "request_trailers":
            if self.duplex_request and not self.decided:  # the body ended without end_of_stream
                yield from self._decide_duplex(end_of_stream=False)
            yield _REQUEST_TRAILERS_NEXT
        elif kind == "response_headers":
            yield response_headers_answer(self._response_headers)
        elif kind == "response_body":
            flow = self.servicer.flow
            if flow is not None and msg.response_body.end_of_stream:
                flow.poke()  # a request ended: capacity may have freed
            if self.duplex_response:
                yield from streamed_body("response", msg.response_body.body,
                                         msg.response_body.end_of_stream)
            else:
                yield _RESPONSE_BODY_NEXT
        elif kind == "response_trailers":
            yield _RESPONSE_TRAILERS_NEXT

    def after(self) -> None:
        """PreRequest hooks, once the decision has been handed to gRPC."""
        decision, self._pending = self._pending, None
        if decision is not None:
            self.servicer.director.after_decision(decision)
            self.settle(decision.endpoint)

    def _request_body(self, part: pb.HttpBody) -> Iterator[pb.ProcessingResponse]:
        self.body += part.body
        if len(self.body) > self.servicer.max_body_bytes:
            self.closed = True
            yield immediate(PayloadTooLargeError(
                f"request body exceeds {self.servicer.max_body_bytes} bytes"))
            return
        if not part.end_of_stream:
            return
        if self.duplex_request:
            yield from self._decide_duplex(end_of_stream=True)
        else:
            yield self._decide("request_body", bytes(self.body))
            self.body.clear()

    def _decide_duplex(self, *, end_of_stream: bool) -> Iterator[pb.ProcessingResponse]:
        body = bytes(self.body)
        self.body.clear()
        answer = self._decide("request_headers", body)
        yield answer
        if not self.closed:
            yield from streamed_body("request", body, end_of_stream)

    def _decide(self, phase: str, body: bytes | None) -> pb.ProcessingResponse:
        self.decided = True
        self.release()  # FULL_DUPLEX_STREAMED streams live on, decided
        request_id = self.request_id
        path = self.headers.get(":path", "/")
        try:
            decision = self.servicer.director.decide(request_id, path, self.headers, body,
                                                     self._request)
        except RequestError as exc:
            log.debug("%s: %s %s", request_id, exc.status, exc.message)
            self.closed = True
            return immediate(exc)
        self._pending = decision
        self._response_headers = decision.response_headers
        if not (self.duplex_request or self.duplex_response):
            # Nothing else to process (the response path is skipped): closing the stream
            # cleanly now lets Envoy proceed at once and saves gRPC work per request.
            self.closed = True
        return routed(phase, decision.destination_value, decision.result.headers,
                      decision.response_headers)


_REFUSED = {400: "bad_request", 429: "shed", 503: "no_endpoint"}


def grpc_options(max_body_bytes: int,
                 max_pending_streams: int = DEFAULT_MAX_PENDING_STREAMS) -> list[tuple[str, int]]:
    """Server options: a buffered body arrives as one message, so the limit follows the body;
    grpc's backlog of calls not yet picked up is a hard bound well above the EPP's own, with
    no random early drops (each drop is a CANCELLED stream, which Envoy answers with the pool's
    failure mode): a burst waits to be picked up, then is routed or shed with a 429."""
    size = max_body_bytes + 64 * 1024
    backlog = max(_GRPC_MIN_BACKLOG, 2 * max_pending_streams)
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.server.max_pending_requests", backlog),
            ("grpc.server.max_pending_requests_hard_limit", backlog)]
