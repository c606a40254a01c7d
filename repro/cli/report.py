"""`repro report`: turn a run directory into a bug report, with no rerun.

Kept apart from cli.py so that the report's options live next to the code that
uses them; cli.py only registers it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from repro.cli.common import err_console, fail
from repro.errors import ReproError

_err = err_console
_fail = fail


def report(
    run_dir: Annotated[Path, typer.Argument(help="A stress or bisect run directory.")],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="markdown (default), json or html; from -o's suffix when not given.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write a bug report (rate, TSAN report, culprit, environment, how to reproduce)."""
    from repro.report import build_document, format_for, render, write_report_files

    try:
        name = format_for(output, fmt)
        if run_dir.exists() and not run_dir.is_dir():
            raise ReproError(f"{run_dir}: a file, not a run directory")
        if not run_dir.is_dir():
            raise ReproError(f"{run_dir}: no such run directory")
        doc = build_document(run_dir)
        for problem in doc.get("problems") or []:
            # Said before the report, whose figures leave those parts out.
            _err.print(f"[yellow]warning:[/] {escape(str(problem))}", highlight=False)
        if output is None:
            sys.stdout.write(render(doc, name))
            sys.stdout.flush()
        else:
            for written in write_report_files(run_dir, output, name, doc):
                _err.print(f"report: {written}", highlight=False, markup=False)
    except ReproError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename or run_dir}: {exc.strerror or exc}") from None


def register(app: typer.Typer) -> None:
    app.command("report")(report)
