"""`llmd up --epp-config-file` with a config that names its endpoints (llm-d v1's
`dataLayer.discovery.endpoints` with `file-discovery`): the stack fronts those servers, one per
engine here (two `llmd sim` processes the test starts), and starts no simulator."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import openai
import pytest
import yaml
from _cli import llmd_process, read_until
from test_up_fronting import MODEL, _free_port, child_cmdlines, sim_process

from llmd.errors import ConfigError
from llmd.gateway import StackSpec
from llmd.sim import SERVED_BY_HEADER


def _config(tmp_path: Path, servers: dict[str, str], **discovery: object) -> Path:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(yaml.safe_dump({"endpoints": [
        {"name": f"{engine}-0", "namespace": "local", "address": where.split(":")[0],
         "port": int(where.split(":")[1]),
         "labels": {"llm-d.ai/engine-type": engine, "llm-d.ai/role": "both"}}
        for engine, where in servers.items()]}))
    config = tmp_path / "epp.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "llm-d.ai/v1", "kind": "EndpointPickerConfig",
        "plugins": [{"type": "file-discovery",
                     "parameters": {"path": str(endpoints), **discovery}},
                    {"type": "queue-scorer"}, {"type": "max-score-picker"}],
        "dataLayer": {"discovery": {"endpoints": {"pluginRef": "file-discovery"}}},
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "queue-scorer"}, {"pluginRef": "max-score-picker"}]}]}))
    return config


async def test_a_config_that_names_its_endpoints_is_fronted(tmp_path: Path) -> None:
    async with sim_process("vllm") as vllm, sim_process("sglang") as sglang:
        config = _config(tmp_path, {"vllm": vllm[1], "sglang": sglang[1]})
        spec = StackSpec(epp_config_file=config)
        assert spec.external == (f"http://{vllm[1]},engine=vllm,role=both",
                                 f"http://{sglang[1]},engine=sglang,role=both")
        assert spec.epp_config_file is None
        assert "discovery" not in (spec.epp_config_text or "")  # nor its plugin
        async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                                "--endpoint-wait-s", "10",
                                "--epp-config-file", str(config)) as up:
            out = (await read_until(up, r"Ctrl-C stops every process", 60))[1]
            gateway = re.search(r"gateway\S*: (http://\S+)", out)
            assert gateway, out
            assert not any(" sim " in c for c in child_cmdlines(up.pid))
            client = openai.AsyncOpenAI(base_url=gateway[1] + "/v1", api_key="none")
            served = set()
            for i in range(30):
                raw = await client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"request {i}", max_tokens=2)
                served.add(raw.headers[SERVED_BY_HEADER])
            assert served == {vllm[1], sglang[1]}
            await client.close()
            up.send_signal(signal.SIGINT)
            assert await up.wait() == 0


def test_endpoints_from_both_the_config_and_flags_is_an_error(tmp_path: Path) -> None:
    config = _config(tmp_path, {"vllm": "127.0.0.1:8001"})
    with pytest.raises(ConfigError, match="not both"):
        StackSpec(epp_config_file=config, external=("127.0.0.1:8002",))


@pytest.mark.parametrize("watch", [True, False])
def test_a_watched_endpoints_file_is_named_as_read_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, watch: bool) -> None:
    config = _config(tmp_path, {"vllm": "127.0.0.1:8001"}, watchFile=watch)
    with caplog.at_level("WARNING", logger="llmd.gateway._discovered"):
        spec = StackSpec(epp_config_file=config)
    assert spec.external == ("http://127.0.0.1:8001,engine=vllm,role=both",)
    warned = [r.getMessage() for r in caplog.records if "watchFile" in r.getMessage()]
    assert bool(warned) == watch, warned


async def test_an_unreachable_listed_server_is_an_error_naming_the_config(
        tmp_path: Path) -> None:
    """Its error names the config's endpoint list, not an --endpoint flag nobody typed."""
    port = _free_port()
    config = _config(tmp_path, {"sglang": f"127.0.0.1:{port}"})
    async with llmd_process("up", "--gateway-port", "0", "--base-port", "0",
                            "--endpoint-wait-s", "0.5", "--epp-config-file", str(config)) as proc:
        async with asyncio.timeout(30):
            out = (await proc.communicate())[0].decode()
    assert proc.returncode == 2, out
    assert (f"error: --epp-config-file {config}: dataLayer.discovery endpoint "
            f"'http://127.0.0.1:{port},engine=sglang,role=both': http://127.0.0.1:{port}"
            "/v1/models did not answer within 0.5 s") in out
    assert "--endpoint '" not in out and "Traceback" not in out
