"""One bisect's state: its commits, the run log it feeds, the strategy made from that log,
and building and running one commit; what the bisect's steps share (``repro bisect``'s
command is repro.app.bisect, its lanes repro.app.lanes)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from repro.app.context import NotRunnableHere, Overrides, Prepared, in_cache, prepare
from repro.app.environment import (
    extension_backend,
    extension_build_seconds,
    extension_modules,
    run_variables,
)
from repro.app.executors import Runner, RunnerGone
from repro.app.loop import Limits, StressState, Tags, stop_advice, stress_loop
from repro.app.view import PlainTicker, StressView
from repro.builds.cache import BuildCache, BuildError, MachineBuildError
from repro.builds.progress import RichBuildProgress
from repro.errors import ReproError
from repro.recipe import LoadedRecipe
from repro.report.fmt import build_cell, plural, probability
from repro.runlog import (
    BuildEvent,
    Event,
    PositionRecord,
    RunEvent,
    RunLog,
    StrategyEvent,
    UnusableEvent,
)
from repro.runlog.bisect_answer import bound, options_of, strategy_from
from repro.runlog.bisect_view import position_rows
from repro.strategy.bisect import Bisector, Probe, clean_end_prior
from repro.strategy.terms import LIKELY_AT, Side, Terms
from repro.strategy.usability import cannot_count, usable_fraction
from repro.text import truncate
from repro.tsan.outcome import Outcome

if TYPE_CHECKING:
    from repro.app.cluster import Cluster


# Runs that stop the probe at the first: unreadable reports stop the bisect (no run here
# can count); a module that turns the GIL back on makes the commit unusable (its runs can
# show no race), and stops the bisect at the racy end.
STOP_A_BISECT = frozenset({Outcome.UNSYMBOLIZED, Outcome.GIL_ENABLED})
GIL_UNUSABLE = (
    "its runs turn the GIL back on (a module without Py_mod_gil at this commit): set "
    "PYTHON_GIL=0 in reproducer.env to test it"
)


EXIT_INVALID = 2


# On a cluster, probe several commits at once when a build costs at least this many runs.
ROUND_BUILD_RUNS = 10.0


class StopBisect(Exception):
    """A run showed that no run here can count (e.g. unsymbolized reports)."""

    def __init__(
        self,
        outcome: Outcome,
        symbolizer: Mapping[str, Any] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome
        self.symbolizer = symbolizer  # the run's choice, for what to say of it
        self.detail = detail  # the run's own (which module has no symbols)

    def advice(self) -> str:
        """What to do, as the stress loop says it (``stop_advice``)."""
        return stop_advice(self.outcome, self.detail, self.symbolizer)


@dataclass(frozen=True)
class Lane:
    """One of the probes a cluster runs at once (``probe_lanes``): its own workers,
    which build its commit and run it, their slots, run indices from the pool that all
    lanes share (so that each index is handed out once), and its stop (set to leave a
    probe the other lanes settled, or for all lanes at the end)."""

    number: int
    workers: tuple[str, ...]
    slots: int
    indices: Callable[[], int]
    stop: threading.Event


class IndexPool:
    """Run indices for lanes that log into one run directory: each one handed out once."""

    def __init__(self, start: int) -> None:
        self._count = itertools.count(start)
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            return next(self._count)


@dataclass
class BisectOptions:
    recipe: Path | None
    racy: str | None = None
    fixed: str | None = None
    clean: str | None = None
    find: str | None = None
    confidence: float | None = None
    versions: str | None = None
    jobs: int | None = None  # None: a new bisect takes the cores, a resumed one its own
    repo: str | None = None
    runs_dir: Path | None = None
    json_out: Path | None = None
    report: Path | None = None
    resume: Path | None = None
    calibration_runs: int | None = None
    calibration_from: Path | None = None  # a stress record of the racy end, reused
    threads: int | None = None
    timeout: float | None = None
    sets: tuple[str, ...] = ()
    then_git: str | None = None  # after --versions: bisect the commits between the releases
    keep_going: bool = False  # count unsymbolized runs apart instead of stopping
    plan: bool = False  # stop after calibration, having said what the bisect will cost
    probes: int | None = None  # commits probed at once on a cluster (None: decided here)
    workers: int | None = None  # a LocalCluster of this many worker processes
    cluster: str | None = None  # or the address of a Dask scheduler
    shared_cache: Path | None = None  # a cache every worker sees


@dataclass
class Position:
    """One candidate: a commit (sha) or a CPython release (version)."""

    id: str
    label: str
    info: dict[str, Any] = field(default_factory=dict)


# --- the range ------------------------------------------------------------------------


def expand_versions(spec: str) -> list[str]:
    """`3.13.0..3.13.5` -> every patch release in between; `a,b,c` -> as given."""
    if ".." in spec:
        a, b = spec.split("..", 1)
        ma = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", a.strip())
        mb = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", b.strip())
        if not ma or not mb or ma.group(1, 2) != mb.group(1, 2):
            raise ReproError(
                f"--versions {spec!r}: give X.Y.A..X.Y.B within one minor series, "
                "or a comma-separated list"
            )
        lo, hi = int(ma.group(3)), int(mb.group(3))
        if lo == hi:
            raise ReproError(f"--versions {spec!r}: the two ends are the same release")
        step = 1 if hi > lo else -1
        return [f"{ma.group(1)}.{ma.group(2)}.{k}" for k in range(lo, hi + step, step)]
    items = [v.strip() for v in spec.split(",") if v.strip()]
    if len(items) < 2:
        raise ReproError(f"--versions {spec!r}: need at least two releases")
    return items


# --- the command ----------------------------------------------------------------------


class BisectRun:
    """One bisection: its run log, its positions, and the strategy fed from the log."""

    def __init__(
        self,
        runlog: RunLog,
        loaded: LoadedRecipe,
        meta: dict[str, Any],
        console: Console,
        jobs: int,
        overrides: Overrides,
        keep_going: bool = False,
    ) -> None:
        self.runlog = runlog
        self.rundir = runlog.dir
        self.loaded = loaded
        self.meta = meta
        self.terms = Terms.from_meta(meta)
        self.console = console
        self.jobs = jobs
        self.overrides = overrides
        self.keep_going = keep_going
        self.positions = [Position(**p) for p in meta["positions"]]
        self.bisector: Bisector | None = None
        self.started = time.monotonic()
        self._prepared: dict[int, Prepared] = {}
        # Wall time of each (position, phase) in this process: a calibration's early
        # look and its rest are one phase, and the console's elapsed restarted between them.
        self._elapsed: dict[tuple[int, str], float] = {}
        # what the builds that came from the cache took when they were made
        self._cached_build_seconds: dict[int, float] = {}
        self._cached_positions: frozenset[int] | None = None  # cached_positions()
        self._tried: dict[int, set[str]] = {}  # position -> workers asked to build it
        self.cluster: Cluster | None = None  # builds and runs on Dask workers when set
        self.probes: int | None = None  # --probes
        runlog.listeners.append(self._feed)

    @property
    def record(self) -> Any:
        return self.runlog.record

    def stats(self, pos: int) -> PositionRecord:
        return self.runlog.record.position(pos)

    def _interior(self, pos: int) -> bool:
        return 0 < pos < len(self.positions) - 1

    # -- the strategy follows the log --------------------------------------------------

    def _feed(self, ev: Event) -> None:
        """Give the strategy what one event tells it (live or replayed)."""
        if isinstance(ev, StrategyEvent):
            self._make_bisector(ev)
            return
        b = self.bisector
        if b is None:
            return
        if isinstance(ev, BuildEvent) and ev.ok:
            b.mark_built(ev.pos)
        elif isinstance(ev, UnusableEvent) and self._interior(ev.pos):
            b.record_unusable(ev.pos)
        elif (
            isinstance(ev, RunEvent)
            and ev.phase == "bisect"
            and ev.pos is not None
            and ev.outcome.is_evidence
        ):
            b.record_run(ev.pos, ev.outcome is Outcome.TARGET)

    def _make_bisector(self, ev: StrategyEvent) -> None:
        self.bisector = self._strategy(ev.calib_hits, ev.calib_runs, **options_of(ev))

    def _strategy(self, calib_hits: int, calib_runs: int, **options: Any) -> Bisector:
        """A strategy from everything measured so far (``bisect_answer.strategy_from``,
        which a report replays too), told which commits the cache holds built."""
        bis = strategy_from(self.record, len(self.positions), calib_hits, calib_runs, **options)
        for pos in self.cached_positions():
            bis.mark_built(pos)
        return bis

    def bound(self) -> tuple[float, float, float]:
        """(rate, Fano's bound, the floor at the answer) for this bisect as its evidence
        stands: the one computation behind the plan's line, the closing line and the
        report, which once stated two bounds at two rates for one run."""
        assert self.bisector is not None
        return bound(self.bisector, len(self.positions), float(self.meta["confidence"]))

    def costs(self) -> tuple[float, float]:
        """What a build and a run cost, in seconds, as measured so far: the longest build
        made here or recorded for a cached one, or 30 runs' worth until one is known. The
        floor stayed after a build was measured, and a plan took a 1.8 s build as 3 min
        11 s."""
        mean_run = self.record.mean_run_seconds()
        measured = self.measured_build_seconds()
        guess = measured if measured > 0 else 30.0 * max(mean_run, 0.01)
        return max(guess, 1.0), max(mean_run, 0.001)

    def measured_build_seconds(self) -> float:
        """The longest build made by this bisect so far, or made for a cached build it
        took (as the cache recorded it: a plan took a cached 80 s build as 18.6 s, 30 runs'
        worth); 0 when nothing says."""
        made = [s.build_seconds for s in self.record.positions.values() if s.built and not s.cached]
        return max([*made, *self._cached_build_seconds.values()], default=0.0)

    def provisional(self) -> Bisector:
        """The strategy while the racy end still calibrates, for the lanes that build ahead."""
        build_cost, run_cost = self.costs()
        c0 = self.stats(0).counts
        anchors = self.meta.get("anchors")
        return self._strategy(
            c0.hits,
            c0.evidence,
            confidence=float(self.meta["confidence"]),
            build_cost=build_cost,
            run_cost=run_cost,
            batch=self.jobs,
            anchors=list(anchors) if anchors is not None else None,
            clean_end_racy=clean_end_prior(len(self.positions)),
        )

    # -- actions ------------------------------------------------------------------

    def describe(self, pos: int) -> str:
        p = self.positions[pos]
        subject = p.info.get("subject")
        return f"{p.label}" + (f" {subject!r}" if subject else "")

    def probe_line(self, probe: Probe) -> str:
        """What a probe will do, for the console: where, how many runs, what is known, and
        why when it probes a commit already known racy."""
        c = self.stats(probe.index).counts
        so_far = f"so far {c.evidence} runs, {c.hits} hits"
        if c.not_evidence:
            so_far += f"; {c.not_evidence} more could not count"
        line = f"{escape(self.describe(probe.index))}: up to {probe.runs} runs ({so_far})"
        if probe.for_rate:
            line += (
                "; already racy: hits here sharpen the race's rate, so each miss at the "
                "next commit weighs more"
            )
        return line

    def build(
        self, pos: int, workers: Sequence[str] = (), stop: threading.Event | None = None
    ) -> Prepared | None:
        """Build (or reuse) one position; None, logged as unusable, when it cannot build.

        ``workers``: on a cluster, the workers that must hold the build (a lane's); by
        default every worker. A build already held elsewhere is made on the missing
        ones only (found at once in a shared cache): the runs go to the holders alone
        (``DaskRunner``), so a commit a lane built on its worker is built on the others
        before they run it, once lanes give way. A worker where it failed is not asked
        again but by a lane. ``stop`` set meanwhile stops the build (``BuildCancelled``:
        nothing is logged, the position stays usable)."""
        from repro.app.cluster import ClusterPrepared

        known = self._prepared.get(pos)
        missing: list[str] = []
        if known is not None:
            if self.cluster is None or not isinstance(known, ClusterPrepared):
                return known
            tried = self._tried.get(pos, set())
            wanted = workers or [w for w in self.cluster.workers() if w not in tried]
            missing = [w for w in wanted if w not in known.holders]
            if not missing:
                return known
        p = self.positions[pos]
        t0 = time.monotonic()
        refs = self._refs(pos)
        try:
            if self.cluster is not None:
                asked = missing or list(workers) or list(self.cluster.workers())
                self._tried.setdefault(pos, set()).update(asked)
                prepared: Prepared = self.cluster.prepare_local(
                    self.loaded,
                    self.overrides,
                    workers=asked,
                    stop=stop,
                    **refs,
                )
                self.cluster.tell(self.console)
            else:
                progress = RichBuildProgress(self.console)
                prepared = prepare(self.loaded, self.overrides, progress=progress, **refs)
        except NotRunnableHere as exc:
            seconds = time.monotonic() - t0
            why = str(exc).removeprefix(f"{self.loaded.path}: ")
            self.runlog.log(BuildEvent(pos, p.id, True, seconds))
            self.runlog.log(UnusableEvent(pos, p.id, f"cannot run: {why}"))
            self.console.print(
                f"  [yellow]skip[/] {escape(self.describe(pos))}: its build cannot run the "
                f"reproducer: {escape(why)}",
                highlight=False,
            )
            return None
        except MachineBuildError as exc:
            # Not this commit's fault: every commit would fail so. Stop, as on any fault
            # of the environment; the run directory resumes once it is mended.
            raise ReproError(f"cannot build {self.describe(pos)} on this machine: {exc}") from None
        except BuildError as exc:
            if known is not None and not workers:
                return known  # the workers that hold it run it
            seconds = time.monotonic() - t0
            first = str(exc).splitlines()[0] if str(exc) else "build failed"
            log = getattr(exc, "log_path", None)
            self.runlog.log(BuildEvent(pos, p.id, False, seconds, first, str(log) if log else None))
            self.runlog.log(UnusableEvent(pos, p.id, "does not build"))
            where = f" (log: {log})" if log else ""
            self.console.print(
                f"  [yellow]skip[/] {escape(self.describe(pos))}: does not build: "
                f"{escape(first)}{escape(where)}",
                highlight=False,
            )
            return None
        seconds = time.monotonic() - t0
        backend = extension_backend(prepared.info)
        modules = extension_modules(prepared.info)
        cached = self.cluster is None and progress.begun == 0
        if cached and (made := extension_build_seconds(prepared.info)) is not None:
            self._cached_build_seconds[pos] = made
        self.runlog.log(
            BuildEvent(pos, p.id, True, seconds, backend=backend, cached=cached, modules=modules)
        )
        lost = self._modules_lost(pos, modules)
        if lost is not None:
            self.runlog.log(UnusableEvent(pos, p.id, lost))
            self.console.print(
                f"  [yellow]skip[/] {escape(self.describe(pos))}: {escape(lost)}", highlight=False
            )
            return None
        if isinstance(known, ClusterPrepared) and isinstance(prepared, ClusterPrepared):
            holders = tuple(dict.fromkeys((*known.holders, *prepared.holders)))
            prepared = dataclasses.replace(known, holders=holders)
        self._prepared[pos] = prepared
        return prepared

    def _refs(self, pos: int) -> dict[str, str]:
        """What ``prepare`` is given for this position: the side's commit or release."""
        ident = self.positions[pos].id
        return {
            Side.EXTENSION: {"ext_ref": ident},
            Side.PYTHON: {"python_ref": ident},
        }.get(self.terms.side, {"python_version": ident})

    def cached_positions(self) -> frozenset[int]:
        """The commits inside the range whose whole build is in the cache already (asked
        once, when the search starts or resumes): probing them costs runs only, which the
        strategy and the plan should know before they price a build there. A second bisect
        of the same range, or one at another confidence, had its plan priced as if nothing
        were built. On a cluster the workers' caches decide, so nothing is assumed."""
        if self._cached_positions is None:
            found: set[int] = set()
            if self.cluster is None:
                built = BuildCache().commits()
                by_commit = self.terms.side in (Side.EXTENSION, Side.PYTHON)
                for pos in range(1, len(self.positions)):
                    sieved = not by_commit or self.positions[pos].id in built
                    if pos in self._prepared or (
                        sieved and in_cache(self.loaded, self.overrides, **self._refs(pos))
                    ):
                        found.add(pos)
            self._cached_positions = frozenset(found)
        return self._cached_positions

    def _modules_lost(self, pos: int, modules: tuple[str, ...] | None) -> str | None:
        """Why a commit whose wheel holds no extension module, where the racy end's held
        some, is no evidence: a package whose optional C extension failed to build runs
        as pure Python and shows no native race, so a bisect would call it fixed."""
        racy = self.stats(0).modules
        if pos == 0 or modules is None or modules or not racy:
            return None
        return (
            f"its wheel holds no extension module (the racy end's had {', '.join(racy)}): "
            "a pure-Python fallback cannot show the race"
        )

    def run_variables(self) -> dict[str, Any] | None:
        """The run record's ``env`` and ``tsan_options`` as the racy end's runs had them
        (``environment.run_variables``); None when it was not prepared in this process."""
        prepared = self._prepared.get(0)
        return run_variables(prepared.info) if prepared is not None else None

    def run(
        self,
        pos: int,
        limits: Limits,
        phase: str,
        *,
        lane: Lane | None = None,
    ) -> StressState | None:
        """Runs at one position; None when it cannot be built.

        ``lane`` is this probe's share of the cluster (``probe_lanes``): its own
        workers and slots, run indices from the lanes' pool, their stop, and no live
        panel (one terminal shows one).
        """
        prepared = self.build(pos) if lane is None else self.build(pos, lane.workers, lane.stop)
        if prepared is None:
            return None
        if not self.keep_going:
            limits = dataclasses.replace(limits, stop_on=STOP_A_BISECT)
        holder: dict[str, StressState] = {}
        view = StressView(
            holder, f"{phase} at {truncate(self.describe(pos), 60)}", str(self.rundir.path)
        )
        ticker = PlainTicker(self.console)

        def on_change(state: StressState) -> None:
            holder["state"] = state
            ticker(state)

        st = self.stats(pos)
        executor = self._executor(prepared, lane)
        live: contextlib.AbstractContextManager[Any] = (
            Live(view, console=self.console, refresh_per_second=4, transient=True)
            if lane is None
            else contextlib.nullcontext()
        )
        with live:
            state, interrupted = stress_loop(
                prepared.spec,
                prepared.matcher,
                limits,
                self.runlog,
                total=st.counts,
                indices=lane.indices if lane is not None else None,
                on_change=on_change,
                tags=Tags(pos=pos, id=self.positions[pos].id, phase=phase),
                other_races=lambda: (
                    st.runs_with_other,
                    self.record.distinct_races(st.other_signatures),
                ),
                executor=executor,
                stop=lane.stop if lane is not None else None,
                elapsed_before=self._elapsed.get((pos, phase), 0.0),
            )
        self._elapsed[(pos, phase)] = state.elapsed_before + state.elapsed()
        if state.gone:
            raise RunnerGone(state.gone)
        if interrupted:
            raise KeyboardInterrupt
        if state.stopped_by is Outcome.GIL_ENABLED and pos != 0:
            # The commit's module lacks Py_mod_gil (multidict before its free-threading
            # commit): every run of it would be so, and 3-6 runs a commit went on them.
            self.runlog.log(UnusableEvent(pos, self.positions[pos].id, GIL_UNUSABLE))
            return state
        if state.stopped_by is not None:
            raise StopBisect(
                state.stopped_by, prepared.info.get("symbolizer"), state.stopped_detail
            )
        c = st.counts
        if not st.unusable and cannot_count(
            c.evidence, c.not_evidence, c.hits, self._usable_elsewhere(pos)
        ):
            reasons = ", ".join(
                f"{o.value} {k}" for o, k in c.outcomes.items() if k and not o.is_evidence
            )
            self.runlog.log(
                UnusableEvent(pos, self.positions[pos].id, f"runs cannot show the race ({reasons})")
            )
        return state

    def _usable_elsewhere(self, pos: int) -> float:
        """The share of runs that counted at the other commits run so far."""
        others = [r.counts for p, r in self.record.positions.items() if p != pos]
        return usable_fraction(sum(c.evidence for c in others), sum(c.runs for c in others))

    def _executor(self, prepared: Prepared, lane: Lane | None = None) -> Runner | None:
        """Dask tasks on the workers that hold this build (a lane's own), or None:
        threads here."""
        from repro.app.cluster import ClusterPrepared, DaskRunner

        if self.cluster is None or not isinstance(prepared, ClusterPrepared):
            return None
        if lane is not None:
            own = dataclasses.replace(prepared, holders=lane.workers)
            return DaskRunner(self.cluster.client, own, lane.slots)
        return self.cluster.runner(prepared)

    def parallel_probes(self) -> int:
        """How many commits are probed at once (lanes): one per cluster thread, or ``--probes``.

        By default only when a build costs more than ``ROUND_BUILD_RUNS`` runs. Then several
        probes at once mean several builds at once, which is what lanes buy (the demo with
        15 s builds: 0.64 of `-j 2`'s time; bench_parallel_bisect_real.py). When runs
        dominate, all slots on one commit is faster: the demo, builds cached and a run
        0.5 s, took 1.31 times as long with two probes at once as with `-j 2`. Before
        anything is measured, lanes: they build ahead of the calibration
        (``probe_lanes``), and give way (``LanesDoNotPay``) once the first build and run
        say that they do not pay.
        """
        if self.cluster is None:
            return 1
        threads = self.cluster.threads()
        if self.probes is not None:
            return min(self.probes, threads)
        pay = self.lanes_pay()
        return threads if pay is None or pay else 1

    def lanes_pay(self) -> bool | None:
        """Whether a build costs more than ``ROUND_BUILD_RUNS`` runs; None: not measured."""
        builds = [s.build_seconds for s in self.record.positions.values() if s.built]
        run = float(self.record.mean_run_seconds())
        if builds and run > 0:
            return bool(max(builds) >= ROUND_BUILD_RUNS * run)
        return None

    # -- reporting ----------------------------------------------------------------

    def posterior_line(self) -> str:
        """The strategy's current belief, once it names a likely culprit."""
        if self.bisector is None:
            return ""
        post = self.bisector.posterior_b()
        # The span is of commits: "the clean end is racy too" (the last hypothesis) has
        # its own sentence, not a place in the range.
        inside = [b for b, w in enumerate(post) if w > 1e-4 and b < len(self.positions)]
        lo, hi = (min(inside), max(inside)) if inside else (0, len(self.positions) - 1)
        span = f"plausible range {plural(hi - lo + 1, self.terms.unit)}"
        # The answer the report would give of this bisect stopped here: the same one.
        best = self.bisector.best_answer()
        if best.confidence < LIKELY_AT:
            return span
        if best.lo >= len(self.positions):
            return (
                f"the race may show at the {self.terms.clean_word} end too "
                f"({probability(best.confidence)}); {span}"
            )
        c_lo, c_hi = self.terms.culprit_positions(best.lo, min(best.hi, len(self.positions) - 1))
        if not 0 <= c_lo < len(self.positions):
            return span
        label = self.positions[c_lo].label
        if c_hi != c_lo and 0 <= c_hi < len(self.positions):
            label = f"one of {label} .. {self.positions[c_hi].label}"
        return f"likely culprit {label} ({probability(best.confidence)}); {span}"

    def rows(self, culprit_ids: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        post = self.bisector.posterior_b() if self.bisector else None
        return position_rows(
            self.record,
            [vars(p) for p in self.positions],
            self.terms,
            post,
            culprit_ids,
        )

    def steps_table(self) -> Table:
        table = Table(title="Bisection steps (oldest first)")
        for col, just in (
            (self.terms.unit, "left"),
            ("subject", "left"),
            ("build", "left"),
            ("runs", "right"),
            ("hits", "right"),
            ("other races", "right"),
            ("not counted", "right"),
            ("verdict", "left"),
        ):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for s in self.rows():
            if not s["tested"]:
                continue
            build = build_cell(s)
            other = (
                f"{s['other_races']} in {s['runs_with_other_races']} runs"
                if s["other_races"]
                else "0"
            )
            verdict = s["verdict"]
            if s["unusable"]:
                verdict = f"skipped: {s['unusable']}"
            style = "red" if s["verdict"] == "racy" else None
            table.add_row(
                s["label"],
                escape(truncate(s["subject"] or "", 50)),
                build,
                str(s["runs"]),
                str(s["hits"]),
                other,
                str(s["failed_runs"] + s["invalid_runs"]),
                escape(verdict),
                style=style,
            )
        return table


def fail(run: BisectRun, failure: str, heading: str | None = None) -> bool:
    """Record why the bisect cannot go on, say it, and tell the caller to stop."""
    run.meta.update(status="failed", failure=failure)
    run.rundir.write_meta(run.meta)
    if heading:
        run.console.print(f"[red]{heading}[/] {escape(failure)}")
    else:
        run.console.print(f"[red]{escape(failure)}[/]")
    return False


def say_step(run: BisectRun, pos: int, state: StressState | None, prefix: str = "") -> None:
    """One line on what a probe found."""
    st = run.stats(pos)
    if st.unusable:
        if state is not None:  # a build failure has said so already
            run.console.print(f"  {prefix}[yellow]skip[/] {escape(st.unusable)}")
    elif state is not None and state.session.runs and not state.session.evidence:
        # Said as what happened, not "no hit: 0/0 runs": the same commit is tried again
        # until its runs count or it is skipped (strategy.usability).
        s = state.session
        how = ", ".join(f"{o.value} {k}" for o, k in s.outcomes.items() if k)
        run.console.print(f"  {prefix}[yellow]no run counted[/] ({escape(how)})")
    elif state is not None and state.session.runs:
        s = state.session
        verdict = "[red]racy[/]" if s.hits else "no hit"
        not_counted = f" ({s.not_evidence} not counted)" if s.not_evidence else ""
        belief = run.posterior_line()  # none while the racy end still calibrates
        run.console.print(
            f"  {prefix}{verdict}: {s.hits}/{s.evidence} runs{not_counted}"
            + (f"; {belief}" if belief else "")
        )


def answered(run: BisectRun) -> bool:
    """Does the evidence so far already give the answer? (Read under the run log's lock:
    the probes' threads feed the strategy through it; no answer before the calibration.)"""
    with run.runlog.lock:
        return run.bisector is not None and run.bisector.answered() is not None
