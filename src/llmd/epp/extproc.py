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
    LB_METADATA_NAMESPACE,
    header_dict,
    immediate,
    response_headers_answer,
    routed,
    streamed_body,
)
from llmd.epp.director import Decision, Director
from llmd.epp.headers import DESTINATION_HEADER
from llmd.errors import PayloadTooLargeError, RequestError

__all__ = ["DESTINATION_HEADER", "ExtProcServicer", "LB_METADATA_NAMESPACE", "grpc_options"]

log = logging.getLogger(__name__)

_DUPLEX = processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED


class ExtProcServicer(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, director: Director, max_body_bytes: int) -> None:
        self.director = director
        self.max_body_bytes = max_body_bytes

    async def Process(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stream = _Stream(self)
        async for msg in request_iterator:
            try:
                if msg.HasField("protocol_config"):
                    stream.configure(msg.protocol_config)
                responses = list(stream.handle(msg))
            except Exception:
                # A bug, never the client's input: answer it as a JSON 500 instead of failing
                # the gRPC stream, which FailOpen would turn into an unscheduled request.
                log.exception("internal error handling an ext_proc %s message",
                              msg.WhichOneof("request"))
                yield immediate(RequestError("internal error in the endpoint picker"))
                return
            for response in responses:
                yield response
            stream.after()
            if stream.closed:
                return


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
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
        elif kind == "request_body":
            yield from self._request_body(msg.request_body)
        elif kind == "request_trailers":
            if self.duplex_request and not self.decided:  # the body ended without end_of_stream
                yield from self._decide_duplex(end_of_stream=False)
            yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
        elif kind == "response_headers":
            yield response_headers_answer(self._response_headers)
        elif kind == "response_body":
            if self.duplex_response:
                yield from streamed_body("response", msg.response_body.body,
                                         msg.response_body.end_of_stream)
            else:
                yield pb.ProcessingResponse(response_body=pb.BodyResponse())
        elif kind == "response_trailers":
            yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

    def after(self) -> None:
        """PreRequest hooks, once the decision has been handed to gRPC."""
        decision, self._pending = self._pending, None
        if decision is not None:
            self.servicer.director.after_decision(decision)

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
        request_id = self.headers.get("x-request-id") or uuid.uuid4().hex
        path = self.headers.get(":path", "/")
        try:
            decision = self.servicer.director.decide(request_id, path, self.headers, body)
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


# grpc's backlog of calls that reached the transport but that the aio server has not picked up
# yet (`grpc.server.max_pending_requests`). Its default, soft 1,000 / hard 3,000 with random
# drops in between, cancelled streams of a 1,500-stream burst before the EPP saw them (the aio
# server takes one new call per event-loop turn); Envoy then applied the pool's failure mode
# (FailClose: 503) to a picker that was only busy.
_GRPC_BACKLOG = 16_384


def grpc_options(max_body_bytes: int) -> list[tuple[str, int]]:
    """Server options: a buffered body arrives as one message, so the limit follows the body;
    grpc's backlog of calls not yet picked up is one hard bound, without random drops."""
    size = max_body_bytes + 64 * 1024
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.server.max_pending_requests", _GRPC_BACKLOG),
            ("grpc.server.max_pending_requests_hard_limit", _GRPC_BACKLOG)]
