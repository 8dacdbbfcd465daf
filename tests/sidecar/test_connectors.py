"""The connectors speak their engine adapter's P/D protocol: the leg fields they add are the
adapter's `pd.request_fields`, and no sidecar module spells those names itself."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from llmd.engines import ADAPTERS, get_adapter
from llmd.sidecar import HostPort, SidecarConfig
from llmd.sidecar.connectors import PdRequest, build_connector
from llmd.sidecar.upstream import LegResult

SIDECAR = Path(__file__).resolve().parents[2] / "src" / "llmd" / "sidecar"


class RecordingUpstream:
    """Records both legs' bodies; the prefill answers 200 with `prefill_payload`."""

    def __init__(self, prefill_payload: dict[str, Any]) -> None:
        self.prefill_payload = prefill_payload
        self.legs: dict[str, dict[str, Any]] = {}

    async def prefill(self, target: HostPort, path: str, payload: dict[str, Any],
                      headers: Any) -> LegResult:
        self.legs["prefill"] = payload
        return LegResult(200, self.prefill_payload, json.dumps(self.prefill_payload).encode(),
                         "application/json")

    async def stream_decode(self, request: Any, method: str, path: str, headers: Any,
                            data: bytes, **_: Any) -> web.StreamResponse:
        self.legs["decode"] = json.loads(data)
        return web.Response(status=200)


async def test_leg_fields_are_the_adapters(engine: str) -> None:
    adapter = get_adapter(engine)
    fields = adapter.pd.request_fields
    connector = build_connector(SidecarConfig(kv_connector=adapter.sidecar_connector))
    assert connector.name == adapter.sidecar_connector
    client = {"model": "m", "prompt": "hello", "max_tokens": 3, "stream": True}
    # A vLLM prefill answers the params its decode leg forwards; SGLang's answer is not read
    # for fields.
    upstream = RecordingUpstream({name: {"from": "prefill"} for name in fields})
    req = PdRequest(None, "/v1/completions", dict(client), CIMultiDict(),  # type: ignore[arg-type]
                    (HostPort("10.0.0.1", 8000),), upstream)  # type: ignore[arg-type]
    resp = await connector.run(req)
    assert resp.status == 200
    # The decode leg is the client's body plus exactly the adapter's fields ...
    decode = upstream.legs["decode"]
    assert set(decode) - set(client) == set(fields)
    assert {k: decode[k] for k in client} == client
    # ... and the prefill leg carries them too.
    assert set(fields) <= set(upstream.legs["prefill"])
    if adapter.pd.handoff == "bootstrap-room":
        host, _, room = fields
        assert decode[host] == "10.0.0.1"
        assert decode[room] == upstream.legs["prefill"][room]
    else:
        assert decode == {**client, fields[0]: {"from": "prefill"}}


def test_no_sidecar_module_spells_an_adapters_leg_field() -> None:
    names = {name for adapter in ADAPTERS.values() for name in adapter.pd.request_fields}
    found = []
    for path in SIDECAR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        exported = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                    for n in ast.walk(node.value)}  # `__all__` may name a function bootstrap_room
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in exported:
                found.append(f"{path.relative_to(SIDECAR)}:{node.lineno}: {node.value!r}")
    assert not found, "take the names from the engine adapter's pd.request_fields:\n" + \
        "\n".join(found)
