#!/usr/bin/env python3
"""The protocol work of one ext_proc exchange in pure-Python HTTP/2 (the `h2` package), server
side, in memory (no sockets, no event loop): what a hand-built ext_proc server would spend per
request before doing anything else, against grpcio's whole transport (docs/benchmarks.md,
"EPP cost per decision"). `h2` is not an llmd dependency:

    .venv/bin/pip install --target /tmp/h2lib h2
    PYTHONPATH=/tmp/h2lib .venv/bin/python bench/experiments/h2_exchange.py

One exchange is what Envoy's BUFFERED mode does: the stream's HEADERS and the headers message,
the answer (response HEADERS + an empty HeadersResponse), the body message with end of stream,
the decision and the trailers; the server also parses both messages with protobuf.
"""

from __future__ import annotations

import struct
import time

import h2.config
import h2.connection
import h2.events
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

_REQUEST_HEADERS = [(":method", "POST"), (":scheme", "http"), (":authority", "epp"),
                    (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
                    ("content-type", "application/grpc"), ("te", "trailers"),
                    ("grpc-timeout", "99999999S")]


def grpc_frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def _messages() -> tuple[bytes, bytes, bytes, bytes]:
    headers = [(":path", b"/v1/completions"), (":method", b"POST"), (":authority", b"gw"),
               ("content-type", b"application/json"), ("x-request-id", b"abc-123-def")]
    first = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in headers])))
    body = pb.ProcessingRequest(request_body=pb.HttpBody(
        body=b'{"model":"m","prompt":"' + b"the quick brown fox " * 30 + b'"}',
        end_of_stream=True))
    next_ = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
    decision = pb.ProcessingResponse(request_body=pb.BodyResponse(
        response=pb.CommonResponse(clear_route_cache=True)))
    return (grpc_frame(first.SerializeToString()), grpc_frame(body.SerializeToString()),
            grpc_frame(next_.SerializeToString()), grpc_frame(decision.SerializeToString()))


def _serve(server: h2.connection.H2Connection, wire: bytes) -> None:
    for event in server.receive_data(wire):
        if isinstance(event, h2.events.DataReceived):
            server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            pb.ProcessingRequest.FromString(event.data[5:])


def _client_reads(client: h2.connection.H2Connection, wire: bytes) -> None:
    for event in client.receive_data(wire):
        if isinstance(event, h2.events.DataReceived):
            client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)


def main(exchanges: int = 20_000) -> None:
    first, body, next_, decision = _messages()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, validate_inbound_headers=False, normalize_inbound_headers=False,
        validate_outbound_headers=False, normalize_outbound_headers=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    spent = 0.0
    for n in range(exchanges):
        stream = 1 + 2 * n
        client.send_headers(stream, _REQUEST_HEADERS)
        client.send_data(stream, first)
        wire = client.data_to_send()
        t0 = time.perf_counter()
        _serve(server, wire)
        server.send_headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
        server.send_data(stream, next_)
        out = server.data_to_send()
        spent += time.perf_counter() - t0
        _client_reads(client, out)
        client.send_data(stream, body, end_stream=True)
        wire = client.data_to_send()
        t0 = time.perf_counter()
        _serve(server, wire)
        server.send_data(stream, decision)
        server.send_headers(stream, [("grpc-status", "0")], end_stream=True)
        out = server.data_to_send()
        spent += time.perf_counter() - t0
        _client_reads(client, out)
    print(f"h2 server side, per ext_proc exchange: {spent / exchanges * 1e6:.1f} us "
          f"({exchanges} exchanges)")


if __name__ == "__main__":
    main()
