"""`repro init`: a recipe from what a user has at hand (registered by cli/app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repro.cli.common import console as _out
from repro.cli.common import fail
from repro.errors import ReproError


def init(
    from_log: Annotated[
        Path | None, typer.Option("--from-log", help="A CI log with a TSAN report.")
    ] = None,
    pytest_nodes: Annotated[
        list[str] | None,
        typer.Option("--pytest", help="A pytest node id that shows the race (repeatable)."),
    ] = None,
    race: Annotated[
        int | None,
        typer.Option(
            "--race",
            help="Which race of the log (1: most often; default: that, or in a package the "
            "most frequent that starts in its code).",
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Recipe to write.")] = Path(
        "repro-recipe.yaml"
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output.")] = False,
) -> None:
    """Write a complete, commented recipe from a CI log and/or a pytest test, and check it."""
    from repro.app.init import run_init
    from repro.recipe import FILL_ME

    try:
        path, nxt, fill = run_init(
            from_log=from_log,
            pytest_nodes=list(pytest_nodes or []),
            race=race,
            output=output,
            force=force,
            cwd=Path.cwd(),
        )
    except ReproError as exc:
        raise fail(str(exc)) from None
    _out.print(f"wrote {path}{'' if fill else ' (valid)'}", highlight=False, markup=False)
    if fill:
        _out.print(
            f"fill in the {FILL_ME} lines of {path} (repro recipe validate {path} names any "
            "left), then:",
            highlight=False,
            markup=False,
        )
    _out.print(f"next: {nxt}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
