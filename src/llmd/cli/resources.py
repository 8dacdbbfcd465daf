"""Commands for the `LLMInferenceService` resource: its CRD and conversions into it."""

from __future__ import annotations

import typer

from llmd.cli._app import app

__all__ = ["crd"]


@app.command()
def crd() -> None:
    """Print the LLMInferenceService CustomResourceDefinition (llm-d.ai/v1alpha1), generated
    from llmd's own models: `llmd crd | kubectl apply -f -`."""
    from llmd.deploy import crd as definition
    from llmd.deploy import dump_yaml

    typer.echo(dump_yaml([definition()]), nl=False)
