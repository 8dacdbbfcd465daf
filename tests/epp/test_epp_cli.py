"""`llmd epp` as a process: listening lines, clean SIGTERM, config errors with exit code 2."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

from llmd.epp.plugins import PLUGINS

LLMD = [str(Path(sys.executable).parent / "llmd")]


async def test_epp_prints_listening_lines_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "epp", "--endpoint", "127.0.0.1:1,engine=sglang", "--grpc-port", "0",
        "--grpc-health-port", "0", "--metrics-port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = []
        async with asyncio.timeout(20):
            while len(lines) < 3:
                line = (await proc.stdout.readline()).decode()
                assert line, "llmd epp exited before listening"
                lines.append(line.strip())
        assert [re.sub(r":\d+", ":PORT", x) for x in lines] == [
            "listening on 127.0.0.1:PORT (ext_proc)",
            "listening on 127.0.0.1:PORT (grpc health)",
            "listening on 127.0.0.1:PORT (metrics)",
        ]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_epp_config_error_exits_2_with_the_message(tmp_path: Path) -> None:
    bad = tmp_path / "epp.yaml"
    bad.write_text("apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n"
                   "plugins:\n- type: queue-scorrer\n")
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "epp", "--config-file", str(bad), "--grpc-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert (f"{bad}: plugins[0].type: 'queue-scorrer' is not a plugin type "
            "(did you mean 'queue-scorer'?)") in err.decode()


async def test_list_plugins_names_every_type_with_defaults() -> None:
    proc = await asyncio.create_subprocess_exec(
        *LLMD, "epp", "--list-plugins", stdout=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    lines = out.decode().splitlines()
    assert proc.returncode == 0 and len(lines) == len(PLUGINS)
    # type, kinds (main one first), parameters with defaults, data keys produced and consumed
    assert any(line.split() == ["load-aware-scorer", "scorer", "threshold=128"] for line in lines)
    assert any(line.split()[:2] == ["no-hit-lru-scorer", "scorer,pre-request-hook,producer-refs"]
               and line.endswith("consumes: prefix-match") for line in lines)
