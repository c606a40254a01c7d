"""The stress loop: run the reproducer again and again, count the target race apart.

Runs go through a small thread pool (the work happens in child processes, so threads
only wait); every result goes to the run log (disk first, then the in-memory fold)
the moment it is known, so an interrupted loop keeps everything it measured and can
be resumed, and a bisect in the same process reads the fold directly.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from repro.app.executors import Finished, Runner, RunnerGone, ThreadRunner, write_remote_logs
from repro.app.runner import Matcher, Outcome, RunResult, RunSpec
from repro.host.symbolizer import stop_hint
from repro.runlog import Counts, RunEvent, RunLog, SignatureEvent
from repro.tsan.outcome import FAILED, INVALID, NO_SYMBOLS_HINT, Found, invalid_hint

KEEP_TARGET_LOGS = 20
KEEP_FAILURE_LOGS = 5


@dataclass(frozen=True)
class Limits:
    """When one loop stops; every count is of this loop's own runs."""

    runs: int | None = None
    seconds: float | None = None
    until_first: bool = False
    jobs: int = 1
    until_hits: int | None = None  # stop after this many target hits (calibration)
    # Outcomes that stop the loop at once: a run that could not show the race
    # (unsymbolized) will not be the last one like it, and more runs waste time.
    stop_on: frozenset[Outcome] = frozenset()

    @property
    def hit_goal(self) -> int | None:
        return 1 if self.until_first else self.until_hits

    def describe(self) -> str:
        parts = []
        if self.runs is not None:
            parts.append(f"{self.runs} runs")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        if self.hit_goal == 1:
            parts.append("until the first hit")
        elif self.hit_goal:
            parts.append(f"until {self.hit_goal} hits")
        return ", ".join(parts) or "until interrupted"


@dataclass
class StressState:
    """Live state the display reads; updated only by the loop's thread.

    ``session`` counts this loop's runs (the limits apply to it); ``total`` is what
    the panel shows: the whole run directory for ``repro stress`` (earlier sessions
    included), one position's runs in a bisect.
    """

    limits: Limits
    started: float
    total: Counts
    session: Counts = field(default_factory=Counts)
    elapsed_before: float = 0.0
    other_races: Callable[[], tuple[int, int]] = lambda: (0, 0)  # runs with, distinct
    in_flight: int = 0
    stopping: str | None = None
    stopped_by: Outcome | None = None  # one of Limits.stop_on, when it stopped the loop
    stopped_detail: str | None = None  # that run's detail (which module has no symbols)
    last_event: str = ""
    lost: int = 0  # runs whose worker died and that no other worker could finish
    gone: str | None = None  # why the runner went away mid-loop (RunnerGone), if it did
    disk_full: bool = False  # the loop stopped for a full disk: later results count neither
    lingered: int = 0  # runs of this loop whose children outlived them (waited, killed)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        """Seconds left, from the limits that will end the loop first.

        A hit goal ends the loop early, so while it is not met the run limit is an
        upper bound only: the ETA is then not given rather than a misleading one
        computed from the whole budget.
        """
        candidates = []
        if self.limits.seconds is not None:
            candidates.append(max(0.0, self.limits.seconds - self.elapsed()))
        done = self.session.runs
        if self.limits.runs is not None and done and self.limits.hit_goal is None:
            left = max(0, self.limits.runs - done)
            candidates.append(left * self.elapsed() / max(1, done))
        return min(candidates) if candidates else None


def stop_advice(outcome: Outcome, detail: str | None, symbolizer: Mapping[str, Any] | None) -> str:
    """What to do when a run of ``outcome`` (one of ``Limits.stop_on``) stopped the loop:
    one sentence for stress and bisect alike. The symbolizer is named only when the run
    does not show a module without symbols: cramjam's stripped wheel was sent to
    install the LLVM it had."""
    hint = invalid_hint(outcome, detail)
    if outcome is Outcome.UNSYMBOLIZED and hint != NO_SYMBOLS_HINT:
        return hint + "." + stop_hint(symbolizer)
    return hint + "."


def signature_events(found: tuple[Found, ...]) -> list[SignatureEvent]:
    """The signature events of a run's reports, from what the runner already computed."""
    return [
        SignatureEvent(
            id=f.signature.id,
            kind=f.signature.kind,
            top_frames=tuple(tuple(a) for a in f.signature.accesses),
            description=f.signature.describe(),
            target=f.target,
            inside_cpython=f.inside_cpython,
        )
        for f in found
    ]


def _keep_log(result: RunResult, session: Counts, new: bool) -> bool:
    if new:
        return True
    if result.outcome is Outcome.TARGET:
        return session.hits <= KEEP_TARGET_LOGS
    if result.outcome in FAILED or result.outcome in INVALID:
        return session.outcomes[result.outcome] <= KEEP_FAILURE_LOGS
    return False


@dataclass(frozen=True)
class Tags:
    """Where the runs of one loop belong (a bisect position, an amplify setting)."""

    pos: int | None = None
    id: str | None = None
    phase: str | None = None
    setting: str | None = None


def stress_loop(
    spec: RunSpec,
    matcher: Matcher,
    limits: Limits,
    runlog: RunLog,
    *,
    total: Counts | None = None,
    indices: Callable[[], int] | None = None,
    on_change: Callable[[StressState], None] | None = None,
    tags: Tags = Tags(),
    elapsed_before: float = 0.0,
    other_races: Callable[[], tuple[int, int]] | None = None,
    executor: Runner | None = None,
    stop: threading.Event | None = None,
) -> tuple[StressState, bool]:
    """Run until a limit is reached; returns the state and whether it was interrupted.

    ``executor`` is where the runs happen: by default a thread pool of ``limits.jobs``
    on this machine (``spec``), or a cluster session (``repro.app.cluster``). ``stop``
    is Ctrl-C for a loop in another thread than the main one (a parallel bisect probe),
    where no KeyboardInterrupt arrives: once set, the loop stops as if interrupted.
    """
    record = runlog.record
    state = StressState(
        limits=limits,
        started=time.monotonic(),
        total=total if total is not None else record.counts,
        elapsed_before=elapsed_before,
    )
    if other_races is not None:
        state.other_races = other_races
    # Run indices: the log's next one on, or (parallel probes sharing one log) drawn
    # from a pool that hands each index out once.
    counter = itertools.count(record.next_index)
    take = indices if indices is not None else counter.__next__
    interrupted = False
    launched = 0

    def should_launch() -> bool:
        if state.stopping or (stop is not None and stop.is_set()):
            return False
        # Counted by launches, not results: the next run starts before the previous
        # one is recorded, so that bookkeeping never sits between two runs.
        if limits.runs is not None and launched >= limits.runs:
            return False
        if limits.seconds is not None and state.elapsed() >= limits.seconds:
            return False
        goal = limits.hit_goal
        return not (goal is not None and state.session.hits >= goal)

    def finished_reason() -> str | None:
        goal = limits.hit_goal
        if goal is not None and state.session.hits >= goal:
            return "first hit" if goal == 1 else f"{goal} hits"
        if limits.runs is not None and state.session.runs >= limits.runs:
            return "run limit"
        if limits.seconds is not None and state.elapsed() >= limits.seconds:
            return "time limit"
        return None

    runner = executor if executor is not None else ThreadRunner(spec, matcher, runlog, limits.jobs)

    def top_up() -> None:
        nonlocal launched
        while runner.pending() < runner.slots and should_launch():
            runner.submit(take())
            launched += 1
        state.in_flight = runner.pending()

    def cancel() -> None:
        runner.cancel()

    def record_one(done: Finished) -> None:
        nonlocal launched
        if done.lost is not None:
            # The worker died with it and no other could run it: not a result, so
            # not counted, and the launch is given back so that the limit still holds.
            launched -= 1
            state.lost += 1
            state.last_event = f"run {done.index}: lost ({done.lost})"
            return
        if done.result is None:
            return  # cancelled: never counted
        if done.result.outcome is not Outcome.TARGET and (state.disk_full or state.gone is None):
            full = disk_full(runlog.dir.path) if not state.disk_full else state.gone
            if full is not None:
                # Its output or its TSAN log may not have been written: a crash, or
                # (a reproducer that exits 0) a clean run whose report was lost. A
                # fault of the disk, not a run's outcome: not counted, and no more
                # runs to fail the same way. A hit stands: its report was read. So
                # for a run started before the stop and ended after it (CI counted
                # one such as a crash: it failed in 1 ms on the full disk).
                launched -= 1
                if not state.disk_full:
                    state.gone, state.disk_full = full, True
                    state.stopping = "the disk is full"
                    cancel()
                return
        with runlog.lock:  # the check for new signatures and their logging, as one step
            _record(done, matcher, runlog, state, tags)
        state.lingered += done.result.lingered
        result = done.result
        if result.outcome in limits.stop_on and state.stopped_by is None:
            state.stopped_by = result.outcome
            state.stopped_detail = result.detail
            state.stopping = f"a run was {result.outcome.value}"
            cancel()

    try:
        while True:
            top_up()
            if not runner.pending():
                break
            timeout = None
            if limits.seconds is not None:
                timeout = max(0.05, limits.seconds - state.elapsed())
            if stop is not None:
                timeout = 0.5 if timeout is None else min(timeout, 0.5)
            done = runner.wait(timeout)
            if stop is not None and stop.is_set():
                for fin in done:
                    record_one(fin)
                raise KeyboardInterrupt
            state.in_flight = runner.pending()
            if not done and limits.seconds is not None and state.elapsed() >= limits.seconds:
                # Time is up: runs in flight are stopped and not counted.
                state.stopping = "time limit"
                cancel()
                continue
            if limits.hit_goal is None:
                top_up()  # a hit cannot stop the loop: start the next run at once
            for fin in done:
                record_one(fin)
            reason = finished_reason()
            if reason and not state.stopping:
                state.stopping = reason
                if reason != "run limit":
                    cancel()
            if on_change:
                on_change(state)
    except RunnerGone as exc:
        # Nothing in flight will come back: keep what finished, stop as if interrupted.
        interrupted = True
        state.gone = str(exc)
        state.stopping = "the cluster is gone"
    except KeyboardInterrupt:
        interrupted = True
        state.stopping = "interrupted"
        shield_the_closing_writes()
        cancel()
        # Runs that finish while we stop are still counted: nothing measured is lost.
        for fin in runner.drain():
            try:
                record_one(fin)
            except Exception:
                continue
    finally:
        runner.close()
        if on_change:
            on_change(state)
    return state, interrupted


# Below this much free space a run's TSAN log may not have been written whole: a run
# prints megabytes of output before its report as often as not.
MIN_FREE_BYTES = 16 << 20


def disk_full(path: Path) -> str | None:
    """What to say when the file system of ``path`` is (nearly) full, else None."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= MIN_FREE_BYTES:
        return None
    return (
        f"{path}: the disk is full ({free} bytes free, under {MIN_FREE_BYTES >> 20} MB), "
        "so a run's output or TSAN log may not have been written (that run is not "
        "counted); free some space, then --resume"
    )


def lose_the_terminal() -> None:
    """After a hangup every write to the terminal fails (EIO), and the first one, in
    the middle of the closing writes, ended repro before the summary was written: the
    terminal's outputs go to /dev/null from here on (the run directory keeps it all)."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for target in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(fd, target)
    os.close(fd)


def shield_the_closing_writes() -> None:
    """After the first Ctrl-C (or SIGTERM), the next one does not cut the closing writes.

    Stopping takes a moment: runs in flight are ended and counted, then the run
    directory's meta and summary and the --json-out are written. A second signal there
    (a user pressing twice, or `timeout`, which signals both repro and its process
    group) left the summary stale and the resume hint unsaid. The second is said and
    passed over; a third quits at once. Main thread only, where signals are handled.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    seen = [0]

    def again(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            lose_the_terminal()
        seen[0] += 1
        if seen[0] >= 2:
            raise KeyboardInterrupt
        import sys

        sys.stderr.write("stopping: writing what was measured (once more to quit at once)\n")

    signal.signal(signal.SIGINT, again)
    signal.signal(signal.SIGTERM, again)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, again)


def _record(
    done: Finished,
    matcher: Matcher,
    runlog: RunLog,
    state: StressState,
    tags: Tags,
) -> None:
    record = runlog.record
    result = done.result
    assert result is not None
    found = signature_events(result.found)
    new = [e for e in {e.id: e for e in found}.values() if e.id not in record.signatures]
    state.session.add(result.outcome)
    keep = _keep_log(result, state.session, bool(new))
    log_dir = Path(result.log_dir) if result.log_dir else None
    rel: str | None = None
    if keep and done.files is not None:
        rel = str(
            write_remote_logs(runlog.dir.logs, result.index, done.files).relative_to(
                runlog.dir.path
            )
        )
    elif keep and log_dir is not None:
        rel = str(log_dir.relative_to(runlog.dir.path))
    elif log_dir is not None:
        shutil.rmtree(log_dir, ignore_errors=True)
    for entry in new:
        runlog.log(replace(entry, example=rel))
    runlog.log(
        RunEvent(
            index=result.index,
            outcome=result.outcome,
            exit_code=result.exit_code,
            duration=result.duration,
            target_reports=result.target_reports,
            signatures=tuple(result.signatures),
            fatal=tuple(result.fatal),
            detail=result.detail,
            log_dir=rel,
            started=result.started,
            elapsed=state.elapsed_before + state.elapsed(),
            pos=tags.pos,
            id=tags.id,
            phase=tags.phase,
            setting=tags.setting,
            worker=done.worker,
            lingered=result.lingered,
            suppressed=result.suppressed,
        )
    )
    state.last_event = f"run {result.index}: {result.outcome.value}"
