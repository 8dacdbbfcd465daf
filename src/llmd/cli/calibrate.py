"""`llmd calibrate`: measure endpoints' prefill throughput and print the config lines."""

from __future__ import annotations

from typing import Annotated

import typer

from llmd.cli._app import app
from llmd.engines import ENGINES
from llmd.errors import LlmdError

__all__ = ["calibrate"]


@app.command()
def calibrate(
    endpoint: Annotated[list[str], typer.Option(
        help="model server base URL, http://host:port (repeatable)")],
    engine: Annotated[str | None, typer.Option(
        help="vllm or sglang (default: told from its /metrics)")] = None,
    probe: Annotated[int, typer.Option(
        help="send this many sequential completions of fresh prompt tokens, one at a time; "
             "0: measure the traffic the server gets during --window-s")] = 8,
    probe_tokens: Annotated[int, typer.Option(help="prompt tokens of each probe (about)")] = 8192,
    window_s: Annotated[float, typer.Option(help="passive window (with --probe 0)")] = 30.0,
    per_endpoint: Annotated[bool, typer.Option(
        help="also print one value per endpoint (host:port)")] = False,
    config: Annotated[bool, typer.Option(
        help="print llm-d v1.0's default EndpointPickerConfig with the measured values "
             "instead of the parameter lines")] = False,
    timeout_s: Annotated[float, typer.Option(help="timeout of each HTTP request")] = 120.0,
) -> None:
    """Estimate each endpoint's prefill throughput (uncached prompt tokens per second of
    prefill) from its own /metrics and print `peakPrefillThroughput` per engine (and per
    endpoint), for prefix-cache-affinity-filter, token-load-scorer and inflight-load-producer.
    Probes are meant for an idle server."""
    import aiohttp
    import yaml

    from llmd.epp.calibrate import calibrate as measure
    from llmd.epp.calibrate import snippet
    from llmd.epp.config import v1_default_config

    async def run() -> list[str]:
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            results = [await measure(session, url, engine=engine, probes=probe,
                                     probe_tokens=probe_tokens, window_s=window_s)
                       for url in endpoint]
        lines = [f"# {r.line()}" for r in results]
        text = snippet(results, per_endpoint=per_endpoint)
        if config:
            value = yaml.safe_load(text)["peakPrefillThroughput"]
            return [*lines, v1_default_config(value).rstrip()]
        return [*lines, text]

    if engine is not None and engine not in ENGINES:
        typer.echo(f"error: --engine {engine!r} is not one of {', '.join(ENGINES)}", err=True)
        raise typer.Exit(2)
    try:
        import uvloop

        lines = uvloop.run(run())
    except (LlmdError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("\n".join(lines))
