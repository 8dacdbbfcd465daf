"""The `llmd` command line: thin commands that parse flags and call one package function.

Importing the command modules registers their commands on the root app.
"""

from llmd.cli import bench, calibrate, commands, operator, resources  # noqa: F401
from llmd.cli._app import app, main

__all__ = ["app", "main"]
