"""Telling the user what a build of several minutes is doing.

A silent five-minute build looks hung, and a failed one is useless without the end
of its log, so builders report phases and compile counts through this protocol;
library callers that want silence pass nothing and get :class:`NullProgress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from repro.builds.cache import BuildError, tail_lines

if TYPE_CHECKING:
    from repro.builds.cache import BuildCache, BuildContext

PHASES = ("fetch", "extract", "patch", "configure", "compile", "install", "verify")


class BuildProgress(Protocol):
    def begin(self, what: str, key: str) -> None: ...

    def phase(self, name: str, detail: str = "") -> None: ...

    def compiled(self, count: int, total: int | None) -> None: ...

    def waiting(self, why: str) -> None: ...

    def finish(self, *, ok: bool, message: str, log: Path | None, tail: list[str]) -> None: ...


class NullProgress:
    def begin(self, what: str, key: str) -> None:
        pass

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def compiled(self, count: int, total: int | None) -> None:
        pass

    def waiting(self, why: str) -> None:
        pass

    def finish(self, *, ok: bool, message: str, log: Path | None, tail: list[str]) -> None:
        pass


class RichBuildProgress:
    """A spinner (or a bar while compiling) plus one line per finished phase."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._what = ""
        self._phase: str | None = None
        self._phase_steps = 0
        self._phase_started = 0.0
        self._started = 0.0
        self._begun = False
        # Builds begun through this object: none means everything came from the cache.
        self.begun = 0

    def begin(self, what: str, key: str) -> None:
        self._what = what
        self._begun = True
        self.begun += 1
        self._started = time.monotonic()
        self.console.print(f"[bold]building[/] {escape(what)} [dim](key {key[:16]})[/]")
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("starting", total=None)

    def _close_phase(self) -> None:
        if self._phase is not None:
            took = time.monotonic() - self._phase_started
            steps = f" ({self._phase_steps} commands)" if self._phase_steps > 1 else ""
            self.console.print(f"  [green]✓[/] {self._phase}{steps} [dim]{took:.1f} s[/]")
        self._phase = None
        self._phase_steps = 0

    def phase(self, name: str, detail: str = "") -> None:
        # A phase reported again (an extension's build commands, one after the other)
        # goes on: one line when it ends, not one identical line per command.
        if name != self._phase:
            self._close_phase()
            self._phase = name
            self._phase_started = time.monotonic()
        self._phase_steps += 1
        if self._progress is not None and self._task is not None:
            label = f"{name} {escape(detail)}".strip()
            self._progress.update(self._task, description=label, total=None, completed=0)

    def compiled(self, count: int, total: int | None) -> None:
        if self._progress is not None and self._task is not None:
            shown_total = max(total, count) if total else None
            self._progress.update(self._task, completed=count, total=shown_total)

    def waiting(self, why: str) -> None:
        self.console.print(f"  [yellow]…[/] {escape(why)}")

    def finish(self, *, ok: bool, message: str, log: Path | None, tail: list[str]) -> None:
        if ok:
            self._close_phase()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        took = time.monotonic() - self._started
        if ok:
            if self._begun:
                self.console.print(f"[green]done[/] {escape(self._what)} in {took:.0f} s")
            self._reset()
            return
        where = f" during {self._phase}" if self._phase else ""
        after = f" after {took:.0f} s" if self._begun else ""
        self.console.print(f"[red]failed[/]{where}{after}: {escape(message)}")
        if tail:
            self.console.rule(f"last {len(tail)} lines of the log", style="dim")
            for line in tail:
                self.console.print(line, highlight=False, markup=False)
            self.console.rule(style="dim")
        if log is not None:
            self.console.print(f"log: {log}")
        self._reset()

    def _reset(self) -> None:
        """One progress object serves a whole bisection: each build starts afresh."""
        self._begun = False
        self._phase = None
        self._phase_steps = 0
        self._what = ""


def lost_note(what: str, lost: str) -> str:
    """What a build that is built again because its cached entry lost a file says."""
    return (
        f"the cached build of {what} has lost {lost} since it was built (a reproducer "
        "that cleans or deletes its build?); building it again"
    )


def ensure_reported(
    cache: BuildCache,
    key: str,
    meta: Mapping[str, Any],
    build: Callable[[BuildContext], Any],
    progress: BuildProgress,
    what: str,
) -> None:
    """Build a cache entry in place, with the progress saying how it ended (and why not)."""
    try:
        cache.ensure(
            key,
            meta,
            build,
            in_place=True,
            on_wait=lambda: progress.waiting(f"another repro process is building {what}; waiting"),
            on_damaged=lambda lost: progress.waiting(lost_note(what, lost)),
        )
    except BuildError as exc:
        progress.finish(
            ok=False, message=str(exc), log=exc.log, tail=exc.tail or tail_lines(exc.log)
        )
        raise
    progress.finish(ok=True, message="", log=cache.path(key) / "build.log", tail=[])
