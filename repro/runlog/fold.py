"""The one fold from a run directory's events to the facts everybody reads.

The stress console, the bisect, ``summary.json``, ``--json-out`` and the three
report formats all state runs, hits, the rate and its interval, and per-commit
counts. They once computed them apart and disagreed (one counted crashes in the
rate's denominator, one did not). Here is the only place where events become
numbers: the rate is hits over *evidence* runs (target, other, clean); crashes,
timeouts, TSAN failures and invalid runs are counted apart and never enter it.
Pure: no I/O.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from repro.runlog.events import (
    BuildEvent,
    Event,
    RunEvent,
    SignatureEvent,
    StrategyEvent,
    UnusableEvent,
)
from repro.strategy.stats import rate, wilson_interval
from repro.tsan.outcome import CAUGHT_BY_TSAN, ORDER, Outcome


@dataclass
class Counts:
    """Runs by outcome, and what follows from them."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1

    @property
    def runs(self) -> int:
        """Every run, whatever its outcome."""
        return sum(self.outcomes.values())

    @property
    def evidence(self) -> int:
        """Runs that could have shown the race: the rate's denominator."""
        return sum(n for o, n in self.outcomes.items() if o.is_evidence)

    @property
    def hits(self) -> int:
        return self.outcomes[Outcome.TARGET]

    @property
    def other(self) -> int:
        """Runs whose only reports were other races."""
        return self.outcomes[Outcome.OTHER]

    @property
    def invalid(self) -> int:
        return sum(n for o, n in self.outcomes.items() if o.is_invalid)

    @property
    def failed(self) -> int:
        """Runs that did not get to run the reproducer through (crash, timeout, TSAN)."""
        return self.runs - self.evidence - self.invalid

    @property
    def not_evidence(self) -> int:
        return self.runs - self.evidence

    @property
    def rate(self) -> float:
        return rate(self.hits, self.evidence)

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.evidence)

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.ci95
        return {
            "runs": self.runs,
            "evidence_runs": self.evidence,
            "hits": self.hits,
            "rate": self.rate if self.evidence else None,
            "rate_ci95": [lo, hi] if self.evidence else None,
            "outcomes": {o.value: self.outcomes[o] for o in ORDER},
            "invalid_runs": self.invalid,
            "failed_runs": self.failed,
        }


@dataclass
class SignatureStats:
    """A race signature and how often it showed."""

    entry: SignatureEvent
    reports: int = 0
    runs: int = 0
    # Runs in which it showed and the target did not: such a race is no symptom of the
    # target's (CPython's string interning at frozenlist's fixed commits, the fatal-error
    # handler's walk of other threads in greenlet's crashed runs).
    runs_without_target: int = 0

    def to_json(self) -> dict[str, Any]:
        d = self.entry.to_json()
        del d["event"]
        d.update(count=self.reports, runs=self.runs)
        return d


@dataclass
class PositionRecord:
    """Everything measured at one bisect position (a commit or a release)."""

    counts: Counts = field(default_factory=Counts)
    built: bool | None = None
    cached: bool = False  # built before this run directory, found in the cache
    build_seconds: float = 0.0
    build_error: str | None = None
    build_log: str | None = None
    backend: str | None = None  # a Python package's build backend
    modules: tuple[str, ...] | None = None  # a Python package's extension modules
    unusable: str | None = None
    run_seconds: float = 0.0
    phases: set[str] = field(default_factory=set)
    bisect_runs: list[bool] = field(default_factory=list)  # hit or not, strategy phase only
    other_signatures: set[str] = field(default_factory=set)
    other_runs: Counter[str] = field(default_factory=Counter)  # runs with each of them
    runs_with_other: int = 0
    invalid_details: Counter[str] = field(default_factory=Counter)

    @property
    def tested(self) -> bool:
        return self.built is not None or self.counts.runs > 0


@dataclass
class Record:
    """What a run directory's events say, folded. Feed it events in log order."""

    counts: Counts = field(default_factory=Counts)
    signatures: dict[str, SignatureStats] = field(default_factory=dict)
    positions: dict[int, PositionRecord] = field(default_factory=dict)
    strategy: StrategyEvent | None = None
    next_index: int = 0
    run_seconds: float = 0.0
    build_seconds: float = 0.0
    # The number of the run that hit first (its index + 1, as its log folder and the
    # timeline name it); with -j 2 it need not be the count of runs finished by then.
    first_hit_run: int | None = None
    first_hit_elapsed: float | None = None
    last_elapsed: float = 0.0
    fatal_examples: list[str] = field(default_factory=list)
    invalid_details: Counter[str] = field(default_factory=Counter)
    # Crashes and timeouts: how they ended ("exit 134", "timeout"), and the first kept log.
    failed_details: Counter[str] = field(default_factory=Counter)
    failed_log: str | None = None
    settings: dict[str, Counts] = field(default_factory=dict)  # amplify: per setting
    runs_with_other: int = 0  # runs that showed at least one other race (any outcome)
    lingered: int = 0  # runs whose children outlived them and were killed
    suppressed: Counter[str] = field(default_factory=Counter)  # reports hid, by line
    runs_suppressed: int = 0  # runs in which TSAN hid at least one report
    _seen_runs: set[int] = field(default_factory=set)

    @property
    def builds(self) -> int:
        """Commits this run directory needed built (or tried to build), the cache's
        included: what a bisect asked for, whatever an earlier one left behind."""
        return sum(1 for p in self.positions.values() if p.built is not None)

    @property
    def builds_from_cache(self) -> int:
        return sum(1 for p in self.positions.values() if p.built and p.cached)

    def position(self, pos: int) -> PositionRecord:
        rec = self.positions.get(pos)
        if rec is None:
            rec = self.positions[pos] = PositionRecord()
        return rec

    def apply(self, event: Event) -> None:
        if isinstance(event, RunEvent):
            self._run(event)
        elif isinstance(event, SignatureEvent):
            known = self.signatures.get(event.id)
            if known is None:
                self.signatures[event.id] = SignatureStats(event)
            elif known.entry.example is None and event.example is not None:
                known.entry = event
        elif isinstance(event, BuildEvent):
            p = self.position(event.pos)
            # Built by this run directory once, it stays so: a resumed bisect finds its
            # own earlier builds in the cache, and the record said "from the cache" of them.
            built_here = bool(p.built) and not p.cached
            p.built = event.ok
            p.cached = event.ok and event.cached and not built_here
            p.build_seconds += event.seconds
            self.build_seconds += event.seconds
            p.backend = event.backend or p.backend
            p.modules = event.modules if event.modules is not None else p.modules
            if not event.ok:
                p.build_error = event.error
                p.build_log = event.log
        elif isinstance(event, UnusableEvent):
            self.position(event.pos).unusable = event.reason
        elif isinstance(event, StrategyEvent):
            self.strategy = event

    def _run(self, ev: RunEvent) -> None:
        if ev.index in self._seen_runs:
            return  # a run is counted once, whatever a log holds
        self._seen_runs.add(ev.index)
        self.next_index = max(self.next_index, ev.index + 1)
        self.counts.add(ev.outcome)
        self.run_seconds += ev.duration
        self.lingered += ev.lingered
        if ev.suppressed:
            self.suppressed.update(ev.suppressed)
            self.runs_suppressed += 1
        self.last_elapsed = max(self.last_elapsed, ev.elapsed)
        if ev.outcome is Outcome.TARGET and self.first_hit_run is None:
            self.first_hit_run = ev.index + 1
            self.first_hit_elapsed = ev.elapsed
        for msg in ev.fatal:
            if msg not in self.fatal_examples and len(self.fatal_examples) < 5:
                self.fatal_examples.append(msg)
        if ev.outcome.is_invalid:
            self.invalid_details[f"{ev.outcome.value}: {ev.detail or ''}".rstrip(": ")] += 1
        if ev.outcome in (Outcome.CRASH, Outcome.TIMEOUT):
            self.failed_details[_how_it_ended(ev)] += 1
            if self.failed_log is None and ev.log_dir:
                self.failed_log = ev.log_dir
        others: set[str] = set()
        for sid in ev.signatures:
            stats = self.signatures.get(sid)
            if stats is None:  # an old log without signature events: a bare entry
                stats = self.signatures[sid] = SignatureStats(
                    SignatureEvent(sid, "race", (), sid, target=False)
                )
            stats.reports += 1
            if not stats.entry.target:
                others.add(sid)
        for sid in set(ev.signatures):
            self.signatures[sid].runs += 1
            self.signatures[sid].runs_without_target += ev.outcome is not Outcome.TARGET
        self.runs_with_other += bool(others)
        if ev.setting is not None:
            self.settings.setdefault(ev.setting, Counts()).add(ev.outcome)
        if ev.pos is not None:
            p = self.position(ev.pos)
            p.counts.add(ev.outcome)
            p.run_seconds += ev.duration
            if ev.phase:
                p.phases.add(ev.phase)
            if ev.phase == "bisect" and ev.outcome.is_evidence:
                p.bisect_runs.append(ev.outcome is Outcome.TARGET)
            p.other_signatures |= others
            p.other_runs.update(others)
            p.runs_with_other += bool(others)
            if ev.outcome.is_invalid:
                p.invalid_details[ev.outcome.value] += 1

    # -- what the readers ask ------------------------------------------------------------

    @property
    def other_signature_ids(self) -> list[str]:
        return [sid for sid, s in self.signatures.items() if not s.entry.target]

    def same_races(self) -> dict[str, str]:
        """Each partial signature of the record that is a complete one's race once more:
        partial id -> complete id.

        A report whose one side TSAN could not restore reads "? | f"; where a complete
        signature of the record has that side, it is that race once more. Every count
        of distinct races and every table of races asks here, so that "4 distinct" is
        not said beside a table of 7 rows with nothing to tell the 3 apart."""
        full = {
            sid: s.entry
            for sid, s in self.signatures.items()
            if s.entry.top_frames and all(s.entry.top_frames)
        }
        pairs = ((sid, _whole_of(s, full)) for sid, s in self.signatures.items())
        return {sid: whole for sid, whole in pairs if whole is not None}

    def distinct_races(self, ids: Iterable[str]) -> int:
        """How many races the signatures ``ids`` are (``same_races``: "other races: 2"
        was said of one race)."""
        same = self.same_races()
        return len({same.get(sid, sid) for sid in ids})

    def signatures_json(self) -> list[dict[str, Any]]:
        ranked = sorted(
            self.signatures.values(),
            key=lambda s: (not s.entry.target, -s.runs, -s.reports, s.entry.id),
        )
        same = self.same_races()
        return [{**s.to_json(), "same_race_as": same.get(s.entry.id)} for s in ranked]

    def mean_run_seconds(self) -> float:
        return self.run_seconds / self.counts.runs if self.counts.runs else 0.0

    def other_races_json(self) -> dict[str, int]:
        """Other races as a reader means them: runs that had one, and distinct races."""
        return {
            "runs": self.runs_with_other,
            "distinct": self.distinct_races(self.other_signature_ids),
        }

    def suppressed_json(self) -> dict[str, Any]:
        """The reports TSAN's suppressions hid over the whole record (every format's)."""
        return {
            "runs": self.runs_suppressed,
            "reports": sum(self.suppressed.values()),
            "by": dict(self.suppressed.most_common()),
        }

    def summary_json(self) -> dict[str, Any]:
        """The counts of the whole record: what every output of a stress run states."""
        out = self.counts.to_json()
        out.update(
            {
                "signatures": self.signatures_json(),
                "other_races": self.other_races_json(),
                "invalid": dict(self.invalid_details),
                "time_to_first_hit": self.first_hit_elapsed,
                "first_hit_run": self.first_hit_run,
                "mean_run_seconds": round(self.mean_run_seconds(), 4),
                "tsan_failures": list(self.fatal_examples),
                "failed": dict(self.failed_details),
                "failed_log": self.failed_log,
                "lingered": self.lingered,
                "suppressed": self.suppressed_json(),
            }
        )
        return out


def _whole_of(stats: SignatureStats | None, full: Mapping[str, SignatureEvent]) -> str | None:
    """The complete signature a partial one is part of (the first by id if several)."""
    if stats is None or not stats.entry.top_frames or all(stats.entry.top_frames):
        return None
    part = stats.entry
    known = [side for side in part.top_frames if side]
    if not known:
        return None
    for sid in sorted(full):
        entry = full[sid]
        if entry.kind == part.kind and all(side in entry.top_frames for side in known):
            return sid
    return None


def fold(events: Iterable[Event]) -> Record:
    record = Record()
    for ev in events:
        record.apply(ev)
    return record


def step_verdict(p: PositionRecord, clean_end: bool, p_clean: float | None = None) -> str:
    """What one bisect position was found to be, in the words of the step table.

    ``p_clean`` is the strategy's probability that the position is clean, when a
    strategy exists; without it (a report of a run that ended early) the runs
    alone are described.
    """
    c = p.counts
    if p.unusable:
        return "skipped"
    if c.hits:
        return "racy"
    if clean_end and c.evidence and (p_clean is None or p_clean >= 1.0 - 1e-9):
        return "clean (verified end)"  # checked apart, before the search (older run dirs)
    if not c.evidence:
        return "untested" if p.tested else ""
    if p_clean is not None:
        return f"clean ({p_clean:.1%})"
    return f"no hit in {c.evidence} runs"


def _how_it_ended(ev: RunEvent) -> str:
    """A crash's exit status (a signal by name when the status is one), or "timeout"."""
    if ev.outcome is Outcome.TIMEOUT:
        return "timeout"
    if ev.detail and CAUGHT_BY_TSAN in ev.detail:
        # TSAN's handler exits 66, the status of "races found", or hangs: the signal
        # is what says how it ended.
        return f"crash: {ev.detail}"
    code = ev.exit_code
    if code is None:
        return "crash"
    signo = -code if code < 0 else code - 128 if 128 < code < 160 else None
    if signo is not None:
        try:
            return f"crash: exit {code} ({signal.Signals(signo).name})"
        except ValueError:
            pass
    return f"crash: exit {code}"
