"""Fuzzing through the gateway (FailOpen, so a picker failure would show as a bypass): hundreds
of malformed bodies and raw HTTP exchanges. No answer is a 5xx, the EPP never errs, no request
takes the FailOpen round robin (the picker cannot be bypassed), and every request a simulator
served went to one the picker named (client routing headers are stripped)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import aiohttp
from _fuzz import body_cases, raw_cases

from llmd.gateway import LocalStack, StackSpec
from llmd.sim import SERVED_BY_HEADER

MODEL = "llmd-sim"


async def _exchange(port: int, data: bytes, half_close: bool) -> bytes:
    """The response head to `data` (empty if the gateway closed without one). Envoy lingers
    before closing after an error (delayed close), so the head is read, not the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
            if half_close:
                writer.write_eof()
        async with asyncio.timeout(10):  # every exchange is answered or closed, never held
            while b"\r\n\r\n" not in got and (chunk := await reader.read(65536)):
                got += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return got


async def _stats(http: aiohttp.ClientSession, admin: str) -> dict[str, int]:
    async with http.get(admin + "/stats?format=json") as resp:
        return {s["name"]: int(s.get("value", 0)) for s in (await resp.json())["stats"]
                if "value" in s}


async def _epp_errors(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmd_epp_decisions_total{") and 'outcome="error"' in line)


async def test_malformed_requests_never_5xx_and_never_bypass_the_picker(engine: str) -> None:
    spec = StackSpec(engines=(engine, engine), model=MODEL, time_scale=0,
                     failure_mode="FailOpen")
    async with LocalStack(spec) as stack, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30)) as http:
        assert stack.gateway is not None and stack.epp is not None
        pool = {ep.address for ep in stack.endpoints}
        statuses: Counter[int] = Counter()
        bad: list[str] = []
        cases = body_cases(MODEL)
        for case in cases:
            async with http.post(stack.url + case.path, data=case.body,
                                 headers=dict(case.headers)) as resp:
                await resp.read()
                statuses[resp.status] += 1
                if resp.status >= 500:
                    bad.append(f"{case.name}: {resp.status} {(await resp.text())[:200]}")
                if resp.status == 200 and resp.headers.get(SERVED_BY_HEADER) not in pool:
                    bad.append(f"{case.name}: served by {resp.headers.get(SERVED_BY_HEADER)}")
        raw = raw_cases("gateway")
        for rcase in raw:
            answer = await _exchange(stack.gateway.port, rcase.data, rcase.half_close)
            if answer.startswith(b"HTTP/1."):
                status = int(answer.split(b" ", 2)[1])
                statuses[status] += 1
                if status >= 500:
                    bad.append(f"raw {rcase.name}: {answer[:200]!r}")
        await _picker_decides(http, stack, "x-gateway-destination-endpoint")
        stats = await _stats(http, stack.gateway.admin_url)
        errors = await _epp_errors(http, stack.epp.metrics_url)
    assert len(cases) + len(raw) >= 500
    assert not bad, "\n".join(bad)
    assert errors == 0
    assert stats.get("cluster.fallback.upstream_rq_total", 0) == 0  # no FailOpen bypass
    assert statuses[400] > 100 and statuses[200] > 10, statuses


async def _picker_decides(http: aiohttp.ClientSession, stack: LocalStack, header: str) -> None:
    """A client naming an endpoint (a pool member even) gets the picker's choice: a prompt the
    prefix index ties to one endpoint stays there whichever endpoint the header names."""
    body = {"model": MODEL, "prompt": f"{header} same prompt " * 30, "max_tokens": 2}
    served = Counter()
    for ep in stack.endpoints * 5:
        async with http.post(stack.url + "/v1/completions", headers={header: ep.address},
                             json=body) as resp:
            assert resp.status == 200
            served[resp.headers[SERVED_BY_HEADER]] += 1
    assert len(served) == 1, served
