"""The stress loop: run the reproducer again and again, count the target race apart.

Runs go through a small thread pool (the work happens in child processes, so threads
only wait); every result is appended to the run directory the moment it is known, so
an interrupted loop keeps everything it measured and can be resumed.
"""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.rundir import RunDir
from repro.runner import Cancelled, InFlight, Matcher, Outcome, RunResult, RunSpec, run_once
from repro.stats import rate, wilson_interval
from repro.tsan.model import ParsedLog
from repro.tsan.signature import DEFAULT_DROP, signature_of

KEEP_TARGET_LOGS = 20
KEEP_FAILURE_LOGS = 5


@dataclass(frozen=True)
class Limits:
    runs: int | None = None
    seconds: float | None = None
    until_first: bool = False
    jobs: int = 1
    until_hits: int | None = None  # stop after this many target hits (calibration)

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
class SignatureEntry:
    id: str
    kind: str
    top_frames: list[list[str]]
    description: str
    target: bool
    count: int = 0
    runs: int = 0
    example: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "top_frames": self.top_frames,
            "description": self.description,
            "target": self.target,
            "count": self.count,
            "runs": self.runs,
            "example": self.example,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SignatureEntry:
        return cls(
            id=d["id"],
            kind=d["kind"],
            top_frames=d["top_frames"],
            description=d["description"],
            target=bool(d["target"]),
            count=int(d.get("count", 0)),
            runs=int(d.get("runs", 0)),
            example=d.get("example"),
        )


@dataclass
class Tally:
    """What a series of runs showed. Pure bookkeeping: it never touches the disk."""

    runs: int = 0
    hits: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, SignatureEntry] = field(default_factory=dict)
    first_hit_seconds: float | None = None
    first_hit_run: int | None = None
    run_seconds: float = 0.0
    elapsed_before: float = 0.0  # wall time of earlier sessions (resume)
    fatal_examples: list[str] = field(default_factory=list)

    def add(
        self, result: RunResult, entries: Iterable[SignatureEntry], elapsed: float
    ) -> list[SignatureEntry]:
        """Count one run; returns the signatures seen for the first time."""
        self.runs += 1
        self.run_seconds += result.duration
        self.outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.TARGET:
            self.hits += 1
            if self.first_hit_seconds is None:
                self.first_hit_seconds = self.elapsed_before + elapsed
                self.first_hit_run = self.runs
        for msg in result.fatal:
            if msg not in self.fatal_examples and len(self.fatal_examples) < 5:
                self.fatal_examples.append(msg)
        new = []
        seen_this_run: set[str] = set()
        for entry in entries:
            known = self.signatures.get(entry.id)
            if known is None:
                known = entry
                self.signatures[entry.id] = known
                new.append(known)
            known.count += 1
            if entry.id not in seen_this_run:
                known.runs += 1
                seen_this_run.add(entry.id)
        return new

    @property
    def rate(self) -> float:
        return rate(self.hits, self.runs)

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.runs)

    def mean_run_seconds(self) -> float:
        return self.run_seconds / self.runs if self.runs else 0.0

    def summary(self) -> dict[str, Any]:
        lo, hi = self.ci95
        sigs = sorted(self.signatures.values(), key=lambda e: (not e.target, -e.count, e.id))
        return {
            "runs": self.runs,
            "hits": self.hits,
            "rate": self.rate,
            "rate_ci95": [lo, hi],
            "outcomes": {o.value: self.outcomes.get(o.value, 0) for o in Outcome},
            "signatures": [s.to_json() for s in sigs],
            "time_to_first_hit": self.first_hit_seconds,
            "first_hit_run": self.first_hit_run,
            "mean_run_seconds": self.mean_run_seconds(),
            "tsan_failures": self.fatal_examples,
        }


def entries_for(parsed: ParsedLog, matcher: Matcher) -> list[SignatureEntry]:
    from repro.runner import is_target

    drop = (*DEFAULT_DROP, *matcher.drop)
    out = []
    for report in parsed.reports:
        sig = signature_of(report, depth=matcher.depth, drop=drop)
        out.append(
            SignatureEntry(
                id=sig.id,
                kind=sig.kind,
                top_frames=[list(a) for a in sig.accesses],
                description=sig.describe(),
                target=is_target(report, matcher),
            )
        )
    return out


@dataclass
class StressState:
    """Live state the display reads; updated only by the loop's thread."""

    tally: Tally
    limits: Limits
    started: float
    in_flight: int = 0
    stopping: str | None = None
    last_event: str = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def eta(self) -> float | None:
        t = self.tally
        candidates = []
        if self.limits.seconds is not None:
            candidates.append(max(0.0, self.limits.seconds - self.elapsed()))
        if self.limits.runs is not None and t.runs:
            left = max(0, self.limits.runs - t.runs)
            per_run = self.elapsed() / max(1, t.runs)
            candidates.append(left * per_run)
        return min(candidates) if candidates else None


def _keep_log(result: RunResult, tally: Tally, new: list[SignatureEntry]) -> bool:
    if new:
        return True
    if result.outcome is Outcome.TARGET:
        return tally.hits <= KEEP_TARGET_LOGS
    if result.outcome in (Outcome.CRASH, Outcome.TIMEOUT, Outcome.TSAN_FAILURE):
        return tally.outcomes[result.outcome.value] <= KEEP_FAILURE_LOGS
    return False


def load_tally(rundir: RunDir) -> tuple[Tally, int]:
    """Rebuild the tally from the event log (resume), and the next run index."""
    tally = Tally()
    catalogue = {
        e["id"]: SignatureEntry.from_json(e) for e in (rundir.read("signatures.json") or [])
    }
    next_index = 0
    for ev in rundir.events():
        if ev.get("event") != "run":
            continue
        result = RunResult.from_json(ev)
        entries = []
        for sid in result.signatures:
            known = catalogue.get(sid)
            if known is not None:
                entries.append(
                    SignatureEntry(
                        id=sid,
                        kind=known.kind,
                        top_frames=known.top_frames,
                        description=known.description,
                        target=known.target,
                        example=known.example,
                    )
                )
        tally.add(result, entries, float(ev.get("elapsed", 0.0)))
        next_index = max(next_index, result.index + 1)
    meta = rundir.meta()
    tally.elapsed_before = float(meta.get("elapsed", 0.0))
    if tally.first_hit_seconds is not None:
        tally.first_hit_seconds = float(meta.get("time_to_first_hit") or tally.first_hit_seconds)
    return tally, next_index


def stress_loop(
    spec: RunSpec,
    matcher: Matcher,
    limits: Limits,
    rundir: RunDir,
    tally: Tally | None = None,
    first_index: int = 0,
    on_change: Callable[[StressState], None] | None = None,
    extra_event: dict[str, Any] | None = None,
) -> tuple[StressState, bool]:
    """Run until a limit is reached; returns the state and whether it was interrupted."""
    tally = tally or Tally()
    state = StressState(tally=tally, limits=limits, started=time.monotonic())
    inflight = InFlight()
    next_index = first_index
    interrupted = False

    counted_at_start = tally.runs
    launched = 0

    def should_launch() -> bool:
        if state.stopping:
            return False
        # Counted by launches, not results: the next run starts before the previous
        # one is recorded, so that bookkeeping never sits between two runs.
        if limits.runs is not None and counted_at_start + launched >= limits.runs:
            return False
        if limits.seconds is not None and state.elapsed() >= limits.seconds:
            return False
        goal = limits.hit_goal
        return not (goal is not None and tally.hits >= goal)

    def finished_reason() -> str | None:
        goal = limits.hit_goal
        if goal is not None and tally.hits >= goal:
            return "first hit" if goal == 1 else f"{goal} hits"
        if limits.runs is not None and tally.runs >= limits.runs:
            return "run limit"
        if limits.seconds is not None and state.elapsed() >= limits.seconds:
            return "time limit"
        return None

    pool = cf.ThreadPoolExecutor(max_workers=limits.jobs, thread_name_prefix="repro-run")
    futures: set[cf.Future[tuple[RunResult, ParsedLog]]] = set()

    def top_up() -> None:
        nonlocal next_index, launched
        while len(futures) < limits.jobs and should_launch():
            futures.add(pool.submit(run_once, spec, next_index, rundir.logs, matcher, inflight))
            next_index += 1
            launched += 1
        state.in_flight = len(futures)

    try:
        while True:
            top_up()
            if not futures:
                break
            timeout = None
            if limits.seconds is not None:
                timeout = max(0.05, limits.seconds - state.elapsed())
            done, futures = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
            state.in_flight = len(futures)
            if not done and limits.seconds is not None and state.elapsed() >= limits.seconds:
                # Time is up: runs in flight are stopped and not counted.
                state.stopping = "time limit"
                inflight.cancel()
                continue
            if limits.hit_goal is None:
                top_up()  # a hit cannot stop the loop: start the next run at once
            for fut in done:
                try:
                    result, parsed = fut.result()
                except Cancelled:
                    continue
                _record(result, parsed, matcher, tally, rundir, state, extra_event)
            reason = finished_reason()
            if reason and not state.stopping:
                state.stopping = reason
                if reason != "run limit":
                    inflight.cancel()
            if on_change:
                on_change(state)
    except KeyboardInterrupt:
        interrupted = True
        state.stopping = "interrupted"
        inflight.cancel()
        # Runs that finish while we stop are still counted: nothing measured is lost.
        for fut in cf.as_completed(futures):
            try:
                result, parsed = fut.result()
            except (Cancelled, Exception):
                continue
            _record(result, parsed, matcher, tally, rundir, state, extra_event)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if on_change:
            on_change(state)
    return state, interrupted


def _record(
    result: RunResult,
    parsed: ParsedLog,
    matcher: Matcher,
    tally: Tally,
    rundir: RunDir,
    state: StressState,
    extra_event: dict[str, Any] | None,
) -> None:
    entries = entries_for(parsed, matcher)
    elapsed = state.elapsed()
    new = tally.add(result, entries, elapsed)
    keep = _keep_log(result, tally, new)
    log_dir = Path(result.log_dir) if result.log_dir else None
    if keep and log_dir is not None:
        rel = str(log_dir.relative_to(rundir.path))
        result.log_dir = rel
        for entry in new:
            entry.example = rel
    else:
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)
        result.log_dir = None
    event = {"event": "run", **result.to_json(), "elapsed": round(elapsed, 3)}
    if extra_event:
        event.update(extra_event)
    rundir.append(event)
    if new:
        rundir.write("signatures.json", [e.to_json() for e in tally.signatures.values()])
    state.last_event = f"run {result.index}: {result.outcome.value}"
