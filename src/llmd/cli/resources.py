"""Commands for the `LLMInferenceService` resource: its CRD and conversions into it."""

from __future__ import annotations

from typing import Annotated

import typer

from llmd.cli._app import app
from llmd.errors import LlmdError

__all__ = ["convert", "crd"]


@app.command()
def crd() -> None:
    """Print the LLMInferenceService CustomResourceDefinition (llm-d.ai/v1alpha1), generated
    from llmd's own models: `llmd crd | kubectl apply -f -`."""
    from llmd.deploy import crd as definition
    from llmd.deploy import dump_yaml

    typer.echo(dump_yaml([definition()]), nl=False)


@app.command()
def convert(
    file: Annotated[list[str], typer.Option(
        "-f", "--file", help="ModelService values file (repeatable, merged as with helm -f), "
        "or one KServe serving.kserve.io LLMInferenceService")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="a.b=c override of the values, helm style (repeatable)")] = None,
    name: Annotated[str | None, typer.Option(
        help="the resource's name (default: the values' llm-d.ai/model label, or the KServe "
        "resource's name)")] = None,
    namespace: Annotated[str | None, typer.Option(help="the resource's namespace")] = None,
) -> None:
    """Convert ModelService values or a KServe LLMInferenceService into an llm-d.ai/v1alpha1
    LLMInferenceService. What cannot be carried over is printed as `note:` lines on stderr
    (for values: every difference between the objects both would deploy)."""
    from llmd.deploy import convert_files, dump_yaml

    try:
        result = convert_files(file, set_ or (), name=name, namespace=namespace)
    except LlmdError as exc:
        typer.echo(f"error: {exc}".replace("\n", "\nerror: "), err=True)
        raise typer.Exit(2) from None
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(dump_yaml([result.resource]), nl=False)
