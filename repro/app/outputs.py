"""The files a command writes for the user: checked before the work, written after it.

A stress run or a bisect can take an hour; an output path that cannot be written
(``--json-out`` naming a directory, ``--report`` under /proc, a read-only runs
directory) must be refused before the first build, not discovered at the end with
the answer lost. If writing still fails at the end (the disk filled up meanwhile),
the answer has been printed and stays in the run directory: say so, and carry on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from repro.errors import ReproError


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_file(path: Path, option: str) -> None:
    """``path`` can be created or replaced by this user; a ReproError naming it if not.

    The only sure test is to try: open it for appending (which changes nothing in a
    file that exists) and remove it again if it did not exist.
    """
    if path.is_dir():
        raise ReproError(f"{option} {path}: is a directory (give a file name)")
    existed = path.exists()
    made = [p for p in path.parents if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ReproError(f"{option} {path}: cannot write there: {_why(exc)}") from None
    if not existed:
        path.unlink(missing_ok=True)
    _remove_empty(made)


def check_writable_dir(path: Path, what: str) -> None:
    """``path`` is (or can be made) a directory where files can be created.

    Directories made for the test are removed again: a command that then fails on
    its recipe leaves nothing behind.
    """
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".repro-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ReproError(f"{what} {path}: exists and is not a directory") from None
    except OSError as exc:
        raise ReproError(f"{what} {path}: cannot write there: {_why(exc)}") from None
    _remove_empty(made)


def _remove_empty(made: list[Path]) -> None:
    """The directories a check made, deepest first; one that is in use now stays."""
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_outputs(
    *,
    json_out: Path | None = None,
    report: Path | None = None,
    runs_dir: Path | None = None,
    resume: Path | None = None,
) -> None:
    """Every place a command will write, checked before it starts (exit 2 if one fails)."""
    if json_out is not None:
        check_output_file(json_out, "--json-out")
    if report is not None:
        check_output_file(report, "--report")
    if resume is not None:
        if resume.is_dir():
            check_writable_dir(resume, "--resume")
        return  # a missing run directory is the command's own error to report
    from repro.paths import runs_dir as default_runs_dir

    check_writable_dir(runs_dir or default_runs_dir(), "runs directory")


_Opts = TypeVar("_Opts")


def outputs_meta(opts: Any) -> dict[str, str | None]:
    """Where the run was asked to write --json-out and --report (absolute), for its meta:
    a resume writes them again there, or the file said "interrupted" after the resume
    had finished."""
    return {
        name: str(Path(p).absolute()) if p is not None else None
        for name, p in (("json_out", opts.json_out), ("report", opts.report))
    }


def outputs_of_the_run(opts: _Opts, meta: Mapping[str, Any]) -> _Opts:
    """``opts`` of a resume, with the run's own --json-out and --report where none is
    given now."""
    changes = {
        name: Path(str(meta[name]))
        for name in ("json_out", "report")
        if getattr(opts, name) is None and meta.get(name)
    }
    return dataclasses.replace(opts, **changes) if changes else opts  # type: ignore[type-var]


def write_outputs(
    run_dir: Path, json_text: str, json_out: Path | None, report: Path | None
) -> bool:
    """Write ``--json-out`` and ``--report`` at the end of a run; False if one failed.

    A failure is said on stderr with the path, the reason and the run directory that
    still holds everything (``repro report`` can write the report again from it);
    it does not stop the command from printing its answer.
    """
    console = Console(stderr=True, soft_wrap=True)
    ok = True
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(_without_secrets(json_text), encoding="utf-8")
        except OSError as exc:
            ok = False
            _say_lost(console, "--json-out", json_out, exc, run_dir)
    if report is not None:
        from repro.report import write_report

        try:
            write_report(run_dir, report)
        except OSError as exc:
            ok = False
            _say_lost(console, "--report", report, exc, run_dir)
        else:
            Console().print(f"report: {report}", highlight=False)
    return ok


def _without_secrets(json_text: str) -> str:
    """The JSON with secrets redacted as data (paths kept: programs read this file)."""
    from repro.redact import redact

    return json.dumps(redact(json.loads(json_text), keep_paths=True), indent=2) + "\n"


def _say_lost(console: Console, option: str, path: Path, exc: OSError, run_dir: Path) -> None:
    console.print(
        f"[bold red]error:[/] {option} {escape(str(path))}: cannot write: {escape(_why(exc))}; "
        f"the results are in the run directory {escape(str(run_dir))} "
        f"(`repro report {escape(str(run_dir))} -o FILE` writes the report again)",
        highlight=False,
    )


# errno values that describe the user's files or machine, never a bug in repro.
_ENVIRONMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
}


def environment_fault(exc: BaseException) -> str | None:
    """The one-line message for an OSError caused by the user's files, else None.

    A permission, a read-only or full file system, or a file where a directory should
    be: the path and the system's words for it. Other OSErrors may be bugs in repro
    and are left to the internal-error path.
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    code = exc.errno
    name = exc.filename
    if code == errno.EEXIST and name is not None and not os.path.isdir(name):
        return f"{name}: exists and is not a directory"
    if code not in _ENVIRONMENT_ERRNOS:
        return None
    why = exc.strerror or os.strerror(code)
    if name is None:
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return f"cannot write: {why} (in the run directory or the cache directory)"
        return None
    if exc.filename2 and code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return f"{exc.filename2}: {why}"  # a copy or a move: where it was writing
    target = f" -> {exc.filename2}" if exc.filename2 else ""
    return f"{name}{target}: {why}"
