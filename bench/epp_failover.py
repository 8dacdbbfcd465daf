#!/usr/bin/env python3
"""An EPP replica SIGKILLed under load, through the real Envoy, for each way of configuring Envoy
over several replicas: what is lost, and how often the pool's failure mode is taken.

One `LocalStack` (2 vLLM- and 2 SGLang-dialect simulators, `--replicas` EPP replicas, FailClose)
is shared by every variant; per variant an Envoy of its own is started over the same replicas
with `render_bootstrap`'s config, less what the variant leaves out:

- `spread`: the `epp` cluster lists every replica (round robin per ext_proc stream), with active
  gRPC health checks and outlier detection, and nothing else;
- `grpc-retry`: also ext_proc's `grpc_service.retry_policy` (retry a refused or reset stream on
  another host);
- `failover`: also the failover pass (a request whose ext_proc stream failed re-enters the
  gateway once, through an internal listener, and is decided by another replica) without the
  gRPC retry;
- `llmd`: what llmd renders: all of the above.

Per variant `--requests` non-streaming completions at concurrency `--concurrency` go through
that Envoy; when `--kill-at` of them have completed, replica 0 is SIGKILLed (the stack's
supervisor restarts it; the next variant starts once Envoy sees both healthy). Counted: errors
(any non-200 or failed connection), FailClose answers (JSON 503 "the endpoint picker is
unavailable"), and Envoy's own counters (ext_proc streams failed and let through to the failure
route, gRPC retries, failover passes, health-check failures, outlier ejections), how long after
the kill Envoy counted the replica unhealthy (`membership_healthy`, polled every 20 ms), and how
long after its restarted process was ready it was healthy again.

    .venv/bin/python bench/epp_failover.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from llmd.gateway import (
    EppProcess,
    GatewaySpec,
    LocalStack,
    StackSpec,
    find_envoy,
    render_bootstrap,
)

MODEL = "llmd-sim"
VARIANTS = ("spread", "grpc-retry", "failover", "llmd")


def variant_bootstrap(spec: GatewaySpec, variant: str) -> dict[str, Any]:
    """llmd's bootstrap for `spec`, less the gRPC retry and/or the failover pass."""
    boot = render_bootstrap(spec)
    resources = boot["static_resources"]
    if variant in ("spread", "failover"):
        for listener in resources["listeners"]:
            for f in _hcm(listener)["http_filters"]:
                f["typed_config"].get("grpc_service", {}).pop("retry_policy", None)
    if variant in ("spread", "grpc-retry"):
        outer, inner = resources["listeners"]
        # The outer listener's last route (the failover pass) becomes the inner's last one
        # (the failure mode), as with one replica.
        _routes(outer)[-1] = _routes(inner)[-1]
        resources["listeners"] = [outer]
        resources["clusters"] = [c for c in resources["clusters"]
                                 if c["name"] != "epp_failover"]
        boot.pop("bootstrap_extensions")
    return boot


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def _routes(listener: dict[str, Any]) -> list[dict[str, Any]]:
    return _hcm(listener)["route_config"]["virtual_hosts"][0]["routes"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def envoy(boot: dict[str, Any]) -> AsyncIterator[tuple[str, str]]:
    """Run Envoy with `boot` (gateway on an ephemeral port): yields (gateway URL, admin URL)."""
    with tempfile.TemporaryDirectory(prefix="llmd-failover-") as tmp:
        config, admin_file = Path(tmp) / "envoy.json", Path(tmp) / "admin"
        config.write_text(json.dumps(boot))
        proc = await asyncio.create_subprocess_exec(
            str(find_envoy()), "-c", str(config), "--concurrency", "1", "--log-level", "error",
            "--disable-hot-restart", "--admin-address-path", str(admin_file))
        try:
            async with asyncio.timeout(30), aiohttp.ClientSession() as http:
                while not admin_file.exists() or not admin_file.read_text().strip():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                admin = "http://" + admin_file.read_text().strip()
                port = 0
                while not port:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(admin + "/listeners?format=json") as resp:
                            for s in (await resp.json(content_type=None))["listener_statuses"]:
                                if s["name"] == "gateway":
                                    port = s["local_address"]["socket_address"]["port_value"]
                    await asyncio.sleep(0.05)
            yield f"http://127.0.0.1:{port}", admin
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


async def stats(http: aiohttp.ClientSession, admin: str) -> dict[str, int]:
    async with http.get(admin + "/stats?format=json") as resp:
        data = await resp.json()
    return {s["name"]: int(s["value"]) for s in data["stats"] if "value" in s}


async def stat(http: aiohttp.ClientSession, admin: str, name: str) -> int:
    async with http.get(f"{admin}/stats?filter=^{name}$&format=json") as resp:
        found = (await resp.json())["stats"]
    return int(found[0]["value"]) if found else 0


async def decisions(http: aiohttp.ClientSession, epp: EppProcess) -> float:
    async with http.get(epp.metrics_url) as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmd_epp_decisions_total{"))


async def run_variant(stack: LocalStack, variant: str, args: argparse.Namespace
                      ) -> dict[str, str]:
    spec = GatewaySpec(port=0, epp=tuple(e.replica for e in stack.epps),
                       endpoints=tuple(e.address for e in stack.endpoints),
                       failure_mode="FailClose", ext_proc_mode=args.ext_proc_mode)
    timeout = aiohttp.ClientTimeout(total=60)
    async with envoy(variant_bootstrap(spec, variant)) as (url, admin), aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        async with asyncio.timeout(30):  # every replica healthy in this Envoy's eyes
            while await stat(http, admin, "cluster.epp.membership_healthy") != len(  # noqa: ASYNC110
                    stack.epps):
                await asyncio.sleep(0.1)
        survivors = stack.epps[1:]
        before = sum([await decisions(http, e) for e in survivors])
        outcomes: Counter[str] = Counter()
        samples: dict[str, str] = {}
        victim = stack.child(stack.epps[0].name)
        restarts = victim.restarts
        killed_at = 0.0
        queue = iter(range(args.requests))

        async def worker() -> None:
            nonlocal killed_at
            for i in queue:
                body = {"model": MODEL, "prompt": f"failover request {i}", "max_tokens": 4}
                try:
                    async with http.post(url + "/v1/completions", json=body) as resp:
                        text = await resp.text()
                        kind = "ok" if resp.status == 200 else (
                            "failclose" if "endpoint picker is unavailable" in text
                            else f"http {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    kind, text = type(exc).__name__, str(exc)
                outcomes[kind] += 1
                if kind != "ok":
                    samples.setdefault(kind, text[:200])
                if not killed_at and outcomes.total() >= args.kill_at:
                    killed_at = time.monotonic()
                    os.kill(victim.proc.pid, signal.SIGKILL)

        timeline: dict[str, float] = {}

        async def monitor() -> None:
            """Until the restarted replica is healthy again in Envoy's eyes."""
            while "back" not in timeline:
                healthy = await stat(http, admin, "cluster.epp.membership_healthy")
                now = time.monotonic()
                if killed_at and healthy < len(stack.epps):
                    timeline.setdefault("out", now)
                if victim.restarts > restarts:
                    timeline.setdefault("restarted", now)
                    if healthy == len(stack.epps):
                        timeline["back"] = now
                await asyncio.sleep(0.02)

        watching = asyncio.create_task(monitor())
        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - began
        after = sum([await decisions(http, e) for e in survivors])
        s = await stats(http, admin)
        await asyncio.wait_for(watching, 30)  # the next variant starts with both back
    failed = {k: v for k, v in outcomes.items() if k != "ok"}
    for kind, text in samples.items():
        print(f"{variant}: first {kind}: {text}", file=sys.stderr)
    return {
        "variant": variant,
        "requests": f"{outcomes.total():,} in {elapsed:.1f} s",
        "errors": str(sum(failed.values())) + (f" {failed}" if failed else ""),
        "failure_mode": str(s.get("http.failover.ext_proc.failure_mode_allowed",
                                  s.get("http.gateway.ext_proc.failure_mode_allowed", 0))),
        "streams_failed": str(s.get("http.gateway.ext_proc.streams_failed", 0)),
        "grpc_retries": str(s.get("cluster.epp.upstream_rq_retry", 0)),
        "failover": str(s.get("cluster.epp_failover.upstream_rq_total", 0)),
        "hc_failures": str(s.get("cluster.epp.health_check.failure", 0)),
        "ejections": str(s.get("cluster.epp.outlier_detection.ejections_enforced_total", 0)),
        "decisions": f"{after - before:,.0f}",
        "out": f"{(timeline['out'] - killed_at) * 1000:,.0f} ms",
        "back": f"{(timeline['back'] - timeline['restarted']) * 1000:,.0f} ms",
    }


def table(rows: list[dict[str, str]]) -> str:
    head = ["variant", "requests", "errors", "failure mode taken", "ext_proc streams failed",
            "gRPC retries", "failover passes", "health-check failures", "outlier ejections",
            "decided by the others", "unhealthy after the kill",
            "healthy after its restart"]
    keys = ["variant", "requests", "errors", "failure_mode", "streams_failed", "grpc_retries",
            "failover", "hc_failures", "ejections", "decisions", "out", "back"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[dict[str, str]]:
    spec = StackSpec(epp_replicas=args.replicas, time_scale=args.time_scale,
                     ext_proc_mode=args.ext_proc_mode,
                     failure_mode="FailClose", max_restarts=50)
    rows = []
    stop = asyncio.Event()
    async with LocalStack(spec) as stack:
        supervise = asyncio.create_task(stack.wait(stop), name="supervise")
        for _ in range(args.repeats):
            for variant in args.variants.split(","):
                rows.append(await run_variant(stack, variant, args))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        stop.set()
        await supervise
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kill-at", type=int, default=600)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=0.0,
                        help="simulators' latency factor (0: the EPP is most of each request)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ext-proc-mode", default="buffered", choices=("buffered",
                                                                        "full-duplex"))
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    print(table(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
