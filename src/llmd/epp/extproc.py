"""Envoy ext_proc (`envoy.service.ext_proc.v3.ExternalProcessor`) over grpcio aio.

Envoy runs the filter with `request_body_mode: BUFFERED` (see gateway/envoy.py): the headers
message is answered at once with an empty HeadersResponse (Envoy sends the body only after that
answer), the whole body then arrives as one `request_body` with end_of_stream, and its answer
carries the decision: header `x-gateway-destination-endpoint` (overwriting any client value),
the same value in `envoy.lb` dynamic metadata, and clear_route_cache so the route that needs
the header matches. Errors become ImmediateResponses with an OpenAI-style JSON body.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from llmd.epp.director import Decision, Director
from llmd.errors import PayloadTooLargeError, RequestError

__all__ = ["DESTINATION_HEADER", "ExtProcServicer", "LB_METADATA_NAMESPACE"]

log = logging.getLogger(__name__)

DESTINATION_HEADER = "x-gateway-destination-endpoint"
LB_METADATA_NAMESPACE = "envoy.lb"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class ExtProcServicer(pb_grpc.ExternalProcessorServicer):
    def __init__(self, director: Director, max_body_bytes: int) -> None:
        self.director = director
        self.max_body_bytes = max_body_bytes

    async def Process(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        headers: dict[str, str] = {}
        body = bytearray()
        async for msg in request_iterator:
            kind = msg.WhichOneof("request")
            if kind == "request_headers":
                headers = _headers(msg.request_headers.headers)
                if msg.request_headers.end_of_stream:
                    decision, response = self._answer("request_headers", headers, None)
                    yield response
                    self._after(decision)
                else:
                    yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif kind == "request_body":
                body += msg.request_body.body
                if len(body) > self.max_body_bytes:
                    yield _immediate(PayloadTooLargeError(
                        f"request body exceeds {self.max_body_bytes} bytes"))
                    return
                if msg.request_body.end_of_stream:
                    decision, response = self._answer("request_body", headers, bytes(body))
                    body.clear()
                    yield response
                    self._after(decision)
            elif kind == "request_trailers":
                yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
            elif kind == "response_headers":
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
            elif kind == "response_body":
                yield pb.ProcessingResponse(response_body=pb.BodyResponse())
            elif kind == "response_trailers":
                yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())

    def _answer(self, phase: str, headers: dict[str, str], body: bytes | None
                ) -> tuple[Decision | None, pb.ProcessingResponse]:
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        try:
            decision = self.director.decide(request_id, headers.get(":path", "/"), headers, body)
        except RequestError as exc:
            log.debug("%s: %s %s", request_id, exc.status, exc.message)
            return None, _immediate(exc)
        return decision, _routed(phase, decision.endpoint)

    def _after(self, decision: Decision | None) -> None:
        # Runs once the answer has been handed to gRPC: index updates stay off the decision path.
        if decision is not None:
            self.director.after_decision(decision)


def _headers(header_map: base_pb2.HeaderMap) -> dict[str, str]:
    out = {}
    for h in header_map.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _routed(phase: str, endpoint: str) -> pb.ProcessingResponse:
    common = pb.CommonResponse(
        header_mutation=pb.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=DESTINATION_HEADER, raw_value=endpoint.encode()),
            append_action=_OVERWRITE,
        )]),
        clear_route_cache=True,
    )
    metadata = struct_pb2.Struct()
    metadata.update({LB_METADATA_NAMESPACE: {DESTINATION_HEADER: endpoint}})
    if phase == "request_headers":
        return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                     dynamic_metadata=metadata)
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common),
                                 dynamic_metadata=metadata)


def _immediate(exc: RequestError) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=exc.status),
        headers=pb.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
            append_action=_OVERWRITE,
        )]),
        body=json.dumps(exc.body()).encode(),
        details=f"llmd_epp_{exc.status}",
    ))


def grpc_options(max_body_bytes: int) -> list[tuple[str, int]]:
    """Server options: bodies arrive as one message, so the limit follows the body limit."""
    size = max_body_bytes + 64 * 1024
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]

