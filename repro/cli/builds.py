"""Command-line access to builds: build one, list or prune the cache, check the machine.

These commands exist so that the expensive part can be done (and checked) ahead of
a bisection, e.g. in CI or overnight, and so that users can find and clean what
repro keeps on their disk.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from repro.builds.cache import BuildCache
from repro.builds.cpython import ensure_cpython
from repro.builds.progress import RichBuildProgress
from repro.cli.common import console, err_console, fail, parse_duration
from repro.errors import ReproError
from repro.recipe import PythonSpec

build_app = typer.Typer(help="Build things ahead of time (cached).", no_args_is_help=True)
builds_app = typer.Typer(help="Inspect and clean the build cache.", no_args_is_help=True)

_out = console
_err = err_console
_fail = fail


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


@build_app.command("cpython")
def build_cpython(
    version: str | None = typer.Option(None, "--version", help="release, e.g. 3.13.5"),
    git: str | None = typer.Option(None, "--git", help="CPython git repository (URL or path)"),
    ref: str | None = typer.Option(None, "--ref", help="git ref to build (with --git)"),
    source: str | None = typer.Option(
        None, "--source", help="tarball file, mirror directory or URL (with --version)"
    ),
    free_threading: bool = typer.Option(True, "--free-threading/--no-free-threading"),
    tsan: bool = typer.Option(True, "--tsan/--no-tsan"),
    debug: bool = typer.Option(False, "--debug", help="configure --with-pydebug"),
    compiler: str = typer.Option("gcc", "--compiler", help="gcc or clang (clang-19 ...)"),
    configure_arg: list[str] = typer.Option(
        [], "--configure-arg", help="extra ./configure argument (repeatable)"
    ),
    patch: list[Path] = typer.Option([], "--patch", help="patch applied with -p1 (repeatable)"),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="build again even if this build failed before"
    ),
) -> None:
    """Build (or find in the cache) a CPython, and print its python path and key."""
    try:
        spec = PythonSpec(
            version=version,
            git=git,
            ref=ref,
            source=source,
            free_threading=free_threading,
            tsan=tsan,
            debug=debug,
            compiler=compiler,
            configure_args=tuple(configure_arg),
            patches=tuple(str(p.expanduser().resolve()) for p in patch),
        )
    except ValidationError as exc:
        msgs = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise _fail(f"{msgs} (use --version V, or --git URL [--ref R])") from None
    try:
        cache = BuildCache(retry_failed=retry_failed)
        pb = ensure_cpython(
            spec, base_dir=Path.cwd(), cache=cache, progress=RichBuildProgress(_err)
        )
    except ReproError as exc:
        raise _fail(str(exc)) from None
    # plain lines, never wrapped: scripts read the python path from here
    typer.echo(f"python: {pb.python}")
    typer.echo(f"key:    {pb.key}")
    typer.echo(
        f"        CPython {pb.version}, GIL disabled: {pb.gil_disabled}, TSAN: {pb.tsan}, "
        f"{pb.compiler}"
    )


@builds_app.command("list")
def builds_list(
    failed: bool = typer.Option(False, "--failed", help="list recorded failures instead"),
) -> None:
    """The cached builds: key, what, size and age."""
    cache = BuildCache()
    now = time.time()
    if failed:
        table = Table("key", "what", "error", "age", "log")
        for rec in cache.failures():
            table.add_row(
                rec.key[:16],
                escape(str(rec.meta.get("what", "?"))),
                escape(rec.error[:80]),
                _human_age(now - rec.when),
                str(rec.log or ""),
            )
        _out.print(table)
        return
    entries = cache.list()
    table = Table("key", "what", "size", "age", "last used")
    for e in sorted(entries, key=lambda e: e.finished, reverse=True):
        table.add_row(
            e.key[:16],
            escape(e.what),
            _human_size(e.size()),
            _human_age(now - e.finished),
            _human_age(now - e.last_used) + " ago",
        )
    _out.print(table)
    n_failed = len(cache.failures())
    tail = f"; {n_failed} recorded failure(s): repro builds list --failed" if n_failed else ""
    _out.print(f"{len(entries)} build(s) in {cache.root}{tail}", highlight=False)


@builds_app.command("prune")
def builds_prune(
    older_than: str = typer.Option("30d", "--older-than", help="unused for this long: 30d, 12h"),
) -> None:
    """Remove builds not used for a while (and old failure records)."""
    try:
        age = timedelta(seconds=parse_duration(older_than, require_unit=True))
    except ReproError as exc:
        raise _fail(str(exc)) from None
    cache = BuildCache()
    removed = cache.prune(age)
    for e in removed:
        _out.print(f"removed {e.key[:16]} {escape(e.what)}")
    _out.print(f"{len(removed)} build(s) removed")


@builds_app.command("path")
def builds_path(key: str = typer.Argument(..., help="a key or a unique prefix of one")) -> None:
    """Print the directory of a cached build."""
    cache = BuildCache()
    matches = [e for e in cache.list() if e.key.startswith(key)]
    if not matches:
        raise _fail(f"no cached build with key {key!r} (see `repro builds list`)")
    if len(matches) > 1:
        raise _fail(f"key prefix {key!r} is ambiguous: {len(matches)} builds match")
    print(matches[0].path)


def doctor() -> None:
    """Check that this machine can build and run TSAN programs, and say how to fix it."""
    from repro.app.doctor import run_checks

    with _err.status("checking...") as status:
        checks = run_checks(lambda name: status.update(f"checking {name}..."))
    table = Table("check", "", "detail", "fix")
    essential_failed = False
    for c in checks:
        mark = "[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.essential else "[yellow]warn[/]")
        essential_failed |= c.essential and not c.ok
        table.add_row(c.name, mark, escape(c.detail), escape(c.fix or ""))
    _out.print(table)
    if essential_failed:
        _out.print("[red]something essential is missing: see the fix column[/]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``build``, ``builds`` and ``doctor`` to the main app."""
    app.add_typer(build_app, name="build")
    app.add_typer(builds_app, name="builds")
    app.command("doctor")(doctor)
