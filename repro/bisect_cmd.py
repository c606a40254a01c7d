"""`repro bisect`: calibrate, verify both ends, then let the strategy pick commits.

The strategy (repro.bisect_strategy) is pure; this module does the I/O around it:
building commits, running the reproducer, and writing every event to the run
directory before acting on it, so that `--resume` replays the same events into a
fresh strategy and continues exactly where the last process stopped.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from repro.bisect_strategy import Bisector, Done, Probe, RateBelief
from repro.builds.cache import BuildError
from repro.builds.progress import RichBuildProgress
from repro.context import Overrides, Prepared, extension_location, prepare
from repro.environment import collect_environment
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import LoadedRecipe, load_recipe, load_run_recipe
from repro.rundir import RunDir
from repro.runner import Outcome
from repro.stress import Limits, SignatureEntry, StressState, Tally, stress_loop
from repro.stress_view import PlainTicker, StressView, fmt_seconds

# A commit whose runs keep failing for other reasons (crash before the reproducer,
# TSAN start-up failure, timeout) tells nothing about the race: skip it like git
# bisect's exit 125 once this many such runs outnumber the informative ones.
UNUSABLE_AFTER = 3
INFORMATIVE = (Outcome.TARGET, Outcome.OTHER, Outcome.CLEAN)


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


@dataclass
class Position:
    """One candidate: a commit (sha) or a CPython release (version)."""

    id: str
    label: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PositionStats:
    runs: int = 0
    hits: int = 0
    other: int = 0
    noninformative: int = 0
    built: bool | None = None
    build_seconds: float = 0.0
    build_error: str | None = None
    run_seconds: float = 0.0
    unusable: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


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


def _ordered(old_to_new: list[Position], find: str) -> list[Position]:
    """Search order: the racy end first (position 0), the clean end last."""
    return list(old_to_new) if find == "fix" else list(reversed(old_to_new))


def culprit_positions(find: str, lo: int, hi: int) -> tuple[int, int]:
    """Positions of the commits to blame, given the first clean position range.

    Finding a fix, the first clean commit is the fix. Finding a regression the search
    runs newest to oldest, so the culprit is the last racy one, just before.
    """
    if find == "fix":
        return lo, hi
    return lo - 1, hi - 1


# --- the command ----------------------------------------------------------------------


class BisectRun:
    """One bisection: its run directory, its positions, and the strategy's replay."""

    def __init__(
        self,
        rundir: RunDir,
        loaded: LoadedRecipe,
        meta: dict[str, Any],
        console: Console,
        jobs: int,
        overrides: Overrides,
    ) -> None:
        self.rundir = rundir
        self.loaded = loaded
        self.meta = meta
        self.console = console
        self.jobs = jobs
        self.overrides = overrides
        self.positions = [Position(**p) for p in meta["positions"]]
        self.stats = [PositionStats() for _ in self.positions]
        self.signatures: dict[str, SignatureEntry] = {}
        self.bisector: Bisector | None = None
        self.started = time.monotonic()
        self.build_seconds = 0.0
        self.run_seconds = 0.0
        self._prepared: dict[int, Prepared] = {}
        self.next_index = 0  # the run index after every run applied so far

    # -- events -------------------------------------------------------------------

    def log(self, event: dict[str, Any]) -> None:
        self.rundir.append(event)
        self.apply(event)

    def apply(self, ev: dict[str, Any]) -> None:
        """Update the in-memory state from one event (live or replayed)."""
        kind = ev.get("event")
        if kind == "strategy":
            self.make_bisector(ev)
            return
        pos = ev.get("pos")
        if not isinstance(pos, int):
            return
        st = self.stats[pos]
        if kind == "build":
            st.built = bool(ev["ok"])
            st.build_seconds += float(ev.get("seconds", 0.0))
            self.build_seconds += float(ev.get("seconds", 0.0))
            if ev["ok"]:
                if self.bisector is not None:
                    self.bisector.mark_built(pos)
            else:
                st.build_error = ev.get("error")
        elif kind == "unusable":
            st.unusable = ev.get("reason", "unusable")
            if self.bisector is not None and 0 < pos < len(self.positions) - 1:
                self.bisector.record_unusable(pos)
        elif kind == "run":
            self.next_index = max(self.next_index, int(ev["index"]) + 1)
            outcome = Outcome(ev["outcome"])
            st.outcomes[outcome.value] = st.outcomes.get(outcome.value, 0) + 1
            st.run_seconds += float(ev.get("duration", 0.0))
            self.run_seconds += float(ev.get("duration", 0.0))
            if outcome not in INFORMATIVE:
                st.noninformative += 1
                return
            st.runs += 1
            hit = outcome is Outcome.TARGET
            st.hits += int(hit)
            st.other += int(outcome is Outcome.OTHER)
            if self.bisector is not None and ev.get("phase") == "bisect":
                self.bisector.record_run(pos, hit)

    def make_bisector(self, ev: dict[str, Any]) -> None:
        n = len(self.positions)
        self.bisector = Bisector(
            n,
            confidence=float(ev["confidence"]),
            calib_hits=int(ev["calib_hits"]),
            calib_runs=int(ev["calib_runs"]),
            build_cost=float(ev["build_cost"]),
            run_cost=float(ev["run_cost"]),
            batch=int(ev["batch"]),
            anchors=ev.get("anchors"),
        )
        # Everything measured before the strategy existed counts too.
        for pos, st in enumerate(self.stats):
            if st.built and 0 < pos < n - 1:
                self.bisector.mark_built(pos)
            if st.unusable and 0 < pos < n - 1:
                self.bisector.record_unusable(pos)

    def replay(self) -> None:
        for ev in self.rundir.events():
            self.apply(ev)
        known = self.rundir.read("signatures.json") or []
        for e in known:
            entry = SignatureEntry.from_json(e)
            self.signatures[entry.id] = entry

    # -- actions ------------------------------------------------------------------

    def describe(self, pos: int) -> str:
        p = self.positions[pos]
        subject = p.info.get("subject")
        return f"{p.label}" + (f" {subject!r}" if subject else "")

    def build(self, pos: int) -> Prepared | None:
        """Build (or reuse) one position; None, logged as unusable, when it cannot build."""
        if pos in self._prepared:
            return self._prepared[pos]
        side = self.meta["side"]
        p = self.positions[pos]
        t0 = time.monotonic()
        try:
            progress = RichBuildProgress(self.console)
            if side == "extension":
                prepared = prepare(self.loaded, self.overrides, ext_ref=p.id, progress=progress)
            elif side == "python":
                prepared = prepare(self.loaded, self.overrides, python_ref=p.id, progress=progress)
            else:
                prepared = prepare(
                    self.loaded, self.overrides, python_version=p.id, progress=progress
                )
        except BuildError as exc:
            seconds = time.monotonic() - t0
            first = str(exc).splitlines()[0] if str(exc) else "build failed"
            self.log(
                {
                    "event": "build",
                    "pos": pos,
                    "id": p.id,
                    "ok": False,
                    "seconds": seconds,
                    "error": first,
                }
            )
            self.log({"event": "unusable", "pos": pos, "id": p.id, "reason": "does not build"})
            self.console.print(f"  [yellow]skip[/] {escape(self.describe(pos))}: does not build")
            return None
        seconds = time.monotonic() - t0
        self.log({"event": "build", "pos": pos, "id": p.id, "ok": True, "seconds": seconds})
        self._prepared[pos] = prepared
        return prepared

    def run(self, pos: int, limits: Limits, phase: str) -> Tally:
        prepared = self.build(pos)
        if prepared is None:
            return Tally()
        tally = Tally(signatures=self.signatures)
        holder: dict[str, StressState] = {}
        view = StressView(holder, f"{phase} at {self.describe(pos)[:60]}", str(self.rundir.path))

        ticker = PlainTicker(self.console)

        def on_change(state: StressState) -> None:
            holder["state"] = state
            ticker(state)

        first = self.next_index
        with Live(view, console=self.console, refresh_per_second=4, transient=True):
            _state, interrupted = stress_loop(
                prepared.spec,
                prepared.matcher,
                limits,
                self.rundir,
                tally=tally,
                first_index=first,
                on_change=on_change,
                extra_event={"pos": pos, "id": self.positions[pos].id, "phase": phase},
            )
        # The loop wrote the run events; replay them into our state in order.
        self._absorb_runs(first)
        if interrupted:
            raise KeyboardInterrupt
        st = self.stats[pos]
        if (
            st.noninformative >= UNUSABLE_AFTER
            and st.noninformative > st.runs
            and not st.hits
            and not st.unusable
        ):
            reasons = ", ".join(
                f"{k} {v}" for k, v in st.outcomes.items() if Outcome(k) not in INFORMATIVE
            )
            self.log(
                {
                    "event": "unusable",
                    "pos": pos,
                    "id": self.positions[pos].id,
                    "reason": f"runs fail for other reasons ({reasons})",
                }
            )
        return tally

    def _absorb_runs(self, first_index: int) -> None:
        for ev in self.rundir.events():
            if ev.get("event") == "run" and int(ev["index"]) >= first_index:
                self.apply(ev)

    # -- reporting ----------------------------------------------------------------

    def posterior_line(self) -> str:
        if self.bisector is None:
            return ""
        post = self.bisector.posterior_b()
        best = max(range(len(post)), key=lambda b: post[b])
        lo = min((b for b, w in enumerate(post) if w > 1e-4), default=best)
        hi = max((b for b, w in enumerate(post) if w > 1e-4), default=best)
        c_lo, _ = culprit_positions(self.meta["find"], best, best)
        return (
            f"likely culprit {self.positions[c_lo].label} ({post[best]:.0%}); "
            f"plausible range {hi - lo + 1} positions"
        )

    def steps(self) -> list[dict[str, Any]]:
        out = []
        post = self.bisector.posterior_b() if self.bisector else None
        n = len(self.positions)
        for pos, st in enumerate(self.stats):
            if st.built is None and not st.runs and not st.noninformative:
                continue
            if st.unusable:
                verdict = "skipped"
            elif st.hits:
                verdict = "racy"
            elif pos == n - 1:
                verdict = "clean (verified end)"
            elif post is not None:
                p_clean = sum(post[1 : pos + 1])
                verdict = f"clean ({p_clean:.1%})" if st.runs else "untested"
            else:
                verdict = "clean?" if st.runs else "untested"
            p = self.positions[pos]
            out.append(
                {
                    "pos": pos,
                    "id": p.id,
                    "label": p.label,
                    "subject": p.info.get("subject"),
                    "built": st.built,
                    "build_seconds": round(st.build_seconds, 1),
                    "build_error": st.build_error,
                    "runs": st.runs,
                    "hits": st.hits,
                    "other_races": st.other,
                    "failed_runs": st.noninformative,
                    "outcomes": st.outcomes,
                    "verdict": verdict,
                }
            )
        return out

    def order_for_display(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chronological order, oldest first, whatever the search direction."""
        return steps if self.meta["find"] == "fix" else list(reversed(steps))

    def steps_table(self) -> Table:
        table = Table(title="Bisection steps (oldest first)")
        for col, just in (
            ("commit", "left"),
            ("subject", "left"),
            ("build", "left"),
            ("runs", "right"),
            ("hits", "right"),
            ("other races", "right"),
            ("verdict", "left"),
        ):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for s in self.order_for_display(self.steps()):
            build = (
                "skipped"
                if s["built"] is False
                else f"{s['build_seconds']:.0f}s"
                if s["built"]
                else "-"
            )
            style = "red" if s["verdict"] == "racy" else None
            table.add_row(
                s["label"],
                escape((s["subject"] or "")[:50]),
                build,
                str(s["runs"]),
                str(s["hits"]),
                str(s["other_races"]),
                s["verdict"],
                style=style,
            )
        return table


def _commit_positions(
    loaded: LoadedRecipe, overrides: Overrides, side: str, old: str, new: str, find: str
) -> tuple[list[Position], list[int], dict[str, Any]]:
    from repro.builds.cache import BuildCache
    from repro.gitrepo import GitRepo

    cache = BuildCache()
    if side == "extension":
        location = extension_location(loaded, overrides)
    else:
        py = loaded.recipe.python
        if py is None or not py.git:
            raise ReproError(
                f"{loaded.path}: bisecting CPython commits needs `python.git` in the recipe "
                "(or use --versions to bisect over releases)"
            )
        location = loaded.resolve_repo(py.git)
    repo = GitRepo.open_cached(location, cache.base)
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
    ordered = _ordered(positions, find)
    depth0 = repo.depth(shas[0])
    anchors_chrono = [depth0 + k for k in range(len(shas))]
    anchors = anchors_chrono if find == "fix" else list(reversed(anchors_chrono))
    return ordered, anchors, {"repo": location}


def run_bisect(opts: BisectOptions, console: Console) -> int:
    if opts.resume is not None:
        rundir = RunDir.open(opts.resume)
        loaded, meta = load_run_recipe(rundir.path, "bisect")
        overrides = Overrides(**meta.get("overrides", {}))
        run = BisectRun(rundir, loaded, meta, console, opts.jobs, overrides)
        run.replay()
        console.print(
            f"[bold]resuming[/] bisect of {loaded.recipe.name}: "
            f"{sum(s.runs + s.noninformative for s in run.stats)} runs already measured"
        )
    else:
        if opts.recipe is None:
            raise ReproError("give a recipe file (or --resume RUN_DIR)")
        loaded = load_recipe(opts.recipe, opts.sets)
        run = _new_run(loaded, opts, console)
    return _drive(run, opts)


def _new_run(loaded: LoadedRecipe, opts: BisectOptions, console: Console) -> BisectRun:
    r = loaded.recipe
    spec = r.bisect
    find = opts.find or (spec.find if spec else "fix")
    if find not in ("fix", "regression"):
        raise ReproError(f"--find takes `fix` or `regression`, not {find!r}")
    confidence = opts.confidence or (spec.confidence if spec else 0.99)
    if not 0.5 < confidence < 1.0:
        raise ReproError("--confidence must be between 0.5 and 1 (e.g. 0.99)")
    racy = opts.racy or (spec.racy if spec else None)
    other = (
        (opts.fixed or (spec.fixed if spec else None))
        if find == "fix"
        else (opts.clean or (spec.clean if spec else None))
    )
    overrides = Overrides(extension_repo=opts.repo, threads=opts.threads, timeout=opts.timeout)
    if opts.versions:
        if r.python is None or not r.python.version:
            raise ReproError(
                f"{loaded.path}: --versions needs a `python:` section with `version:` "
                "(the releases replace it)"
            )
        versions = expand_versions(opts.versions)
        chrono = [Position(id=v, label=v, info={"version": v}) for v in versions]
        positions = _ordered(chrono, find)
        side = "versions"
        anchors = list(range(len(positions)))
        extra: dict[str, Any] = {"versions": versions}
        racy_ref = positions[0].id
        clean_ref = positions[-1].id
    else:
        side = spec.side if spec else "extension"
        if racy is None or other is None:
            need = "--fixed" if find == "fix" else "--clean"
            raise ReproError(
                f"{loaded.path}: the range is not known: give --racy and {need} "
                "(or `bisect.racy` and `bisect.fixed`/`bisect.clean` in the recipe)"
            )
        old, new = (racy, other) if find == "fix" else (other, racy)
        positions, anchors, extra = _commit_positions(loaded, overrides, side, old, new, find)
        racy_ref, clean_ref = racy, other
    rundir = RunDir.create(opts.runs_dir or default_runs_dir(), r.name, "bisect")
    shutil.copyfile(loaded.path, rundir.path / "recipe.yaml")
    meta = {
        "kind": "bisect",
        "recipe": r.name,
        "recipe_path": str(loaded.path),
        "set": list(loaded.sets),
        "find": find,
        "direction": find,
        "side": side,
        "racy": racy_ref,
        "clean": clean_ref,
        "confidence": confidence,
        "calibration_runs": opts.calibration_runs or (spec.max_calibration_runs if spec else 400),
        "calibration_hits": spec.calibration_hits if spec else 3,
        "positions": [vars(p) for p in positions],
        "anchors": anchors,
        "jobs": opts.jobs,
        "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
        "status": "started",
        "environment": collect_environment(None),
        **extra,
    }
    rundir.write_meta(meta)
    console.print(
        f"[bold]repro bisect[/] {escape(r.name)}: find the {find} in {len(positions)} "
        f"{'releases' if side == 'versions' else 'commits'} "
        f"({escape(str(racy_ref))} racy .. {escape(str(clean_ref))} "
        f"{'fixed' if find == 'fix' else 'clean'}), confidence {confidence:g}"
    )
    console.print(f"run directory: {rundir.path}", highlight=False)
    return BisectRun(rundir, loaded, meta, console, opts.jobs, overrides)


def _drive(run: BisectRun, opts: BisectOptions) -> int:
    console = run.console
    try:
        if run.bisector is None and not _calibrate(run):
            return _finish(run, opts, None)
        assert run.bisector is not None
        while True:
            step = run.bisector.next_step()
            if isinstance(step, Done):
                return _finish(run, opts, step)
            assert isinstance(step, Probe)
            pos = step.index
            st = run.stats[pos]
            console.print(
                f"[bold]step[/] {escape(run.describe(pos))}: up to {step.runs} runs "
                f"(so far {st.runs} runs, {st.hits} hits)",
                highlight=False,
            )
            tally = run.run(
                pos,
                Limits(runs=step.runs, until_hits=1, jobs=run.jobs),
                "bisect",
            )
            if run.stats[pos].unusable:
                console.print(f"  [yellow]skip[/] {run.stats[pos].unusable}")
            elif tally.runs or tally.hits:
                verdict = "[red]racy[/]" if tally.hits else "no hit"
                console.print(
                    f"  {verdict}: {tally.hits}/{tally.runs} runs; {run.posterior_line()}"
                )
    except KeyboardInterrupt:
        run.rundir.update_meta(status="interrupted")
        console.print(
            f"\n[yellow]interrupted[/]; everything measured is saved. Resume with:\n"
            f"  repro bisect --resume {run.rundir.path}"
        )
        _write_outputs(run, opts, None, interrupted=True)
        return 130


def _stop(run: BisectRun, failure: str, heading: str | None = None) -> bool:
    """Record why the bisect cannot go on, say it, and tell the caller to stop."""
    run.meta.update(status="failed", failure=failure)
    run.rundir.write_meta(run.meta)
    if heading:
        run.console.print(f"[red]{heading}[/] {escape(failure)}")
    else:
        run.console.print(f"[red]{escape(failure)}[/]")
    return False


def _calibrate(run: BisectRun) -> bool:
    """Measure the rate at the racy end and check the clean end; False stops the bisect."""
    console = run.console
    meta = run.meta
    n = len(run.positions)
    goal = int(meta["calibration_hits"])
    budget = int(meta["calibration_runs"])
    st0 = run.stats[0]
    if st0.hits < goal and st0.runs < budget:
        console.print(f"[bold]calibrating[/] at the racy end {escape(run.describe(0))}")
        run.run(
            0,
            Limits(runs=budget - st0.runs, until_hits=goal - st0.hits, jobs=run.jobs),
            "calibrate",
        )
    st0 = run.stats[0]
    if st0.built is False or st0.unusable:
        return _stop(
            run,
            f"the racy end does not build or run: {st0.build_error or st0.unusable}",
            "The racy end cannot be tested:",
        )
    from repro.stats import format_rate, upper_rate_if_clean

    console.print(f"  racy end: {format_rate(st0.hits, st0.runs)}")
    if st0.hits == 0:
        return _stop(
            run,
            f"The racy end {run.positions[0].label} did not reproduce the target race in "
            f"{st0.runs} runs (rate below {upper_rate_if_clean(st0.runs):.2%} at 95%). "
            "Check the recipe's target and reproducer, or raise --calibration-runs.",
        )
    belief = RateBelief.from_calibration(st0.hits, st0.runs)
    need = belief.runs_to_rule_out(float(meta["confidence"]))
    last = n - 1
    stl = run.stats[last]
    if stl.runs < need and not stl.hits:
        console.print(f"[bold]verifying[/] the clean end {escape(run.describe(last))}: {need} runs")
        run.run(last, Limits(runs=need - stl.runs, until_hits=1, jobs=run.jobs), "verify")
    stl = run.stats[last]
    if stl.built is False or stl.unusable:
        return _stop(
            run,
            f"the clean end does not build or run: {stl.build_error or stl.unusable}",
            "The clean end cannot be tested:",
        )
    if stl.hits:
        return _stop(
            run,
            f"The target race reproduces at the {'fixed' if meta['find'] == 'fix' else 'clean'}"
            f" end {run.positions[last].label} ({stl.hits} of {stl.runs} runs): "
            "it is not a clean end. Pick a later fixed "
            f"{'release' if meta['side'] == 'versions' else 'commit'} "
            "(or an earlier clean one).",
        )
    console.print(f"  clean end: 0 hits in {stl.runs} runs")
    build_times = [s.build_seconds for s in (run.stats[0], run.stats[last]) if s.built]
    mean_run = run.run_seconds / max(1, sum(s.runs + s.noninformative for s in run.stats))
    build_cost = max(max(build_times, default=0.0), 30.0 * max(mean_run, 0.01), 1.0)
    run.log(
        {
            "event": "strategy",
            "confidence": meta["confidence"],
            "calib_hits": st0.hits,
            "calib_runs": st0.runs,
            "build_cost": round(build_cost, 3),
            "run_cost": round(max(mean_run, 0.001), 4),
            "batch": run.jobs,
            "anchors": meta.get("anchors"),
        }
    )
    # The verification runs at the clean end are evidence too (they cannot hit there).
    run.rundir.update_meta(status="bisecting")
    return True


def _finish(run: BisectRun, opts: BisectOptions, done: Done | None) -> int:
    console = run.console
    console.print(run.steps_table())
    result = _write_outputs(run, opts, done, interrupted=False)
    if done is None:
        return 1
    c = result["culprit"]
    conf = result["confidence"]
    word = "first fixed" if run.meta["find"] == "fix" else "first bad"
    if result.get("culprit_range"):
        rng = result["culprit_range"]
        console.print(
            f"[bold]The {word} commit is one of {len(rng)}[/] (the ones between could not "
            f"be tested): " + ", ".join(x["label"] for x in rng)
        )
    console.print(
        f"[bold green]{word} {'release' if run.meta['side'] == 'versions' else 'commit'}:"
        f"[/] {escape(c['label'])} {escape(c.get('subject') or '')}",
        highlight=False,
    )
    for key in ("author", "date", "url"):
        if c.get(key):
            console.print(f"  {key}: {c[key]}", highlight=False)
    console.print(
        f"  confidence {conf:.4f} (asked {run.meta['confidence']:g}); "
        f"{result['builds']} builds, {result['runs']} runs, "
        f"build time {fmt_seconds(result['build_seconds'])}, "
        f"run time {fmt_seconds(result['run_seconds'])}"
    )
    if conf < float(run.meta["confidence"]):
        console.print(
            "[yellow]The requested confidence was not reached: nothing more could be "
            "learnt (untestable commits).[/]"
        )
    console.print(f"run directory: {run.rundir.path}", highlight=False)
    if opts.then_git and run.meta["side"] == "versions" and not result.get("culprit_range"):
        return _continue_over_commits(run, opts, done)
    return 0


def release_tags(run: BisectRun, done: Done) -> tuple[str, str]:
    """The git tags of the last racy and the first clean release around the answer."""
    racy = run.positions[done.lo - 1].id
    clean = run.positions[done.lo].id
    return f"v{racy}", f"v{clean}"


def _continue_over_commits(run: BisectRun, opts: BisectOptions, done: Done) -> int:
    """Second stage: bisect CPython's commits between the two releases just found."""
    racy_tag, clean_tag = release_tags(run, done)
    racy, other = racy_tag, clean_tag
    run.console.print(
        f"\n[bold]continuing[/] over the commits between {racy_tag} and {clean_tag} "
        f"in {opts.then_git}"
    )
    sets = (
        *run.loaded.sets,
        f"python.git={opts.then_git}",
        "python.version=",
        "python.source=",
        f"python.ref={racy}",
        "bisect.side=python",
    )
    follow = BisectOptions(
        recipe=run.loaded.path,
        racy=racy,
        fixed=other if run.meta["find"] == "fix" else None,
        clean=other if run.meta["find"] == "regression" else None,
        find=run.meta["find"],
        confidence=float(run.meta["confidence"]),
        jobs=opts.jobs,
        runs_dir=opts.runs_dir,
        json_out=opts.json_out,
        report=opts.report,
        threads=opts.threads,
        timeout=opts.timeout,
        sets=sets,
    )
    return run_bisect(follow, run.console)


def _write_outputs(
    run: BisectRun, opts: BisectOptions, done: Done | None, interrupted: bool
) -> dict[str, Any]:
    meta = run.meta
    steps = run.order_for_display(run.steps())
    result: dict[str, Any] = {
        "kind": "bisect",
        "recipe": meta["recipe"],
        "direction": meta["find"],
        "side": meta["side"],
        "racy": meta["racy"],
        "clean": meta["clean"],
        "requested_confidence": meta["confidence"],
        "steps": steps,
        "builds": sum(1 for s in run.stats if s.built is not None),
        "runs": sum(s.runs + s.noninformative for s in run.stats),
        "build_seconds": round(run.build_seconds, 1),
        "run_seconds": round(run.run_seconds, 1),
        "positions": len(run.positions),
        "interrupted": interrupted,
        "status": "interrupted" if interrupted else ("done" if done else "failed"),
        "failure": meta.get("failure"),
        "culprit": None,
        "confidence": None,
        "signatures": [e.to_json() for e in run.signatures.values()],
    }
    calib = run.stats[0]
    result["calibration"] = {"hits": calib.hits, "runs": calib.runs}
    if done is not None:
        lo, hi = culprit_positions(meta["find"], done.lo, done.hi)
        blamed = [run.positions[k] for k in range(min(lo, hi), max(lo, hi) + 1)]
        first = run.positions[lo]
        result["culprit"] = {
            "sha": first.info.get("sha"),
            "id": first.id,
            "label": first.label,
            **{k: first.info.get(k) for k in ("subject", "author", "date", "url", "version")},
        }
        if len(blamed) > 1:
            result["culprit_range"] = [
                {"id": p.id, "label": p.label, "subject": p.info.get("subject")} for p in blamed
            ]
        result["confidence"] = done.confidence
    meta.update(status=result["status"], result={k: result[k] for k in ("culprit", "confidence")})
    run.rundir.write_meta(meta)
    run.rundir.write("summary.json", result)
    from repro.outputs import write_outputs

    text = json.dumps(result, indent=2) + "\n"
    write_outputs(run.rundir.path, text, opts.json_out, opts.report)
    return result
