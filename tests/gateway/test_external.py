"""`llmd up --endpoint` values and the P/D checks over fronted servers (plain data)."""

from __future__ import annotations

import pytest

from llmd.engines import ServerIdentity
from llmd.errors import ConfigError
from llmd.gateway._external import FrontedServer, ServerFlag, parse_server_flag, pd_side_ports


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("http://127.0.0.1:8001", ServerFlag("http://127.0.0.1:8001", "127.0.0.1", 8001),
                 id="url"),
    pytest.param("gpu-box:30000/,engine=sglang", None, id="host-port-slash-is-not-url"),
    pytest.param("http://gpu-box:30000/,engine=sglang,role=prefill,model=Qwen/Qwen3-0.6B,"
                 "zone=a",
                 ServerFlag("http://gpu-box:30000/,engine=sglang,role=prefill,"
                            "model=Qwen/Qwen3-0.6B,zone=a", "gpu-box", 30000, "sglang",
                            "prefill", "Qwen/Qwen3-0.6B", (("zone", "a"),)), id="everything"),
    pytest.param("[::1]:8000,engine=vllm",
                 ServerFlag("[::1]:8000,engine=vllm", "::1", 8000, "vllm"), id="ipv6"),
])
def test_parse(text: str, expected: ServerFlag | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match="port '30000/' is not a number"):
            parse_server_flag(text)
        return
    flag = parse_server_flag(text)
    assert flag == expected
    assert flag.url == ("http://[::1]:8000" if flag.host == "::1"
                        else f"http://{flag.host}:{flag.port}")


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("nohost", "'nohost' is not http://HOST:PORT or HOST:PORT (expected URL[,engine",
                 id="no-port"),
    pytest.param("http://h", "'http://h' is not http://HOST:PORT", id="url-without-port"),
    pytest.param("https://h:443", "scheme 'https' is not supported", id="https"),
    pytest.param("http://h:8000/v1", "'/v1' after the address: give the server's root URL",
                 id="api-path"),
    pytest.param("h:99999", "port '99999' is not a number from 1 to 65535", id="port-range"),
    pytest.param("h:1,engine=tgi", "engine 'tgi' is not one of vllm, sglang", id="engine"),
    pytest.param("h:1,role=encode", "role 'encode' is not one of decode, prefill, both",
                 id="role"),
    pytest.param("h:1,vllm", "'vllm' is not key=value", id="bare-word"),
    pytest.param("h:1,model=", "'model=' is not key=value", id="empty-model"),
    pytest.param("h:1,engine=vllm,engine=sglang", "engine is given twice", id="twice"),
])
def test_parse_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_server_flag(text)
    assert str(err.value).startswith(f"--endpoint {text!r}: ") and message in str(err.value)


def server(i: int, engine: str, role: str | None, side_port: int | None = None,
           given_role: str | None = None) -> FrontedServer:
    flag = ServerFlag(f"10.0.0.{i}:8000", f"10.0.0.{i}", 8000,
                      role=given_role)  # type: ignore[arg-type]
    identity = ServerIdentity(engine, ("test",), ("m",), role,  # type: ignore[arg-type]
                              side_port)
    return FrontedServer(f"server-{i}", flag, f"10.0.0.{i}", identity, "m")


def test_pd_side_ports_come_from_the_prefill_servers_or_the_flag() -> None:
    pool = [server(1, "sglang", "prefill", 9001), server(2, "sglang", "decode"),
            server(3, "vllm", None, given_role="decode")]
    assert pd_side_ports(pool, 8998) == {"sglang": 9001}
    pool[0] = server(1, "sglang", "prefill")
    assert pd_side_ports(pool, 8998) == {"sglang": 8998}
    assert server(3, "vllm", None, given_role="decode").epp_flag("127.0.0.1:9", "decode") == (
        "127.0.0.1:9,engine=vllm,role=decode")


@pytest.mark.parametrize(("pool", "message"), [
    pytest.param([server(1, "vllm", None)], "with --pd every server needs role=prefill or "
                 "role=decode (http://10.0.0.1:8000 reports none)", id="no-role"),
    pytest.param([server(1, "sglang", "both")], "reports role both", id="both"),
    pytest.param([server(1, "vllm", "prefill")], "no server has role=decode", id="no-decode"),
    pytest.param([server(1, "sglang", "decode"), server(2, "vllm", "prefill")],
                 "the sglang decode servers have no sglang prefill server", id="sglang-alone"),
    pytest.param([server(1, "sglang", "decode"), server(2, "sglang", "prefill", 9001),
                  server(3, "sglang", "prefill", 9002)],
                 "listen on different bootstrap ports (9001, 9002)", id="two-bootstrap-ports"),
])
def test_pd_pool_errors(pool: list[FrontedServer], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        pd_side_ports(pool, 8998)
    assert message in str(err.value)
