"""Static discovery from flags and files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmd.epp import StaticDiscovery, load_endpoints_file, parse_endpoint_flag
from llmd.errors import ConfigError


@pytest.mark.parametrize(("flag", "address", "port", "labels"), [
    pytest.param("10.0.0.1:8000", "10.0.0.1", 8000, {}, id="plain"),
    pytest.param("10.0.0.1:8000,engine=sglang,role=decode", "10.0.0.1", 8000,
                 {"llm-d.ai/engine-type": "sglang", "llm-d.ai/role": "decode"}, id="shorthands"),
    pytest.param("[::1]:9000,zone=a", "::1", 9000, {"zone": "a"}, id="ipv6-and-label"),
])
def test_parse_endpoint_flag(flag: str, address: str, port: int, labels: dict[str, str]) -> None:
    spec = parse_endpoint_flag(flag)
    assert (spec.address, spec.port, dict(spec.labels)) == (address, port, labels)


@pytest.mark.parametrize(("flag", "message"), [
    pytest.param("10.0.0.1", "expected ip:port", id="no-port"),
    pytest.param("10.0.0.1:http", "port 'http' is not a number", id="bad-port"),
    pytest.param("10.0.0.1:80,engine=trt", "engine 'trt' is not one of vllm, sglang", id="engine"),
    pytest.param("10.0.0.1:80,role=x", "role 'x' is not one of", id="role"),
    pytest.param("10.0.0.1:80,novalue", "'novalue' is not key=value", id="not-kv"),
])
def test_bad_endpoint_flags(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_endpoint_flag(flag)


def test_endpoints_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text("endpoints:\n- {address: 10.0.0.1, port: 8000, labels: "
                    "{llm-d.ai/engine-type: sglang}}\n- {address: 10.0.0.2, port: 8000}\n")
    specs = load_endpoints_file(path)
    assert [s.id for s in specs] == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert specs[0].engine == "sglang" and specs[1].engine == "vllm"
    path.write_text("endpoints:\n- {address: 10.0.0.1, prot: 8000}\n")
    with pytest.raises(ConfigError) as err:
        load_endpoints_file(path)
    assert f"{path}: endpoints[0].prot: unknown field" in str(err.value)


async def test_static_discovery_yields_once_until_stop() -> None:
    specs = [parse_endpoint_flag("10.0.0.1:1")]
    stop = asyncio.Event()
    seen = []

    async def consume() -> None:
        async for update in StaticDiscovery(specs).updates(stop):
            seen.append(list(update))
            stop.set()

    async with asyncio.timeout(5):
        await consume()
    assert seen == [specs]
    with pytest.raises(ConfigError, match="listed twice"):
        StaticDiscovery(specs * 2)
