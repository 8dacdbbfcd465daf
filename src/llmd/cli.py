"""The `llmd` command line: thin commands that parse flags and call one package function."""

from __future__ import annotations

import typer

from llmd import __version__

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


def main() -> None:
    app()
