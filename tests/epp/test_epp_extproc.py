"""The ext_proc servicer without Envoy: stream lifetimes per body mode."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from llmd.epp import (
    PLUGINS,
    RESPONSE_METADATA_NAMESPACE,
    SESSION_HEADER,
    Datastore,
    Director,
    load_config,
    parse_endpoint_flag,
)
from llmd.epp.extproc import ExtProcServicer
from llmd.epp.plugins import NoParams
from llmd.epp.plugins.registry import SCORER

BUFFERED = mode_pb2.ProcessingMode.BUFFERED
DUPLEX = mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED


def _servicer(config: str | None = None) -> ExtProcServicer:
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag("10.0.0.1:8000")])
    return ExtProcServicer(Director(store, load_config(text=config)), max_body_bytes=1 << 20)


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


SESSION_CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: session-affinity-scorer
"""
TOKEN = base64.b64encode(b"10.0.0.1:8000").decode()


def _echoed(metadata: struct_pb2.Struct) -> dict[str, str]:
    if RESPONSE_METADATA_NAMESPACE not in metadata.fields:
        return {}
    found = metadata.fields[RESPONSE_METADATA_NAMESPACE].struct_value.fields
    return {k: v.string_value for k, v in found.items()}


@pytest.mark.parametrize(("config", "expected"), [
    pytest.param(SESSION_CONFIG, {SESSION_HEADER: TOKEN}, id="session-scorer"),
    pytest.param(None, {}, id="default-config"),
])
async def test_buffered_decision_carries_the_token_in_metadata(
        config: str | None, expected: dict[str, str]) -> None:
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()

    async def messages() -> AsyncIterator[pb.ProcessingRequest]:
        yield _headers()
        yield pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))

    responses = [r async for r in _servicer(config).Process(messages(), None)]
    assert _echoed(responses[1].dynamic_metadata) == expected
    # Only the EPP's metadata names it: no request header carries the token upstream.
    mutation = responses[1].request_body.response.header_mutation.set_headers
    assert SESSION_HEADER not in {h.header.key for h in mutation}


@pytest.mark.parametrize(("config", "expected"), [
    pytest.param(SESSION_CONFIG, [(SESSION_HEADER, TOKEN)], id="session-scorer"),
    pytest.param(None, [], id="default-config"),
])
async def test_full_duplex_sets_the_token_on_the_response_headers(
        config: str | None, expected: list[tuple[str, str]]) -> None:
    """As llm-d's EPP does, so the token reaches clients behind any gateway in this mode."""
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()
    duplex = pb.ProtocolConfiguration(request_body_mode=DUPLEX, response_body_mode=DUPLEX)
    headers = _headers()
    headers.protocol_config.CopyFrom(duplex)

    async def messages() -> AsyncIterator[pb.ProcessingRequest]:
        yield headers
        yield pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))
        yield pb.ProcessingRequest(response_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[
                base_pb2.HeaderValue(key=":status", raw_value=b"200")])))

    responses = [r async for r in _servicer(config).Process(messages(), None)]
    answer = responses[-1]
    assert answer.WhichOneof("response") == "response_headers"
    mutation = answer.response_headers.response.header_mutation.set_headers
    assert [(h.header.key, h.header.raw_value.decode()) for h in mutation] == expected


class _BrokenScorer:
    """A scorer with a bug: every call raises."""

    type = "broken-scorer"
    produces = consumes = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: object, pool: object) -> dict[str, float]:
        raise KeyError("a bug")


@pytest.mark.parametrize("mode", [BUFFERED, DUPLEX], ids=["buffered", "full-duplex"])
async def test_a_plugin_bug_is_a_json_500_not_a_grpc_error(mode: int) -> None:
    """A gRPC error would let FailOpen route the request round robin, unscheduled."""
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag("10.0.0.1:8000")])
    registry = PLUGINS.extend(SCORER.table(_BrokenScorer))
    config = load_config(text="apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
                         "plugins:\n- type: broken-scorer\n", registry=registry)
    servicer = ExtProcServicer(Director(store, config), max_body_bytes=1 << 20)
    headers = _headers()
    headers.protocol_config.request_body_mode = mode
    body = json.dumps({"model": "m", "prompt": "hello"}).encode()

    async def messages() -> AsyncIterator[pb.ProcessingRequest]:
        yield headers
        yield pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))

    responses = [r async for r in servicer.Process(messages(), None)]
    last = responses[-1].immediate_response
    assert last.status.code == 500
    assert json.loads(last.body)["error"]["message"] == "internal error in the endpoint picker"
