"""The live display of a stress loop, and its closing summary.

Separate from the loop so that the loop stays testable without a terminal; the view
only reads the state the loop updates.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from repro.report.fmt import seconds
from repro.runner import Outcome
from repro.stress import StressState, Tally


def fmt_seconds(s: float | None) -> str:
    return seconds(s)


def rate_text(tally: Tally) -> str:
    if not tally.runs:
        return "-"
    lo, hi = tally.ci95
    return f"{tally.rate:.1%}  (95% CI {lo:.1%} to {hi:.1%})"


def status_line(state: StressState) -> str:
    """One line of progress for logs, where a live panel would be invisible."""
    t = state.tally
    total = f"/{state.limits.runs}" if state.limits.runs is not None else ""
    eta = state.eta()
    return (
        f"runs {t.runs}{total}  hits {t.hits}  rate {rate_text(t)}  "
        f"elapsed {fmt_seconds(state.elapsed() + t.elapsed_before)}  ETA {fmt_seconds(eta)}"
    )


class PlainTicker:
    """Prints status_line every `every` seconds when the console is not a terminal."""

    def __init__(self, console: Console, every: float = 15.0) -> None:
        import time

        self._console = console
        self._every = every
        self._last = time.monotonic()
        self._clock = time.monotonic

    def __call__(self, state: StressState) -> None:
        if self._console.is_terminal:
            return
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._console.print(status_line(state), highlight=False)


class StressView:
    """A rich renderable over the loop's live state."""

    def __init__(self, state_holder: dict[str, StressState], title: str, log_dir: str) -> None:
        self._holder = state_holder
        self.title = title
        self.log_dir = log_dir

    def __rich__(self) -> RenderableType:
        state = self._holder.get("state")
        if state is None:
            return Text(f"{self.title}: starting...")
        return render_state(state, self.title, self.log_dir)


def render_state(state: StressState, title: str, log_dir: str) -> RenderableType:
    t = state.tally
    limit = state.limits
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    total = f" / {limit.runs}" if limit.runs is not None else ""
    grid.add_row("runs", f"{t.runs}{total}   ({state.in_flight} running, {limit.jobs} jobs)")
    grid.add_row("target hits", Text(str(t.hits), style="bold red" if t.hits else "green"))
    grid.add_row("rate", rate_text(t))
    others = sum(1 for s in t.signatures.values() if not s.target)
    grid.add_row(
        "other races",
        f"{t.outcomes.get(Outcome.OTHER.value, 0)} runs, {others} distinct signatures",
    )
    failures = [
        f"{o.value} {t.outcomes.get(o.value, 0)}"
        for o in (Outcome.CRASH, Outcome.TIMEOUT, Outcome.TSAN_FAILURE)
        if t.outcomes.get(o.value, 0)
    ]
    grid.add_row("clean", f"{t.outcomes.get(Outcome.CLEAN.value, 0)}  " + "  ".join(failures))
    grid.add_row("first hit", fmt_seconds(t.first_hit_seconds))
    eta = state.eta()
    grid.add_row(
        "elapsed",
        f"{fmt_seconds(state.elapsed() + t.elapsed_before)}   ETA {fmt_seconds(eta)}"
        f"   ({limit.describe()})",
    )
    if state.stopping:
        grid.add_row("stopping", state.stopping)
    grid.add_row("logs", log_dir)
    return Panel(grid, title=title, expand=False)


def summary_table(summary: dict[str, Any]) -> RenderableType:
    sigs = Table(title="Races seen", show_lines=False)
    sigs.add_column("", width=6)
    sigs.add_column("signature")
    sigs.add_column("kind")
    sigs.add_column("top frames")
    sigs.add_column("reports", justify="right")
    sigs.add_column("runs", justify="right")
    for s in summary["signatures"]:
        frames = " | ".join(" <- ".join(side) for side in s["top_frames"])
        sigs.add_row(
            Text("TARGET", style="bold red") if s["target"] else "other",
            s["id"],
            s["kind"],
            frames,
            str(s["count"]),
            str(s["runs"]),
        )
    return Group(sigs) if summary["signatures"] else Text("No TSAN reports at all.")


def print_summary(console: Console, summary: dict[str, Any], run_dir: str) -> None:
    console.print()
    console.print(summary_table(summary))
    lo, hi = summary["rate_ci95"]
    o = summary["outcomes"]
    line = (
        f"[bold]{summary['hits']}[/] of {summary['runs']} runs hit the target race: "
        f"rate {summary['rate']:.1%} (95% CI {lo:.1%} to {hi:.1%})"
    )
    console.print(line)
    extra = ", ".join(f"{k} {v}" for k, v in o.items() if v)
    console.print(f"outcomes: {extra or 'none'}")
    if summary.get("time_to_first_hit") is not None:
        console.print(
            f"first hit after {fmt_seconds(summary['time_to_first_hit'])} "
            f"(run {summary['first_hit_run']})"
        )
    for msg in summary.get("tsan_failures") or []:
        console.print(f"[red]TSAN failure:[/] {msg}")
    console.print(f"run directory: {run_dir}")
