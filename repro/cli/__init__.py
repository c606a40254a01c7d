"""The `repro` command line: typer commands, one console, one error path."""

from repro.cli.app import app, main

__all__ = ["app", "main"]
