"""P/D scheduling through a real Envoy: the EPP's `x-prefiller-host-port` reaches the decode
backend for a long uncached prompt, not for a short or cached one (where the engine's decode role
can serve alone: vLLM), and a client-sent value never survives (neither through the EPP nor on
the FailOpen route that bypasses it).

The backends are tiny aiohttp echo servers, not `llmd sim`: the header is meant for the decode
pod's sidecar, which strips it before the engine, so only a backend that echoes its request
headers can show what the gateway forwarded. They serve a `/metrics` page in the `engine`
dialect so the EPP scrapes them as it scrapes engines.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from _gateway_stack import MODEL, run_epp, run_gateway
from aiohttp import web

from llmd.engines import get_adapter
from llmd.epp import PREFILLER_HEADER

PD_CONFIG = (Path(__file__).resolve().parents[2] / "examples" / "epp-pd.yaml").read_text()
LONG = "Summarise the following incident report for the on-call engineer. " * 12  # ~200 tokens
SHORT = "hi"
FORGED = {PREFILLER_HEADER: "192.0.2.66:8000"}  # a client trying to pick the prefill target
MODES = [pytest.param("buffered", id="buffered"), pytest.param("full-duplex", id="full-duplex")]


@dataclass(frozen=True)
class Echo:
    id: str
    role: str
    engine: str

    @property
    def flag(self) -> str:
        return f"{self.id},engine={self.engine},role={self.role}"


@contextlib.asynccontextmanager
async def _echo(engine: str, role: str) -> AsyncIterator[Echo]:
    """A backend that answers completions with the prefill header it received."""
    names = get_adapter(engine).metric_names
    page = f"{names.waiting} 0\n{names.running} 0\n{names.kv_usage} 0\n"
    sock = socket.create_server(("127.0.0.1", 0))
    echo = Echo(f"127.0.0.1:{sock.getsockname()[1]}", role, engine)

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"served_by": echo.id,
                                  "prefiller": request.headers.get(PREFILLER_HEADER)})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=page)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield echo
    finally:
        await runner.cleanup()


async def _ask(http: aiohttp.ClientSession, url: str, prompt: str,
               headers: dict[str, str] | None = None) -> dict[str, str | None]:
    async with http.post(url + "/v1/completions", headers=headers,
                         json={"model": MODEL, "prompt": prompt, "max_tokens": 1}) as resp:
        assert resp.status == 200
        return json.loads(await resp.text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", MODES)
async def test_prefill_endpoint_reaches_the_decode_backend_only_when_disaggregated(
    engine: str, http: aiohttp.ClientSession, mode: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        decode = [await stack.enter_async_context(_echo(engine, "decode")) for _ in range(2)]
        prefill = [await stack.enter_async_context(_echo(engine, "prefill")) for _ in range(2)]
        epp = await stack.enter_async_context(
            run_epp([e.flag for e in decode + prefill], config_text=PD_CONFIG))
        gw = await stack.enter_async_context(run_gateway(epp=epp.address, ext_proc_mode=mode))

        first = await _ask(http, gw.url, LONG, FORGED)
        assert first["served_by"] in {e.id for e in decode}
        assert first["prefiller"] in {e.id for e in prefill}  # the EPP's, not the client's

        # Cached or short prompts stay on decode, unless the engine's decode role cannot serve
        # a request alone (SGLang decode mode): then every request gets a prefill endpoint.
        alone = get_adapter(engine).pd.decode_alone
        again = await _ask(http, gw.url, LONG, FORGED)  # now cached on that decode endpoint
        assert again["served_by"] == first["served_by"]
        assert (again["prefiller"] is None) == alone
        assert alone or again["prefiller"] == first["prefiller"]  # the prefix-cached prefill

        short = await _ask(http, gw.url, SHORT, FORGED)
        assert short["served_by"] in {e.id for e in decode}
        assert short["prefiller"] is None if alone else short["prefiller"] in {
            e.id for e in prefill}


async def test_fail_open_route_strips_a_client_prefill_target(
    engine: str, http: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:  # a port nothing listens on: the EPP is down
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    async with _echo(engine, "decode") as backend, \
            run_gateway(epp=dead, failure_mode="FailOpen",
                        fallback_endpoints=(backend.id,)) as gw:
        answer = await _ask(http, gw.url, LONG, FORGED)
    assert answer == {"served_by": backend.id, "prefiller": None}
