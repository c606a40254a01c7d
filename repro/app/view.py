"""The live display of a stress loop, and its closing summary.

Separate from the loop so that the loop stays testable without a terminal; the view
only reads the state the loop updates, and the closing lines only read the summary
that the run log's fold produced (the same dict as summary.json and --json-out).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from repro.app.loop import StressState
from repro.app.runner import LINGER
from repro.report.fmt import elide_lists, plural, same_race_note, seconds
from repro.report.fmt import top_frames as fmt_top_frames
from repro.runlog import Counts
from repro.text import truncate
from repro.tsan.outcome import (
    FAILED,
    INVALID,
    ORDER,
    Outcome,
    invalid_hint,
    tsan_failure_hint,
)


def fmt_seconds(s: float | None) -> str:
    return seconds(s)


def rate_text(counts: Counts) -> str:
    if not counts.evidence:
        return "-"
    lo, hi = counts.ci95
    return f"{counts.rate:.1%}  (95% CI {lo:.1%} to {hi:.1%})"


def runs_progress(state: StressState, sep: str = "/") -> str:
    """The loop's runs against its limit.

    A loop with a hit goal (a bisect's calibration) stops at its hits first: its run
    limit is a cap, and "runs 3/399" read as 396 runs still to go.
    """
    limit = state.limits
    # Of the whole record, as the hits beside it are: a resume's limit is what is left,
    # and "runs 3 / 3" stood beside "hits 8" from the earlier sessions.
    before = state.total.runs - state.session.runs
    runs = state.total.runs
    if limit.runs is None:
        return str(runs)
    if limit.until_hits is not None:
        # The goal is this loop's; the hits on screen are the record's ("until 3 hits"
        # stood beside "hits 4" in a calibration that stopped at 5).
        goal = state.total.hits - state.session.hits + limit.until_hits
        return f"{runs} (until {plural(goal, 'hit')}, at most {before + limit.runs})"
    return f"{runs}{sep}{before + limit.runs}"


def status_line(state: StressState) -> str:
    """One line of progress for logs, where a live panel would be invisible."""
    t = state.total
    eta = state.eta()
    return (
        f"runs {runs_progress(state)}  hits {t.hits}  rate {rate_text(t)}  "
        f"elapsed {fmt_seconds(state.elapsed() + state.elapsed_before)}  "
        f"ETA {fmt_seconds(eta)}"
    )


class PlainTicker:
    """Prints status_line every `every` seconds when the console is not a terminal."""

    def __init__(self, console: Console, every: float = 15.0) -> None:
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


def _outcome_list(counts: Counts, which: frozenset[Outcome]) -> str:
    return "  ".join(
        f"{o.value} {counts.outcomes[o]}" for o in ORDER if o in which and counts.outcomes[o]
    )


def render_state(state: StressState, title: str, log_dir: str) -> RenderableType:
    t = state.total
    limit = state.limits
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(
        "runs",
        f"{runs_progress(state, ' / ')}   ({state.in_flight} running, {limit.jobs} at once)",
    )
    grid.add_row("target hits", Text(str(t.hits), style="bold red" if t.hits else "green"))
    grid.add_row("rate", rate_text(t))
    with_other, distinct = state.other_races()
    grid.add_row(
        "other races", f"in {plural(with_other, 'run')}, {plural(distinct, 'distinct race')}"
    )
    grid.add_row("clean", f"{t.outcomes[Outcome.CLEAN]}  " + _outcome_list(t, FAILED))
    if t.invalid:
        grid.add_row(Text("invalid", style="yellow"), _outcome_list(t, INVALID))
    if state.lingered:
        # Said while it happens: each such run waits LINGER s, and the loop slows for it.
        grid.add_row(
            Text("left running", style="yellow"),
            f"{plural(state.lingered, 'run')} left processes running at exit "
            f"(each waited {LINGER:g} s for them, then killed them)",
        )
    grid.add_row(
        "elapsed",
        f"{fmt_seconds(state.elapsed() + state.elapsed_before)}   ETA {fmt_seconds(state.eta())}"
        f"   ({limit.describe()})",
    )
    if state.stopping:
        grid.add_row("stopping", state.stopping)
    grid.add_row("logs", log_dir)
    return Panel(grid, title=title, expand=False)


#: Other races listed on the console after the target's; the rest are counted in a
#: closing line (the report and signatures.json hold them all). 51 rows buried the summary.
CONSOLE_OTHER_ROWS = 15
#: Below this width the table's six columns fold each frame into a column 12 characters
#: wide; each race is then shown as a header line and one line per access.
TABLE_MIN_WIDTH = 120


class RacesSeen:
    """The races of a run, laid out for the width the console has when it prints."""

    def __init__(self, summary: dict[str, Any], inside: Collection[str] = ()) -> None:
        self.inside = set(inside)
        sigs = summary["signatures"]
        target = [s for s in sigs if s["target"]]
        others = [s for s in sigs if not s["target"]]
        self.rows = target + others[:CONSOLE_OTHER_ROWS]
        self.left_out = len(others) - len(others[:CONSOLE_OTHER_ROWS])
        self.noted = bool(self.inside) or any(s.get("same_race_as") for s in self.rows)

    def _note(self, s: dict[str, Any]) -> str:
        return same_race_note(s.get("same_race_as")) or (
            "inside CPython" if s["id"] in self.inside else ""
        )

    @staticmethod
    def _sides(s: dict[str, Any]) -> list[list[str]]:
        # Lists elided: C++ frames that share a long prefix were cut alike, and the
        # table could not tell their races apart (the reports keep the whole names).
        # The top frame keeps its arguments: they tell two lambdas of a function apart.
        return [
            [elide_lists(f, params=i > 0) for i, f in enumerate(side)] for side in s["top_frames"]
        ]

    @staticmethod
    def _label(s: dict[str, Any]) -> Text:
        return Text("TARGET", style="bold red") if s["target"] else Text("other")

    def _wide(self) -> Table:
        sigs = Table(title="Races seen", show_lines=False)
        sigs.add_column("", width=6)
        sigs.add_column("signature", no_wrap=True)
        sigs.add_column("kind")
        sigs.add_column(
            "top frames", overflow="fold"
        )  # wrapped whole: a cut C++ name hid its lambda
        sigs.add_column("reports", justify="right")
        sigs.add_column("runs", justify="right")
        if self.noted:
            sigs.add_column("note")
        for s in self.rows:
            note = [self._note(s)] if self.noted else []
            sigs.add_row(
                self._label(s),
                s["id"],
                s["kind"],
                escape(fmt_top_frames(self._sides(s))),
                str(s["count"]),
                str(s["runs"]),
                *note,
            )
        return sigs

    def _narrow(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=6, no_wrap=True)
        grid.add_column(overflow="fold")
        for s in self.rows:
            head = Text(f"{s['id']}  {s['kind']}, ", style="bold" if s["target"] else "")
            head.append(f"{plural(s['count'], 'report')} in {plural(s['runs'], 'run')}")
            note = self._note(s)
            if note:
                head.append(f"  ({note})", style="yellow")
            # One line per access: the six columns of the wide table folded each frame
            # into a column 12 characters wide.
            lines = [" <- ".join(side) or "?" for side in self._sides(s)] or ["?"]
            grid.add_row(self._label(s), Text("\n").join([head, *(Text(x) for x in lines)]))
        return grid

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.max_width >= TABLE_MIN_WIDTH:
            yield self._wide()
        else:
            yield Text("Races seen", style="italic", justify="center")
            yield self._narrow()
        if self.left_out:
            yield Text(
                f"... and {plural(self.left_out, 'less frequent race')}: all are in the "
                "report (repro report) and in the run directory's signatures.json"
            )


def summary_table(summary: dict[str, Any], inside: Collection[str] = ()) -> RenderableType:
    """The races of a run; ``inside``: the other races that start inside CPython beside
    a target in the extension (``other_race_verdicts``), marked as the report marks them."""
    if summary["signatures"]:
        return RacesSeen(summary, inside)
    outcomes = summary.get("outcomes") or {}
    unreadable = sum(
        int(outcomes.get(o.value) or 0) for o in (Outcome.UNSYMBOLIZED, Outcome.INCOMPLETE)
    )
    if unreadable:
        # Their reports name no race: they are counted apart (outcomes), not absent.
        return Text(
            f"No readable TSAN report: {plural(unreadable, 'run')} had reports that "
            "cannot name their race (see outcomes)."
        )
    return Text("No TSAN reports at all.")


def last_output_line(run_dir: Path, log_dir: Any) -> str | None:
    """The last line the first failed run printed (``No module named pytest``): what a
    user would open its log for, said at once."""
    if not log_dir:
        return None
    try:
        with (run_dir / str(log_dir) / "output.txt").open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [x.strip() for x in tail.splitlines() if x.strip()]
    return truncate(lines[-1], 200) if lines else None


def summary_lines(summary: dict[str, Any], failed_tail: str | None = None) -> list[str]:
    """The closing lines (rich markup), from the one summary dict; ``failed_tail``: the
    last line of the first failed run's output."""
    lines = []
    ev = summary["evidence_runs"]
    if ev:
        lo, hi = summary["rate_ci95"]
        lines.append(
            f"[bold]{summary['hits']}[/] of {ev} runs hit the target race: "
            f"rate {summary['rate']:.1%} (95% CI {lo:.1%} to {hi:.1%})"
        )
    else:
        lines.append(f"[bold]0[/] runs could show the target race (of {summary['runs']} runs)")
    not_counted = summary["runs"] - ev
    if not_counted:
        lines.append(
            f"{not_counted} of {summary['runs']} runs are not in the rate "
            "(they could not show the race: see outcomes)"
        )
    o = summary["outcomes"]
    lines.append("outcomes: " + (", ".join(f"{k} {v}" for k, v in o.items() if v) or "none"))
    other = summary.get("other_races") or {}
    if other.get("distinct"):
        lines.append(
            f"other races: {plural(other['distinct'], 'distinct race')}, "
            f"in {plural(other['runs'], 'run')}"
        )
    if summary.get("time_to_first_hit") is not None:
        lines.append(
            f"first hit after {fmt_seconds(summary['time_to_first_hit'])} "
            f"(run {summary['first_hit_run']})"
        )
    failed = summary.get("failed") or {}
    crashes = {k: n for k, n in failed.items() if k != "timeout"}
    if crashes:
        how = ", ".join(f"{escape(k.removeprefix('crash: '))} x{n}" for k, n in crashes.items())
        lines.append(
            f"[yellow]crash:[/] the reproducer failed ({how}) without a report of the "
            "target: not evidence either way; see its output"
        )
    if failed.get("timeout"):
        lines.append(
            f"[yellow]timeout:[/] {plural(failed['timeout'], 'run')} did not end in time; if the "
            "reproducer is slow rather than hung, raise reproducer.timeout (or --timeout)"
        )
    if failed and summary.get("failed_log"):
        lines.append(
            f"  the first crashed or timed-out run's log: {escape(str(summary['failed_log']))} "
            "(in the run directory)"
        )
        if failed_tail:
            lines.append(f"  its output ends: {escape(failed_tail)}")
    for msg in summary.get("tsan_failures") or []:
        lines.append(f"[red]TSAN failure:[/] {escape(msg)}")
    for outcome in INVALID:
        if o.get(outcome.value):
            hint = invalid_hint(outcome, summary.get("invalid"))
            lines.append(f"[yellow]{outcome.value}:[/] {escape(hint)}")
    if o.get(Outcome.TSAN_FAILURE.value):
        hint = tsan_failure_hint(summary.get("tsan_failures") or [])
        lines.append(f"[yellow]{Outcome.TSAN_FAILURE.value}:[/] {escape(hint)}")
    for detail, n in (summary.get("invalid") or {}).items():
        lines.append(f"  {n} x {escape(detail)}")
    return lines


def print_summary(
    console: Console, summary: dict[str, Any], run_dir: str, inside: Collection[str] = ()
) -> None:
    console.print()
    console.print(summary_table(summary, inside))
    print_symptom_note(console, inside)
    tail = last_output_line(Path(run_dir), summary.get("failed_log"))
    for line in summary_lines(summary, tail):
        console.print(line, highlight=False)
    console.print(f"run directory: {run_dir}", highlight=False, markup=False)


def other_race_verdicts(console: Console, run_dir: Path) -> list[str]:
    """The other races that start inside CPython beside a target in the extension's
    code (the report's verdict), read after the run like the near misses; a damaged run
    directory only loses the mark."""
    from repro.errors import ReproError
    from repro.report import inside_cpython

    try:
        return inside_cpython(run_dir)
    except (ReproError, OSError) as exc:
        console.print(f"[yellow]races inside CPython not checked:[/] {escape(str(exc))}")
    except Exception as exc:  # a mark is not worth a traceback after the runs
        console.print(
            f"[yellow]races inside CPython not checked:[/] {type(exc).__name__}: {escape(str(exc))}"
        )
    return []


def print_symptom_note(console: Console, inside: Collection[str]) -> None:
    """Say, as the report does, that races inside CPython may be the target's doing:
    listed bare, they read as CPython bugs to report."""
    from repro.report.tsantext import symptom_note

    if inside:
        console.print(
            f"note: other races {', '.join(inside)}: {symptom_note(len(inside))}",
            style="yellow",
            highlight=False,
            markup=False,
        )


def print_near_misses(console: Console, run_dir: Path, runs: int, suggest: bool = False) -> None:
    """Other races that match part of the target, and (``suggest``) a target for both sides.

    Read from the run directory's kept logs after the run, so it costs nothing while
    the runs go on; a damaged run directory only loses these hints.
    """
    from repro.errors import ReproError
    from repro.report.near import near_miss_lines, suggested_target

    try:
        lines = near_miss_lines(run_dir, runs, hint=not suggest)
        suggestion = suggested_target(run_dir) if suggest else None
    except (ReproError, OSError) as exc:
        console.print(f"[yellow]near misses not checked:[/] {escape(str(exc))}")
        return
    for line in lines:
        style = "yellow" if line.startswith("near miss:") else None
        console.print(line, style=style, highlight=False, markup=False)
    if suggest:
        if suggestion is None:
            console.print("no race seen, so no target to suggest", highlight=False)
            return
        sig_id, target, noise = suggestion
        console.print(
            f"a target naming both accesses of race {sig_id} (replace the recipe's `target:`):",
            highlight=False,
        )
        if noise is not None:
            console.print(
                f"  (every race seen is inside {noise}, which this build does not "
                "instrument: likely noise, not the race you are after)",
                highlight=False,
            )
        console.print(target.yaml(), highlight=False, markup=False, end="")
