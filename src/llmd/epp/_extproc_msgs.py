"""Builders for ext_proc ProcessingResponses (header mutation, streamed body, errors)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

from llmd.epp.headers import (
    DESTINATION_HEADER,
    LB_METADATA_NAMESPACE,
    PREFILLER_HEADER,
    RESPONSE_METADATA_NAMESPACE,
)
from llmd.errors import RequestError

BODY_CHUNK_BYTES = 62_000  # what GIE re-sends per message (pkg/common/envoy/chunking.go)
RETRY_AFTER_S = 1
"""`Retry-After` of every 429 the EPP answers (shed: the pool is saturated, flow control's
queue is full or a request's wait in it ran out, or the EPP itself is over its bound of
undecided streams); a saturated pool or a full queue clear within about a second."""
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_REMOVABLE = (PREFILLER_HEADER,)


def header_dict(header_map: base_pb2.HeaderMap) -> dict[str, str]:
    out = {}
    for h in header_map.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def routed(phase: str, endpoint: str, headers: Mapping[str, str] | None = None,
           response_headers: Mapping[str, str] | None = None) -> pb.ProcessingResponse:
    """The decision, as the answer to `phase` (request_headers or request_body).

    `headers` are more request headers the decision sets (the prefill endpoint); a routing
    header the decision does not set is removed, whatever the client sent. `response_headers`
    go into dynamic metadata, from which llmd's gateway route copies them onto the response.

    Answers are built once per distinct decision and shared (a pool has few distinct
    destination lists and tokens): building one costs tens of microseconds of protobuf calls
    per request, a lookup about one. Callers must not modify the answer.
    """
    return _routed(phase, endpoint, tuple(headers.items()) if headers else (),
                   tuple(response_headers.items()) if response_headers else ())


@functools.lru_cache(maxsize=4096)
def _routed(phase: str, endpoint: str, headers: tuple[tuple[str, str], ...],
            response_headers: tuple[tuple[str, str], ...]) -> pb.ProcessingResponse:
    values = {DESTINATION_HEADER: endpoint, **dict(headers)}
    common = pb.CommonResponse(
        header_mutation=pb.HeaderMutation(
            set_headers=_set_headers(values),
            remove_headers=[h for h in _REMOVABLE if h not in values],
        ),
        clear_route_cache=True,
    )
    metadata = struct_pb2.Struct()
    metadata.update({LB_METADATA_NAMESPACE: {DESTINATION_HEADER: endpoint}})
    if response_headers:
        metadata.update({RESPONSE_METADATA_NAMESPACE: dict(response_headers)})
    if phase == "request_headers":
        return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common),
                                     dynamic_metadata=metadata)
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common),
                                 dynamic_metadata=metadata)


def response_headers_answer(headers: Mapping[str, str]) -> pb.ProcessingResponse:
    """FULL_DUPLEX_STREAMED: the answer to `response_headers`, setting `headers` on the
    response as llm-d's EPP does (works behind any gateway that sends response headers)."""
    if not headers:
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse())
    mutation = pb.HeaderMutation(set_headers=_set_headers(headers))
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse(
        response=pb.CommonResponse(header_mutation=mutation)))


def _set_headers(values: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    return [base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
        append_action=_OVERWRITE,
    ) for key, value in values.items()]


def streamed_body(phase: str, body: bytes, end_of_stream: bool
                  ) -> Iterator[pb.ProcessingResponse]:
    """FULL_DUPLEX_STREAMED: hand `body` back to Envoy in chunks (`phase`: request/response)."""
    chunks = [body[i : i + BODY_CHUNK_BYTES] for i in range(0, len(body), BODY_CHUNK_BYTES)]
    chunks = chunks or [b""]
    for i, chunk in enumerate(chunks):
        last = end_of_stream and i == len(chunks) - 1
        mutation = pb.BodyMutation(
            streamed_response=pb.StreamedBodyResponse(body=chunk, end_of_stream=last))
        answer = pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))
        yield (pb.ProcessingResponse(request_body=answer) if phase == "request"
               else pb.ProcessingResponse(response_body=answer))


def immediate(exc: RequestError) -> pb.ProcessingResponse:
    """An error answered by Envoy itself: status + OpenAI-style JSON body and the error's own
    headers; a 429 (shed) also carries `Retry-After`."""
    headers = {"content-type": "application/json", **exc.headers}
    if exc.status == 429:
        headers["retry-after"] = str(RETRY_AFTER_S)
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=exc.status),
        headers=pb.HeaderMutation(set_headers=_set_headers(headers)),
        body=json.dumps(exc.body()).encode(),
        details=f"llmd_epp_{exc.status}",
    ))
