"""Session affinity end to end: real Envoy, real `llmd epp` (static discovery), real simulators,
in both ext_proc modes. The response names its endpoint in `x-session-token` (llm-d's token:
base64 of the endpoint; `ip:port` for static endpoints) and sending it back sticks to that
endpoint even where prefix affinity points elsewhere.
"""

from __future__ import annotations

import base64

import aiohttp
import openai
import pytest
from _gateway_stack import MODEL, SERVED_BY

from llmd.epp import SESSION_HEADER
from llmd.gateway import LocalStack, StackSpec

MODES = [pytest.param("buffered", id="buffered"), pytest.param("full-duplex", id="full-duplex")]

# Session affinity outweighs a full prefix hit (1.0 × 3 against 1.0 × 1).
CONFIG = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefix-cache-scorer
- type: session-affinity-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-scorer
    weight: 1
  - pluginRef: session-affinity-scorer
    weight: 3
"""

# Declares the scorer without using it in a profile: llm-d still echoes the token.
UNREFERENCED = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: session-affinity-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
"""

NO_SESSION = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
"""

LONG = "The llmd gateway keeps a conversation on one endpoint while its cache is warm. " * 8


def _token(endpoint: str) -> str:
    return base64.b64encode(endpoint.encode()).decode()


def _client(stack: LocalStack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key="none", max_retries=0)


async def _complete(client: openai.AsyncOpenAI, prompt: str,
                    token: str | None = None) -> tuple[str, list[str]]:
    """(endpoint that served it, every x-session-token value on the response)."""
    headers = {SESSION_HEADER: token} if token is not None else None
    raw = await client.completions.with_raw_response.create(
        model=MODEL, prompt=prompt, max_tokens=2, extra_headers=headers)
    assert raw.parse().choices[0].text
    return raw.headers[SERVED_BY], raw.headers.get_list(SESSION_HEADER)


def _spec(engine: str, mode: str, config: str, sims: int = 2) -> StackSpec:
    return StackSpec(engines=(engine,) * sims, model=MODEL, time_scale=0, ext_proc_mode=mode,
                     epp_config_text=config)


@pytest.mark.parametrize("mode", MODES)
async def test_session_token_round_trip(engine: str, mode: str) -> None:
    """One stack per mode and dialect (starting one is the slow part), several checks."""
    async with LocalStack(_spec(engine, mode, CONFIG)) as stack, _client(stack) as client:
        fleet = [ep.address for ep in stack.endpoints]

        # The first response names the endpoint that served it, exactly once.
        home, tokens = await _complete(client, LONG + "first turn")
        assert tokens == [_token(home)]
        # Without a token the long shared prefix keeps going home (the control) ...
        assert await _complete(client, LONG + "second turn") == (home, [_token(home)])
        # ... but a session on the other endpoint outweighs that prefix hit.
        other = next(e for e in fleet if e != home)
        for turn in range(3):
            assert await _complete(client, LONG + f"turn {turn}", _token(other)) \
                == (other, [_token(other)])
        # Streaming responses carry it too (headers come before the first chunk).
        async with client.chat.completions.with_streaming_response.create(
                model=MODEL, messages=[{"role": "user", "content": LONG}], max_tokens=2,
                stream=True, extra_headers={SESSION_HEADER: _token(home)}) as streamed:
            assert streamed.headers[SERVED_BY] == home
            assert streamed.headers.get_list(SESSION_HEADER) == [_token(home)]
            assert [line async for line in streamed.iter_lines() if line]

        # Bogus or foreign tokens: routed as if none came (no error), and the response names
        # where the request really went.
        foreign = ["%%% not base64 %%%", _token("10.99.99.99:8000"),
                   _token("llm/qwen-decode-0"), base64.b64encode(b"\xff\xfe").decode(), ""]
        for token in foreign:
            served, tokens = await _complete(client, "hello " + token, token)
            assert served in fleet and tokens == [_token(served)], token

        async with aiohttp.ClientSession(stack.url,
                                         timeout=aiohttp.ClientTimeout(total=10)) as http:
            # A client cannot pick the endpoint or the echoed token: the token comes from
            # dynamic metadata only the EPP writes, and routing headers are stripped. A new
            # conversation's prefix sits on one endpoint only, which keeps getting it.
            fresh = "Another conversation entirely, about envoy and its filters. " * 8
            pinned, _ = await _complete(client, fresh)
            for victim in fleet:
                async with http.post("/v1/completions", json={
                        "model": MODEL, "prompt": fresh + "more", "max_tokens": 2},
                        headers={"x-gateway-destination-endpoint": victim,
                                 "x-llmd-session-token": _token(victim),
                                 "x-envoy-original-dst-host": victim}) as resp:
                    assert resp.status == 200, await resp.text()
                    assert resp.headers[SERVED_BY] == pinned  # the prefix decided
                    assert resp.headers.getall(SESSION_HEADER) == [_token(pinned)]
            # A request the EPP rejects never reached an endpoint: no token.
            async with http.post("/v1/completions", data=b"{oops",
                                 headers={"content-type": "application/json"}) as resp:
                assert resp.status == 400 and SESSION_HEADER not in resp.headers
            # Body-less requests go to a random endpoint and are echoed as well (llm-d).
            async with http.get("/v1/models") as resp:
                assert resp.status == 200
                assert resp.headers.getall(SESSION_HEADER) == [_token(resp.headers[SERVED_BY])]


@pytest.mark.parametrize(("mode", "config", "echoed"), [
    pytest.param("buffered", UNREFERENCED, True, id="buffered-declared-not-in-a-profile"),
    pytest.param("buffered", NO_SESSION, False, id="buffered-not-configured"),
    pytest.param("full-duplex", NO_SESSION, False, id="full-duplex-not-configured"),
])
async def test_echo_follows_whether_the_scorer_is_configured(
        engine: str, mode: str, config: str, echoed: bool) -> None:
    async with LocalStack(_spec(engine, mode, config, sims=1)) as stack, \
            _client(stack) as client:
        served, tokens = await _complete(client, "hi")
        assert tokens == ([_token(served)] if echoed else [])
