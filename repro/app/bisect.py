"""`repro bisect`: calibrate the racy end, then let the strategy pick commits.

The strategy (repro.strategy.bisect) is pure; this module does the I/O around it:
building commits, running the reproducer, and logging every event to the run
directory (repro.runlog) before acting on it, so that `--resume` replays the same
events into a fresh strategy and continues exactly where the last process stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from repro.app.context import Overrides, Prepared, extension_location, prepare
from repro.app.environment import collect_environment, interpreter_record
from repro.app.executors import Runner, RunnerGone
from repro.app.loop import Limits, StressState, Tags, stress_loop
from repro.app.runner import reap_orphans
from repro.app.view import (
    INVALID_HINTS,
    PlainTicker,
    StressView,
    fmt_seconds,
    print_near_misses,
)
from repro.builds.cache import BuildError
from repro.builds.progress import RichBuildProgress
from repro.builds.stop import BuildCancelled
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import BisectSpec, LoadedRecipe, check_option, load_recipe, load_run_recipe
from repro.runlog import (
    BuildEvent,
    Event,
    PositionRecord,
    RunDir,
    RunEvent,
    RunLog,
    StrategyEvent,
    UnusableEvent,
)
from repro.runlog.bisect_view import position_rows
from repro.strategy.bisect import (
    Bisector,
    Done,
    Probe,
    RateBelief,
    clean_end_prior,
    propose_probes,
    provisional_bisector,
    settled_probes,
)
from repro.strategy.terms import Find, Side, Terms
from repro.text import truncate
from repro.tsan.outcome import Outcome

if TYPE_CHECKING:
    from repro.app.cluster import Cluster

# A commit whose runs keep failing or being invalid (crash before the reproducer,
# TSAN start-up failure, timeout, unreadable reports) tells nothing about the race:
# skip it like git bisect's exit 125 once this many such runs outnumber the others.
UNUSABLE_AFTER = 3
EXIT_INVALID = 2
# On a cluster, probe several commits at once when a build costs at least this many runs.
ROUND_BUILD_RUNS = 10.0


class StopBisect(Exception):
    """A run showed that no run here can count (e.g. unsymbolized reports)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


@dataclass(frozen=True)
class Lane:
    """One of the probes a cluster runs at once (``_probe_lanes``): its own workers,
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
    jobs: int = 1
    repo: str | None = None
    runs_dir: Path | None = None
    json_out: Path | None = None
    report: Path | None = None
    resume: Path | None = None
    calibration_runs: int | None = None
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
        self.bisector = self._strategy(
            ev.calib_hits,
            ev.calib_runs,
            confidence=ev.confidence,
            build_cost=ev.build_cost,
            run_cost=ev.run_cost,
            batch=ev.batch,
            anchors=list(ev.anchors) if ev.anchors is not None else None,
            clean_end_racy=ev.clean_end_racy,
        )

    def _strategy(self, calib_hits: int, calib_runs: int, **options: Any) -> Bisector:
        """A strategy from everything measured so far (the record, as folded up to now):
        the builds, the unusable commits and the runs of lanes that built ahead of the
        calibration all count, as if they had come after it."""
        counts: dict[int, tuple[int, int]] = {}
        built, unusable = [], []
        for pos, st in self.record.positions.items():
            if pos == 0:
                continue
            if st.bisect_runs:
                hits = sum(st.bisect_runs)
                counts[pos] = (hits, len(st.bisect_runs) - hits)
            if st.built and self._interior(pos):
                built.append(pos)
            if st.unusable and self._interior(pos):
                unusable.append(pos)
        return provisional_bisector(
            len(self.positions), calib_hits, calib_runs, counts, built, unusable, **options
        )

    def costs(self) -> tuple[float, float]:
        """What a build and a run cost, in seconds, as measured so far (a build at least 30
        runs' worth: a cached racy end says nothing of what the other commits cost)."""
        built = [s.build_seconds for s in (self.stats(0), self.stats(len(self.positions) - 1))]
        mean_run = self.record.mean_run_seconds()
        build_cost = max(max(built, default=0.0), 30.0 * max(mean_run, 0.01), 1.0)
        return build_cost, max(mean_run, 0.001)

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

    def build(
        self, pos: int, workers: Sequence[str] = (), stop: threading.Event | None = None
    ) -> Prepared | None:
        """Build (or reuse) one position; None, logged as unusable, when it cannot build.

        ``workers``: on a cluster, the workers that must hold the build (a lane's); by
        default every worker. A build already held elsewhere is made on the missing
        ones only (found at once in a shared cache). ``stop`` set meanwhile stops the
        build (``BuildCancelled``: nothing is logged, the position stays usable)."""
        from repro.app.cluster import ClusterPrepared

        known = self._prepared.get(pos)
        missing: list[str] = []
        if known is not None:
            if not workers or not isinstance(known, ClusterPrepared):
                return known
            missing = [w for w in workers if w not in known.holders]
            if not missing:
                return known
        side = self.terms.side
        p = self.positions[pos]
        t0 = time.monotonic()
        refs = {
            Side.EXTENSION: {"ext_ref": p.id},
            Side.PYTHON: {"python_ref": p.id},
        }.get(side, {"python_version": p.id})
        try:
            if self.cluster is not None:
                prepared: Prepared = self.cluster.prepare_local(
                    self.loaded,
                    self.overrides,
                    workers=missing or workers or None,
                    stop=stop,
                    **refs,
                )
            else:
                progress = RichBuildProgress(self.console)
                prepared = prepare(self.loaded, self.overrides, progress=progress, **refs)
        except BuildError as exc:
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
        self.runlog.log(BuildEvent(pos, p.id, True, seconds))
        if isinstance(known, ClusterPrepared) and isinstance(prepared, ClusterPrepared):
            holders = tuple(dict.fromkeys((*known.holders, *prepared.holders)))
            prepared = dataclasses.replace(known, holders=holders)
        self._prepared[pos] = prepared
        return prepared

    def run(
        self,
        pos: int,
        limits: Limits,
        phase: str,
        *,
        lane: Lane | None = None,
    ) -> StressState | None:
        """Runs at one position; None when it cannot be built.

        ``lane`` is this probe's share of the cluster (``_probe_lanes``): its own
        workers and slots, run indices from the lanes' pool, their stop, and no live
        panel (one terminal shows one).
        """
        prepared = self.build(pos) if lane is None else self.build(pos, lane.workers, lane.stop)
        if prepared is None:
            return None
        if not self.keep_going:
            limits = dataclasses.replace(limits, stop_on=frozenset({Outcome.UNSYMBOLIZED}))
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
                other_races=lambda: (st.runs_with_other, len(st.other_signatures)),
                executor=executor,
                stop=lane.stop if lane is not None else None,
            )
        if state.gone:
            raise RunnerGone(state.gone)
        if interrupted:
            raise KeyboardInterrupt
        if state.stopped_by is not None:
            raise StopBisect(state.stopped_by)
        c = st.counts
        if (
            c.not_evidence >= UNUSABLE_AFTER
            and c.not_evidence > c.evidence
            and not c.hits
            and not st.unusable
        ):
            reasons = ", ".join(
                f"{o.value} {k}" for o, k in c.outcomes.items() if k and not o.is_evidence
            )
            self.runlog.log(
                UnusableEvent(pos, self.positions[pos].id, f"runs cannot show the race ({reasons})")
            )
        return state

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
        (``_probe_lanes``), and give way (``LanesDoNotPay``) once the first build and run
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
        best = max(range(len(post)), key=lambda b: post[b])
        lo = min((b for b, w in enumerate(post) if w > 1e-4), default=best)
        hi = max((b for b, w in enumerate(post) if w > 1e-4), default=best)
        span = f"plausible range {hi - lo + 1} {self.terms.units}"
        if best >= len(self.positions):
            return f"the race may show at the {self.terms.clean_word} end too; {span}"
        c_lo, _ = self.terms.culprit_positions(best, best)
        if post[best] < 0.25 or not 0 <= c_lo < len(self.positions):
            return span
        return f"likely culprit {self.positions[c_lo].label} ({post[best]:.0%}); {span}"

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
            build = (
                "skipped"
                if s["built"] is False
                else f"{s['build_seconds']:.0f}s"
                if s["built"]
                else "-"
            )
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


def _commit_positions(
    loaded: LoadedRecipe, overrides: Overrides, terms: Terms, old: str, new: str
) -> tuple[list[Position], list[int], dict[str, Any]]:
    from repro.builds.cache import BuildCache
    from repro.gitrepo import GitRepo

    cache = BuildCache()
    web_url = None
    if terms.side is Side.EXTENSION:
        location = extension_location(loaded, overrides)
        ext = loaded.recipe.extension
        web_url = ext.web_url if ext is not None else None
    else:
        py = loaded.recipe.python
        if py is None or not py.git:
            raise ReproError(
                f"{loaded.path}: bisecting CPython commits needs `python.git` in the recipe "
                "(or use --versions to bisect over releases)"
            )
        location = loaded.resolve_repo(py.git)
    # The recipe's web_url from the first bisect on, so links are there from the start.
    repo = GitRepo.open_cached(location, cache.base, web_url=web_url)
    old_sha, new_sha = repo.resolve(old), repo.resolve(new)
    shas = repo.first_parent_range(old_sha, new_sha)
    if len(shas) < 2:
        raise ReproError(f"the range {old}..{new} has no commits to search")
    positions = []
    for sha in shas:
        info = repo.info(sha)
        positions.append(
            Position(
                id=sha,
                label=info.short,
                info={
                    "sha": sha,
                    "short": info.short,
                    "subject": info.subject,
                    "author": info.author,
                    "date": info.date,
                    "url": info.url,
                },
            )
        )
    depth0 = repo.depth(shas[0])
    anchors = terms.search_order([depth0 + k for k in range(len(shas))])
    return terms.search_order(positions), anchors, {"repo": location, "web_url": repo.web_url}


def run_bisect(opts: BisectOptions, console: Console) -> int:
    from repro.app.cluster import open_cluster

    # A bad recipe is said before a cluster is started or reached, not seconds after.
    fresh = None
    if opts.resume is None:
        if opts.recipe is None:
            raise ReproError("give a recipe file (or --resume RUN_DIR)")
        fresh = load_recipe(opts.recipe, opts.sets)
    cluster = open_cluster(opts.workers, opts.cluster, opts.shared_cache)
    if cluster is None:
        return _run_bisect(opts, console, None, fresh)
    with cluster:
        where = cluster.describe()
        console.print(
            f"cluster: {where['workers']} workers at {where['scheduler']}", highlight=False
        )
        return _run_bisect(opts, console, cluster, fresh)


def _run_bisect(
    opts: BisectOptions, console: Console, cluster: Cluster | None, fresh: LoadedRecipe | None
) -> int:
    if opts.resume is not None:
        runlog = RunLog(RunDir.open(opts.resume))
        runlog.dir.lock()
        ended = reap_orphans(runlog.dir.logs)
        loaded, meta = load_run_recipe(runlog.dir.path, "bisect")
        overrides = Overrides(**meta.get("overrides", {}))
        run = BisectRun(runlog, loaded, meta, console, opts.jobs, overrides, opts.keep_going)
        runlog.replay()
        for problem in runlog.dir.problems:
            console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)
        if ended:
            console.print(f"ended {len(ended)} reproducer(s) left running by the killed repro")
        console.print(
            f"[bold]resuming[/] bisect of {escape(loaded.recipe.name)}: "
            f"{run.record.counts.runs} runs already measured"
        )
    else:
        assert fresh is not None  # run_bisect loaded it, or said that none was given
        run = _new_run(fresh, opts, console)
    run.probes = opts.probes
    if cluster is not None:
        run.cluster = cluster
        # Probes are batched for the runs that go at once: every worker's thread.
        run.jobs = cluster.threads()
    return _drive(run, opts)


def check_versions(loaded: LoadedRecipe, versions: list[str]) -> None:
    """Every release of the range must be obtainable before the first run.

    A release whose source cannot be had is not a release that does not build:
    skipping it would let the bisect name a neighbour as the culprit.
    """
    from repro.builds.cpython import tarball_origin
    from repro.gitrepo import is_url

    py = loaded.recipe.python
    assert py is not None
    missing = []
    for v in versions:
        try:
            origin = tarball_origin(v, py.source, loaded.base_dir)
        except BuildError as exc:
            missing.append(f"{v} ({exc})")
            continue
        if not is_url(origin):
            named = re.match(r"Python-(\d+\.\d+\.\d+\w*)\.t", Path(origin).name)
            if named and named.group(1) != v:
                missing.append(f"{v} ({origin} is CPython {named.group(1)})")
    if missing:
        raise ReproError(
            f"{loaded.path}: the source of {len(missing)} of {len(versions)} releases cannot "
            "be had, so they could not be tested: "
            + "; ".join(missing)
            + ". Point python.source (or REPRO_CPYTHON_MIRROR) at a directory that holds "
            "them all, or list only releases you have: --versions A,B,C"
        )


def _new_run(loaded: LoadedRecipe, opts: BisectOptions, console: Console) -> BisectRun:
    r = loaded.recipe
    spec = r.bisect or BisectSpec()  # a recipe without `bisect:` has the schema's defaults
    find_text = opts.find or spec.find
    if find_text not in ("fix", "regression"):
        raise ReproError(f"--find takes `fix` or `regression`, not {find_text!r}")
    find = Find(find_text)
    confidence = opts.confidence or spec.confidence
    check_option(BisectSpec, "confidence", confidence, "--confidence")  # the recipe's rule
    racy = opts.racy or spec.racy
    other = (opts.fixed or spec.fixed) if find is Find.FIX else (opts.clean or spec.clean)
    overrides = Overrides(extension_repo=opts.repo, threads=opts.threads, timeout=opts.timeout)
    if opts.versions:
        if r.python is None or not r.python.version:
            raise ReproError(
                f"{loaded.path}: --versions needs a `python:` section with `version:` "
                "(the releases replace it)"
            )
        terms = Terms(find, Side.VERSIONS)
        versions = expand_versions(opts.versions)
        check_versions(loaded, versions)
        chrono = [Position(id=v, label=v, info={"version": v}) for v in versions]
        positions = terms.search_order(chrono)
        anchors = list(range(len(positions)))
        extra: dict[str, Any] = {"versions": versions}
        racy_ref = positions[0].id
        clean_ref = positions[-1].id
    else:
        terms = Terms(find, Side(spec.side))
        if racy is None or other is None:
            raise ReproError(
                f"{loaded.path}: the range is not known: give --racy and {terms.clean_option} "
                "(or `bisect.racy` and `bisect.fixed`/`bisect.clean` in the recipe)"
            )
        if r.python is not None and r.python.version and terms.side is Side.EXTENSION:
            check_versions(loaded, [r.python.version])
        old, new = (racy, other) if find is Find.FIX else (other, racy)
        positions, anchors, extra = _commit_positions(loaded, overrides, terms, old, new)
        racy_ref, clean_ref = racy, other
    rundir = RunDir.create(opts.runs_dir or default_runs_dir(), r.name, "bisect")
    shutil.copyfile(loaded.path, rundir.path / "recipe.yaml")
    meta = {
        "kind": "bisect",
        "recipe": r.name,
        "recipe_path": str(loaded.path),
        "set": list(loaded.sets),
        "find": terms.find.value,
        "side": terms.side.value,
        "racy": racy_ref,
        "clean": clean_ref,
        "confidence": confidence,
        "calibration_runs": opts.calibration_runs or spec.max_calibration_runs,
        "calibration_hits": spec.calibration_hits,
        "positions": [vars(p) for p in positions],
        "anchors": anchors,
        "jobs": opts.jobs,
        "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
        "status": "started",
        "environment": collect_environment(
            None, interpreter_record(r.python, r.reproducer.command, loaded.base_dir)
        ),
        **extra,
    }
    rundir.write_meta(meta)
    console.print(
        f"[bold]repro bisect[/] {escape(r.name)}: find the {terms.find.value} in "
        f"{len(positions)} {terms.units} "
        f"({escape(str(racy_ref))} racy .. {escape(str(clean_ref))} {terms.clean_word}), "
        f"confidence {confidence:g}"
    )
    console.print(f"run directory: {rundir.path}", highlight=False)
    return BisectRun(RunLog(rundir), loaded, meta, console, opts.jobs, overrides, opts.keep_going)


def _drive(run: BisectRun, opts: BisectOptions) -> int:
    console = run.console
    try:
        k = run.parallel_probes()
        laned = False
        if run.bisector is None and k > 1:  # lanes build ahead of the calibration
            try:
                if not _probe_lanes(run, k, opts):
                    return _finish(run, opts, None)
                laned = True
            except LanesDoNotPay as why:
                console.print(f"  {escape(str(why))}", highlight=False)
        if run.bisector is None:
            if not _calibrate(run, opts):
                return _finish(run, opts, None)
            k = run.parallel_probes()  # measured now
        if k > 1 and not laned:
            _probe_lanes(run, k)
        if k > 1 and run.stats(len(run.positions) - 1).unusable:
            return _clean_end_unusable(run, opts)
        assert run.bisector is not None
        while True:
            step = run.bisector.next_step()
            if isinstance(step, Done) and step.lo >= len(run.positions):
                last = len(run.positions) - 1
                c = run.stats(last).counts
                _stop(
                    run,
                    f"The target race reproduces at the {run.terms.clean_word} end "
                    f"{run.positions[last].label} ({c.hits} of {c.evidence} runs): "
                    f"it is not a clean end. Pick a later fixed {run.terms.unit} "
                    "(or an earlier clean one).",
                )
                return _finish(run, opts, None)
            if isinstance(step, Done):
                return _finish(run, opts, step)
            assert isinstance(step, Probe)
            pos = step.index
            c = run.stats(pos).counts
            console.print(
                f"[bold]step[/] {escape(run.describe(pos))}: up to {step.runs} runs "
                f"(so far {c.evidence} runs, {c.hits} hits)",
                highlight=False,
            )
            state = run.run(pos, Limits(runs=step.runs, until_hits=1, jobs=run.jobs), "bisect")
            st = run.stats(pos)
            if st.unusable and pos == len(run.positions) - 1:
                return _clean_end_unusable(run, opts)
            _say_step(run, pos, state)
    except KeyboardInterrupt:
        run.rundir.update_meta(status="interrupted")
        console.print(
            f"\n[yellow]interrupted[/]; everything measured is saved. Resume with:\n"
            f"  repro bisect --resume {run.rundir.path}"
        )
        _write_outputs(run, opts, None, interrupted=True)
        return 130
    except RunnerGone as gone:
        # As an interrupt: every finished run is in the log; the bisect goes on from
        # there once the cluster is back.
        run.rundir.update_meta(status="interrupted")
        again = f" --cluster {opts.cluster}" if opts.cluster else ""
        console.print(
            f"\n[red]stopped:[/] {escape(str(gone))}\neverything measured is saved; when "
            f"the cluster is back, resume with:\n  repro bisect --resume {run.rundir.path}"
            f"{escape(again)}",
            highlight=False,
        )
        _write_outputs(run, opts, None, interrupted=True)
        return EXIT_INVALID  # a fault of the environment, as the README's exit statuses say
    except StopBisect as stop:
        _stop(
            run,
            f"a run was {stop.outcome.value} and cannot count: {INVALID_HINTS[stop.outcome]}. "
            "Pass --keep-going to count such runs apart and go on.",
            "Stopped:",
        )
        _write_outputs(run, opts, None, interrupted=False)
        return EXIT_INVALID


def _stop(run: BisectRun, failure: str, heading: str | None = None) -> bool:
    """Record why the bisect cannot go on, say it, and tell the caller to stop."""
    run.meta.update(status="failed", failure=failure)
    run.rundir.write_meta(run.meta)
    if heading:
        run.console.print(f"[red]{heading}[/] {escape(failure)}")
    else:
        run.console.print(f"[red]{escape(failure)}[/]")
    return False


def _calibrate(run: BisectRun, opts: BisectOptions) -> bool:
    """Measure the rate at the racy end; False stops the bisect.

    The clean end is not run apart any more: the strategy holds "racy there too" as one
    more hypothesis (``clean_end_prior``), so the misses that confirm the answer rule it
    out as well, and the end is built and run only if the search asks for it.
    """
    limits = _calibration_left(run, run.jobs)
    if limits is not None:
        run.console.print(f"[bold]calibrating[/] at the racy end {escape(run.describe(0))}")
        run.run(0, limits, "calibrate")
    return _calibrated(run, opts)


def _calibration_left(run: BisectRun, jobs: int) -> Limits | None:
    """The calibration's runs still to go (None: it is over), from the run directory."""
    goal = int(run.meta["calibration_hits"])
    budget = int(run.meta["calibration_runs"])
    c0 = run.stats(0).counts
    if c0.hits >= goal or c0.evidence >= budget:
        return None
    return Limits(runs=budget - c0.evidence, until_hits=goal - c0.hits, jobs=jobs)


def _calibrated(run: BisectRun, opts: BisectOptions) -> bool:
    """After the calibration's runs: check them, start the strategy, say the plan."""
    from repro.strategy.stats import format_rate, upper_rate_if_clean

    console = run.console
    meta = run.meta
    terms = run.terms
    n = len(run.positions)
    st0 = run.stats(0)
    c0 = st0.counts
    if st0.built is False or st0.unusable:
        return _stop(
            run,
            f"the racy end does not build or run: {st0.build_error or st0.unusable}",
            "The racy end cannot be tested:",
        )
    console.print(f"  racy end: {format_rate(c0.hits, c0.evidence)}")
    if c0.hits == 0:
        return _stop(
            run,
            f"The racy end {run.positions[0].label} did not reproduce the target race in "
            f"{c0.evidence} runs (rate below {upper_rate_if_clean(c0.evidence):.2%} at 95%). "
            "Check the recipe's target and reproducer, or raise --calibration-runs.",
        )
    belief = RateBelief.from_calibration(c0.hits, c0.evidence)
    last = n - 1
    console.print(
        f"  the {terms.clean_word} end {escape(run.describe(last))} is checked inside the "
        "search: the misses that confirm the answer rule out a racy end too"
    )
    build_cost, run_cost = run.costs()
    run.runlog.log(
        StrategyEvent(
            confidence=float(meta["confidence"]),
            calib_hits=c0.hits,
            calib_runs=c0.evidence,
            build_cost=build_cost,
            run_cost=run_cost,
            batch=run.jobs,
            anchors=tuple(meta["anchors"]) if meta.get("anchors") is not None else None,
            clean_end_racy=clean_end_prior(n),
        )
    )
    _print_plan(run, belief, build_cost, run_cost)
    if opts.plan:
        run.meta.update(status="planned")
        run.rundir.write_meta(run.meta)
        console.print(
            f"--plan: stopping here; continue with  repro bisect --resume {run.rundir.path}"
        )
        return False
    run.rundir.update_meta(status="bisecting")
    run.meta["status"] = "bisecting"
    return True


def _print_plan(run: BisectRun, belief: RateBelief, build_cost: float, run_cost: float) -> None:
    """What the bisect should cost, from the calibrated rate, before spending it."""
    from repro.strategy.information import plan

    n = len(run.positions)
    pl = plan(n, belief, float(run.meta["confidence"]), build_cost, run_cost)
    run.meta["plan"] = {
        "runs": round(pl.runs),
        "runs_p90": round(pl.runs_high),
        "builds": round(pl.builds),
        "seconds": round(pl.seconds),
        "bound_runs": round(pl.bound, 1),
        "rate": pl.rate,
    }
    run.rundir.write_meta(run.meta)
    run.console.print(
        f"[bold]plan[/]: about {pl.runs:.0f} runs (90% within {pl.runs_high:.0f}) and "
        f"{pl.builds:.0f} builds, {fmt_seconds(pl.seconds)}; no bisect can need fewer than "
        f"{pl.bound:.0f} runs on average at rate {pl.rate:.1%} (Fano's bound)",
        highlight=False,
    )


def _finish(run: BisectRun, opts: BisectOptions, done: Done | None) -> int:
    console = run.console
    terms = run.terms
    result = _write_outputs(run, opts, done, interrupted=False)
    console.print(run.steps_table())
    print_near_misses(console, run.rundir.path, run.record.counts.runs)
    if done is None:
        return 0 if run.meta.get("status") == "planned" else 1
    conf = result["confidence"]
    figures = (
        f"{result['builds']} builds, {result['runs']} runs, "
        f"build time {fmt_seconds(result['build_seconds'])}, "
        f"run time {fmt_seconds(result['run_seconds'])}"
    )
    rng = result.get("culprit_range")
    if rng:
        console.print(
            f"[bold yellow]The {terms.culprit_word} {terms.unit} is one of {len(rng)}[/] "
            f"({terms.units} between could not be tested), with probability {conf:.4f}:"
        )
        for x in rng:
            why = f"  [{x['unusable']}]" if x.get("unusable") else ""
            console.print(
                f"  {escape(x['label'])} {escape(x.get('subject') or '')}{escape(why)}",
                highlight=False,
            )
        console.print(f"  no single {terms.unit} can be named; {figures}")
        console.print(f"run directory: {run.rundir.path}", highlight=False)
        return 1
    c = result["culprit"]
    console.print(
        f"[bold green]{terms.culprit_word} {terms.unit}:[/] {escape(c['label'])} "
        f"{escape(c.get('subject') or '')}",
        highlight=False,
    )
    for key in ("author", "date", "url"):
        if c.get(key):
            console.print(f"  {key}: {c[key]}", highlight=False)
    console.print(f"  confidence {conf:.4f} (asked {run.meta['confidence']:g}); {figures}")
    info = result.get("information") or {}
    if info.get("ratio") is not None:
        console.print(
            f"  {info['bisect_runs']} runs after calibration; no bisect can average fewer "
            f"than {info['bound_runs']:.0f} at rate {info['rate_estimate']:.1%} "
            f"({info['ratio']:.1f}x the bound)",
            highlight=False,
        )
    if conf < float(run.meta["confidence"]):
        console.print(
            "[yellow]The requested confidence was not reached: nothing more could be "
            "learnt (untestable commits).[/]"
        )
    console.print(f"run directory: {run.rundir.path}", highlight=False)
    if opts.then_git and terms.side is Side.VERSIONS:
        return _continue_over_commits(run, opts, done)
    return 0


def _say_step(run: BisectRun, pos: int, state: StressState | None, prefix: str = "") -> None:
    """One line on what a probe found."""
    st = run.stats(pos)
    if st.unusable:
        if state is not None:  # a build failure has said so already
            run.console.print(f"  {prefix}[yellow]skip[/] {escape(st.unusable)}")
    elif state is not None and state.session.runs:
        s = state.session
        verdict = "[red]racy[/]" if s.hits else "no hit"
        not_counted = f" ({s.not_evidence} not counted)" if s.not_evidence else ""
        belief = run.posterior_line()  # none while the racy end still calibrates
        run.console.print(
            f"  {prefix}{verdict}: {s.hits}/{s.evidence} runs{not_counted}"
            + (f"; {belief}" if belief else "")
        )


def _clean_end_unusable(run: BisectRun, opts: BisectOptions) -> int:
    terms = run.terms
    st = run.stats(len(run.positions) - 1)
    _stop(
        run,
        f"the {terms.clean_word} end does not build or run: "
        f"{st.build_error or st.unusable}. Pick another {terms.clean_word} "
        f"{terms.unit} ({terms.clean_option}): for a fix, a later one that builds "
        "(it must still contain the fix); for a regression, an earlier one.",
        f"The {terms.clean_word} end cannot be tested:",
    )
    return _finish(run, opts, None)


# Marks the calibration's lane among the lanes' probes (no strategy proposes the racy end).
CALIBRATION = Probe(0, 0)


class LanesDoNotPay(Exception):
    """Lanes started before anything was measured, and the first build and run say that a
    build costs less than ``ROUND_BUILD_RUNS`` runs: one commit at a time is faster."""


def _probe_lanes(run: BisectRun, k: int, calibrate: BisectOptions | None = None) -> bool:
    """Probe ``k`` commits at once, each in its own lane, until the answer holds.

    Each lane has its own workers (``Cluster.shares``): they build its commit, so the
    lanes' builds overlap, and they run it. A lane whose probe ends (a hit, its runs
    spent, or a commit that does not build) takes the next probe at once, chosen around
    the commits still in flight (``propose_probes`` with ``busy``), instead of waiting
    for the slowest probe of a round. Every result goes through the one run log (it
    serialises), so the strategy sees each as it lands; once the answer holds (or the
    clean end cannot be tested) the other lanes stop and their finished runs are kept.
    Ctrl-C reaches the main thread only: it sets the lanes' stops, which every loop reads.
    When a result leaves a lane's commit all but decided (``settled_probes``), that lane
    leaves it, its build too if it is still building, and takes a new probe.

    With ``calibrate`` (the strategy does not exist yet), lane 1 builds and calibrates the
    racy end while the others build ahead: they probe what the calibration so far
    proposes (``BisectRun.provisional``), and the strategy made at the calibration's end
    counts their runs. In the simulation (``bench/bench_parallel_bisect.py``, k = 4) that
    took the makespan from 0.48 / 0.52 of one lane's to 0.43 / 0.45 at p = 0.1 / 0.5: the
    lanes used to start one build time late. False: the bisect stops at the calibration
    (its checks failed, or ``--plan``).
    """
    assert run.cluster is not None and (run.bisector is None) == (calibrate is not None)
    console = run.console
    # Lanes on no measurement (no --probes): they give way once the costs say so.
    tentative = run.probes is None and run.lanes_pay() is None
    shares = run.cluster.shares(k)
    slots = max(1, run.cluster.threads() // k)
    pool = IndexPool(run.record.next_index)
    lanes = [Lane(i + 1, shares[i], slots, pool.take, threading.Event()) for i in range(k)]
    ended: queue.Queue[tuple[Lane, Probe, StressState | None, BaseException | None]]
    ended = queue.Queue()
    console.print(
        f"[bold]{k} probes at once[/], each on its own workers (their builds overlap)",
        highlight=False,
    )

    def probe(lane: Lane, p: Probe, limits: Limits, phase: str) -> None:
        state: StressState | None = None
        error: BaseException | None = None
        try:
            state = run.run(p.index, limits, phase, lane=lane)
        except (KeyboardInterrupt, BuildCancelled):
            pass  # the lane's stop: what finished is in the log
        except BaseException as exc:  # raised again in the main thread
            error = exc
        ended.put((lane, p, state, error))

    busy: dict[int, int] = {}  # lane number -> position in flight
    leaving: set[int] = set()  # lanes told to leave a settled probe, not yet out
    idle = list(lanes)
    threads: list[threading.Thread] = []

    def start(lane: Lane, p: Probe, limits: Limits, phase: str) -> None:
        busy[lane.number] = p.index
        t = threading.Thread(target=probe, args=(lane, p, limits, phase), daemon=True)
        threads.append(t)
        t.start()

    last = len(run.positions) - 1
    if calibrate is not None:
        limits = _calibration_left(run, slots)
        if limits is not None:
            lane = idle.pop(0)
            console.print(
                f"  lane {lane.number}: [bold]calibrating[/] at the racy end "
                f"{escape(run.describe(0))}; the other lanes build ahead",
                highlight=False,
            )
            start(lane, CALIBRATION, limits, "calibrate")
        elif not _calibrated(run, calibrate):
            return False
    try:
        while True:
            with run.runlog.lock:
                open_ = {t for n, t in busy.items() if n not in leaving}
                strategy = run.bisector if run.bisector is not None else run.provisional()
                proposed = propose_probes(strategy, len(idle), open_) if idle else []
            if isinstance(proposed, Done):
                if run.bisector is not None:
                    break
                proposed = []  # a provisional answer: the calibration lane goes on
            if not proposed and not busy:
                break
            for p in proposed:
                lane = idle.pop(0)
                c = run.stats(p.index).counts
                ahead = " (building ahead)" if run.bisector is None else ""
                console.print(
                    f"  lane {lane.number}: [bold]probe[/] {escape(run.describe(p.index))}: "
                    f"up to {p.runs} runs (so far {c.evidence} runs, {c.hits} hits){ahead}",
                    highlight=False,
                )
                start(lane, p, Limits(runs=p.runs, until_hits=1, jobs=slots), "bisect")
            # Wait for a lane to end, looking at the answer (and, on no measurement, at
            # what a build and a run cost) as the runs land.
            while True:
                if tentative:
                    pay = run.lanes_pay()
                    if pay is False:
                        build = max(s.build_seconds for s in run.record.positions.values())
                        each = run.record.mean_run_seconds()
                        raise LanesDoNotPay(
                            f"a build took {fmt_seconds(build)}, less than "
                            f"{ROUND_BUILD_RUNS:g} runs of {each:.2f} s: one "
                            f"{run.terms.unit} at a time, every worker on it"
                        )
                    tentative = pay is None
                try:
                    lane, p, state, error = ended.get(timeout=0.2)
                    break
                except queue.Empty:
                    if _answered(run):
                        return True
            if error is not None:
                raise error
            del busy[lane.number]
            label = escape(run.positions[p.index].label)
            left = lane.number in leaving and state is None
            leaving.discard(lane.number)
            lane.stop.clear()
            idle.append(lane)
            if p is CALIBRATION:
                assert calibrate is not None
                if not _calibrated(run, calibrate):
                    return False
            elif left:
                console.print(f"  lane {lane.number}: {label}: left", highlight=False)
            else:
                _say_step(run, p.index, state, f"lane {lane.number}: {label}: ")
            if p.index == last and run.stats(last).unusable:
                return True
            if _answered(run):
                return True
            _leave_settled(run, lanes, busy, leaving)
    finally:  # the answer, an error or Ctrl-C: every lane stops, what finished is kept
        for lane in lanes:
            lane.stop.set()
        for t in threads:
            t.join()
    return True


def _leave_settled(
    run: BisectRun, lanes: list[Lane], busy: dict[int, int], leaving: set[int]
) -> None:
    """Tell the lanes whose probe the evidence has all but decided to leave it."""
    if run.bisector is None:
        return  # nothing is decided before the calibration is over
    with run.runlog.lock:
        settled = set(settled_probes(run.bisector, set(busy.values())))
    for lane in lanes:
        pos = busy.get(lane.number)
        if pos in settled and lane.number not in leaving:
            leaving.add(lane.number)
            lane.stop.set()
            run.console.print(
                f"  lane {lane.number}: leaving {escape(run.describe(pos))}: "
                "the other lanes' results settled it",
                highlight=False,
            )


def _answered(run: BisectRun) -> bool:
    """Does the evidence so far already give the answer? (Read under the run log's lock:
    the probes' threads feed the strategy through it; no answer before the calibration.)"""
    with run.runlog.lock:
        return run.bisector is not None and run.bisector.answered() is not None


def release_tags(run: BisectRun, done: Done) -> tuple[str, str]:
    """The git tags of the last racy and the first clean release around the answer."""
    racy = run.positions[done.lo - 1].id
    clean = run.positions[done.lo].id
    return f"v{racy}", f"v{clean}"


def _continue_over_commits(run: BisectRun, opts: BisectOptions, done: Done) -> int:
    """Second stage: bisect CPython's commits between the two releases just found."""
    racy_tag, clean_tag = release_tags(run, done)
    run.console.print(
        f"\n[bold]continuing[/] over the commits between {racy_tag} and {clean_tag} "
        f"in {opts.then_git}"
    )
    sets = (
        *run.loaded.sets,
        f"python.git={opts.then_git}",
        "python.version=",
        "python.source=",
        f"python.ref={racy_tag}",
        "bisect.side=python",
    )
    fix = run.terms.find is Find.FIX
    follow = BisectOptions(
        recipe=run.loaded.path,
        racy=racy_tag,
        fixed=clean_tag if fix else None,
        clean=None if fix else clean_tag,
        find=run.terms.find.value,
        confidence=float(run.meta["confidence"]),
        jobs=opts.jobs,
        runs_dir=opts.runs_dir,
        json_out=opts.json_out,
        report=opts.report,
        threads=opts.threads,
        timeout=opts.timeout,
        sets=sets,
        keep_going=opts.keep_going,
        probes=opts.probes,
        workers=opts.workers,
        cluster=opts.cluster,
        shared_cache=opts.shared_cache,
    )
    run.rundir.unlock()
    return run_bisect(follow, run.console)


def _write_outputs(
    run: BisectRun, opts: BisectOptions, done: Done | None, interrupted: bool
) -> dict[str, Any]:
    meta = run.meta
    record = run.record
    culprit_ids: frozenset[str] = frozenset()
    result: dict[str, Any] = {
        "kind": "bisect",
        "recipe": meta["recipe"],
        "direction": run.terms.find.value,
        "side": run.terms.side.value,
        "racy": meta["racy"],
        "clean": meta["clean"],
        "requested_confidence": meta["confidence"],
        "builds": sum(1 for s in record.positions.values() if s.built is not None),
        "runs": record.counts.runs,
        "evidence_runs": record.counts.evidence,
        "outcomes": record.counts.to_json()["outcomes"],
        "build_seconds": round(record.build_seconds, 1),
        "run_seconds": round(record.run_seconds, 1),
        "positions": len(run.positions),
        "interrupted": interrupted,
        "status": "interrupted"
        if interrupted
        else ("done" if done else str(meta.get("status") or "failed")),
        "failure": meta.get("failure"),
        "culprit": None,
        "culprit_range": None,
        "confidence": None,
        "signatures": record.signatures_json(),
    }
    calib = run.stats(0).counts
    result["calibration"] = {"hits": calib.hits, "runs": calib.evidence}
    result["plan"] = meta.get("plan")
    if run.bisector is not None:
        from repro.strategy.information import fano_bound

        bisect_runs = sum(len(p.bisect_runs) for p in record.positions.values())
        rate = run.bisector.rate_estimate()
        bound = fano_bound(max(1, len(run.positions) - 1), rate, 1.0 - float(meta["confidence"]))
        result["information"] = {
            "bisect_runs": bisect_runs,
            "bound_runs": round(bound, 1),
            "ratio": round(bisect_runs / bound, 2) if bound > 0 else None,
            "rate_estimate": rate,
        }
    if done is not None:
        lo, hi = run.terms.culprit_positions(done.lo, done.hi)
        blamed = [run.positions[k] for k in range(min(lo, hi), max(lo, hi) + 1)]
        culprit_ids = frozenset(p.id for p in blamed)
        if len(blamed) > 1:
            result["culprit_range"] = [
                {
                    "id": p.id,
                    "label": p.label,
                    "subject": p.info.get("subject"),
                    "unusable": run.stats(run.positions.index(p)).unusable,
                }
                for p in blamed
            ]
        else:
            first = blamed[0]
            result["culprit"] = {
                "sha": first.info.get("sha"),
                "id": first.id,
                "label": first.label,
                **{k: first.info.get(k) for k in ("subject", "author", "date", "url", "version")},
            }
        result["confidence"] = done.confidence
    result["steps"] = [r for r in run.rows(culprit_ids) if r["tested"]]
    meta.update(
        status=result["status"],
        result={k: result[k] for k in ("culprit", "culprit_range", "confidence")},
    )
    run.rundir.write_meta(meta)
    run.runlog.write_signatures()
    run.rundir.write("summary.json", result)
    from repro.app.outputs import write_outputs

    text = json.dumps(result, indent=2) + "\n"
    write_outputs(run.rundir.path, text, opts.json_out, opts.report)
    return result
