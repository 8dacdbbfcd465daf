"""The ext_proc servicer without Envoy: stream lifetimes per body mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from llmd.epp import Datastore, Director, load_config, parse_endpoint_flag
from llmd.epp.extproc import ExtProcServicer

BUFFERED = mode_pb2.ProcessingMode.BUFFERED


def _servicer() -> ExtProcServicer:
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag("10.0.0.1:8000")])
    return ExtProcServicer(Director(store, load_config()), max_body_bytes=1 << 20)


def _headers() -> pb.ProcessingRequest:
    headers = base_pb2.HeaderMap(headers=[
        base_pb2.HeaderValue(key=":path", raw_value=b"/v1/completions"),
        base_pb2.HeaderValue(key=":method", raw_value=b"POST")])
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=headers),
        protocol_config=pb.ProtocolConfiguration(request_body_mode=BUFFERED))


async def test_buffered_stream_closes_after_the_decision() -> None:
    consumed: list[str] = []
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()

    async def messages() -> AsyncIterator[pb.ProcessingRequest]:
        for name, msg in [("headers", _headers()),
                          ("body", pb.ProcessingRequest(request_body=pb.HttpBody(
                              body=body, end_of_stream=True))),
                          ("never", pb.ProcessingRequest(request_trailers=pb.HttpTrailers()))]:
            consumed.append(name)
            yield msg

    responses = [r async for r in _servicer().Process(messages(), None)]
    assert [r.WhichOneof("response") for r in responses] == ["request_headers", "request_body"]
    assert consumed == ["headers", "body"]  # returned without waiting for Envoy's end
    mutation = responses[1].request_body.response.header_mutation.set_headers
    assert [h.header.raw_value for h in mutation
            if h.header.key == "x-gateway-destination-endpoint"] == [b"10.0.0.1:8000"]
