"""What every command of the command line shares: the two consoles, the one way to
fail with a message, the one duration parser, and the options several commands take."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from repro.errors import ReproError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Say what is wrong in one line (outside text escaped for rich) and exit ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")


def parse_duration(text: str, *, require_unit: bool = False) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2d``, ``2w``: seconds.

    A bare number is seconds. Where a slip costs data (``builds prune --older-than 30``
    would remove every build older than 30 *seconds*), ``require_unit`` refuses it.
    """
    s = text.strip()
    parts: list[tuple[str, str]] = []
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            break
        parts.append((m.group(1), m.group(2)))
        pos = m.end()
    bare = [n for n, u in parts if not u]
    if not parts or pos != len(s) or (bare and len(parts) > 1):
        raise ReproError(f"cannot read the duration {text!r} (examples: 90s, 5m, 1h30m, 30d)")
    if require_unit and bare:
        raise ReproError(f"give the duration {text!r} a unit (e.g. {s}d or {s}h)")
    return sum(float(n) * _UNITS[u or "s"] for n, u in parts)


# Options shared by stress, amplify and bisect.
JobsOpt = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Runs at once (default: cores).")
]
RepoOpt = Annotated[
    str | None, typer.Option("--repo", help="Use this clone of the extension repository.")
]
ThreadsOpt = Annotated[int | None, typer.Option(help="Threads for the reproducer.")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Per-run timeout in seconds.")]
RunsDirOpt = Annotated[Path | None, typer.Option(help="Where run directories go.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: KEY.PATH=YAML (repeatable)."),
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json-out", help="Write the summary here.")]
KeepGoingOpt = Annotated[
    bool,
    typer.Option(
        "--keep-going",
        help="Count runs whose reports are unsymbolized apart and go on (default: stop).",
    ),
]
RetryFailedOpt = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="Build again what failed to build before (the cache remembers failures).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", min=1, help="Run on a Dask cluster of N worker processes on this machine."
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster", help="Run on the Dask cluster whose scheduler is at tcp://HOST:PORT."
    ),
]
SharedCacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--shared-cache", help="With a cluster: a build cache on a filesystem all workers see."
    ),
]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a Markdown report.")]
