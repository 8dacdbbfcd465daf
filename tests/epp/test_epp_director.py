"""Parsing, admission and scheduling of one request, without gRPC."""

from __future__ import annotations

import json

import pytest

from llmd.engines import EndpointMetrics
from llmd.epp import Datastore, Director, load_config, parse_endpoint_flag
from llmd.errors import BadRequestError, NoEndpointError, RequestShedError

CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: prefix-cache-scorer
objectives:
- {name: batch, priority: -1}
"""


def _director(waiting: tuple[int, ...] = (0, 0)) -> Director:
    store = Datastore()
    specs = [parse_endpoint_flag(f"10.0.0.1:{8000 + i}") for i in range(len(waiting))]
    store.set_endpoints(specs)
    for spec, w in zip(specs, waiting, strict=True):
        store.update_metrics(spec.id, EndpointMetrics(waiting=w))
    return Director(store, load_config(text=CONFIG))


def _body(**fields: object) -> bytes:
    return json.dumps({"model": "m", **fields}).encode()


def test_shortest_queue_wins_and_chat_is_parsed() -> None:
    director = _director((5, 0))
    first = director.decide("r1", "/v1/completions", {}, _body(prompt="p" * 500))
    assert first.endpoint == "10.0.0.1:8001"
    director.after_decision(first)
    chat = director.decide("r2", "/v1/chat/completions", {},
                           _body(messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chat.request.stream and chat.request.prompt.startswith('[{"role":"user"')


@pytest.mark.parametrize(("body", "message"), [
    pytest.param(b"\xff\xfe", "not valid JSON", id="binary"),
    pytest.param(b'"just a string"', "must be a JSON object", id="string"),
    pytest.param(_body(prompt=3), "'prompt' must be a string", id="prompt-type"),
    pytest.param(_body(prompt="x", stream="yes"), "'stream' must be a boolean", id="stream"),
    pytest.param(_body(messages=[]), "'messages' must be a non-empty list", id="no-messages"),
    pytest.param(json.dumps({"model": 7, "prompt": "x"}).encode(), "'model' is required",
                 id="model-type"),
])
def test_malformed_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        _director().decide("r", "/v1/completions", {}, body)


LONE = '"x\\ud800y"'  # JSON text for a string holding a lone UTF-16 surrogate


@pytest.mark.parametrize(("body", "param"), [
    pytest.param(f'{{"model": "m", "prompt": {LONE}}}', "prompt", id="prompt"),
    pytest.param(f'{{"model": "m", "prompt": ["a", {LONE}]}}', "prompt[1]", id="prompt-list"),
    pytest.param(f'{{"model": {LONE}, "prompt": "x"}}', "model", id="model"),
    pytest.param(f'{{"model": "m", "prompt": "x", "cache_salt": {LONE}}}', "cache_salt",
                 id="cache-salt"),
    pytest.param(f'{{"model": "m", "messages": [{{"role": "user", "content": {LONE}}}]}}',
                 "messages[0].content", id="content"),
    pytest.param(f'{{"model": "m", "messages": [{{"role": {LONE}, "content": "x"}}]}}',
                 "messages[0].role", id="role"),
    pytest.param(f'{{"model": "m", "input": [{LONE}]}}', "input[0]", id="input"),
    pytest.param(f'{{"model": "m", "prompt": "x", "user": {LONE}}}', "user",
                 id="a-field-the-epp-never-reads"),
])
def test_lone_surrogates_are_400_naming_the_field(body: str, param: str) -> None:
    with pytest.raises(BadRequestError, match="lone UTF-16 surrogate") as caught:
        _director().decide("r", "/v1/completions", {}, body.encode())
    assert caught.value.param == param


def test_a_surrogate_pair_is_one_character_and_routes() -> None:
    body = b'{"model": "m", "prompt": "smile \\ud83d\\ude00"}'
    assert _director().decide("r", "/v1/completions", {}, body).request.prompt == "smile \U0001f600"


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_400(depth: int) -> None:
    body = b'{"model": "m", "prompt": "x", "extra": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(BadRequestError, match="more than 512 levels deep"):
        _director().decide("r", "/v1/completions", {}, body)


def test_empty_pool_is_503_and_headers_only_goes_anywhere() -> None:
    with pytest.raises(NoEndpointError):
        _director(()).decide("r", "/v1/completions", {}, _body(prompt="x"))
    assert _director((0,)).decide("r", "/v1/models", {}, None).endpoint == "10.0.0.1:8000"


@pytest.mark.parametrize("header", ["x-gateway-inference-objective",
                                    "x-llm-d-inference-objective"])
def test_sheddable_is_429_only_when_saturated(header: str) -> None:
    headers = {header: "batch"}  # GIE's header and llm-d v1's
    assert _director((0, 0)).decide("r", "/", headers, _body(prompt="x"))
    with pytest.raises(RequestShedError, match="saturated"):
        _director((9, 9)).decide("r", "/", headers, _body(prompt="x"))
    assert _director((9, 9)).decide("r", "/", {}, _body(prompt="x"))  # priority 0: served


@pytest.mark.parametrize(("plugins", "echoed"), [
    pytest.param("- type: queue-scorer\n- type: session-affinity-scorer\n"
                 "schedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: queue-scorer\n",
                 True, id="declared-but-in-no-profile"),
    pytest.param("- type: session-affinity-scorer\n", True, id="in-the-implicit-profile"),
    pytest.param("- type: queue-scorer\n", False, id="not-configured"),
])
def test_session_token_is_echoed_when_the_scorer_is_configured(plugins: str,
                                                               echoed: bool) -> None:
    """As llm-d: every configured plugin sees the response, whichever profile uses it."""
    store = Datastore()
    store.set_endpoints([parse_endpoint_flag("10.0.0.1:8000")])
    head = "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\nplugins:\n"
    director = Director(store, load_config(text=head + plugins))
    token = {"x-session-token": "MTAuMC4wLjE6ODAwMA=="} if echoed else {}  # 10.0.0.1:8000
    routed = director.decide("r1", "/v1/completions", {}, _body(prompt="hi"))
    assert dict(routed.response_headers) == token
    bodiless = director.decide("r2", "/v1/models", {}, None)
    assert dict(bodiless.response_headers) == token
