"""The root `llmd` Typer app and what every command shares: uvloop, signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import typer

from llmd import __version__
from llmd.errors import LlmdError

__all__ = ["LOG_FORMAT", "app", "listening", "main", "run_service"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

app = typer.Typer(
    name="llmd",
    help="llmd: the llm-d serving stack in Python, with SGLang as first-class as vLLM.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """llmd: the llm-d serving stack in Python, with SGLang as first-class as vLLM."""


@app.command()
def version() -> None:
    """Print the llmd version."""
    typer.echo(__version__)


def run_service(
    main: Callable[[asyncio.Event], Awaitable[None]], *, log_level: str = "info"
) -> None:
    """Run one long-lived service on uvloop until SIGINT/SIGTERM sets its `stop` event.

    Every `llmd` server command goes through here: uvloop is installed only in the CLI, and an
    `LlmdError` (a bad flag value, a port in use) ends the process with its message, code 2.
    """
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(runner())
    except (LlmdError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def listening(host: str, port: int) -> None:
    """The line fixtures and supervisors wait for."""
    print(f"listening on {host}:{port}", flush=True)



def main() -> None:
    app()
