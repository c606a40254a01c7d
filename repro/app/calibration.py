"""The racy end's calibration: the runs still to go, their checks, the strategy they start
and the plan said before the search spends anything."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rich.markup import escape

from repro.app.bisect_run import BisectOptions, BisectRun, fail
from repro.app.loop import Limits
from repro.app.view import fmt_seconds
from repro.errors import ReproError
from repro.report.fmt import floor_runs, plural
from repro.runlog import StrategyEvent
from repro.strategy.bisect import clean_end_prior
from repro.strategy.rate import RateBelief
from repro.tsan.outcome import INVALID_HINTS, invalid_runs_kind


def calibrate(run: BisectRun, opts: BisectOptions) -> bool:
    """Measure the rate at the racy end; False stops the bisect, and so does
    ``TargetLooksWrong`` (recorded and said here), after which the near misses are said.

    The clean end is not run apart any more: the strategy holds "racy there too" as one
    more hypothesis (``clean_end_prior``), so the misses that confirm the answer rule it
    out as well, and the end is built and run only if the search asks for it.
    """
    limits = calibration_left(run, run.jobs)
    if limits is not None:
        run.console.print(f"[bold]calibrating[/] at the racy end {escape(run.describe(0))}")
        try:
            limits = _early_look(run, limits)
        except TargetLooksWrong as why:
            fail(run, str(why), "Stopped:")
            raise
    if limits is not None and run.stats(0).unusable:
        # Its first runs could not show the race (crashes, timeouts, lost stacks): the
        # budget counts only runs that can, and 420 runs went on them before this.
        limits = None
    if limits is not None:
        run.run(0, limits, "calibrate")
    return calibrated(run, opts)


# Runs of the racy end after which, with no hit yet, the console names the races that
# nearly match the target. A target naming a file that the frames lack (a maturin wheel
# without debug info) calibrated in silence toward its run limit: 400 runs, 20 minutes
# of a package's tests, before "did not reproduce".
EARLY_LOOK_RUNS = 20


# 5 of 20 runs: a target as frequent as its near miss misses all 20 with chance 0.3%.
NEAR_MISS_CHANCE = 0.01


class TargetLooksWrong(Exception):
    """The early look saw a near miss too often for a target that never showed."""


def _early_look(run: BisectRun, limits: Limits) -> Limits | None:
    """Run the calibration's first runs; with no hit in them, say the near misses seen.
    The runs left to go (None: the calibration is over).

    A near miss seen so often that a target as frequent would have shown (all the runs
    missing it has a chance under ``NEAR_MISS_CHANCE``), with the target in none, stops
    the bisect (``TargetLooksWrong``): a target with one letter missing went on to 400
    runs, all showing the race it meant (sweep 16: 3 minutes; hours with a package's
    tests). A resume calibrates on, for a target that is right and only rarer.
    """
    from repro.app.view import print_near_misses
    from repro.report.near import strongest_near_miss

    c0 = run.stats(0).counts
    first = EARLY_LOOK_RUNS - c0.evidence
    if c0.hits or first <= 0 or limits.runs is None or limits.runs <= first:
        return limits
    run.run(0, replace(limits, runs=first), "calibrate")
    c0 = run.stats(0).counts
    if c0.hits == 0:
        print_near_misses(run.console, run.rundir.path, run.record.counts.runs)
        try:
            near = strongest_near_miss(run.rundir.path)
        except (ReproError, OSError):
            near = 0  # a damaged run directory only loses the hint
        if c0.evidence and (1 - near / c0.evidence) ** c0.evidence < NEAR_MISS_CHANCE:
            raise TargetLooksWrong(
                f"the target never showed in the racy end's first {c0.evidence} runs, and "
                f"the near miss above showed in {near} of them: the target is likely wrong. "
                "Mend it as the lines above say and start again; if it is right and only "
                f"rarer, calibrate on with  repro bisect --resume {run.rundir.path}"
            )
    return calibration_left(run, run.jobs)


def calibration_left(run: BisectRun, jobs: int) -> Limits | None:
    """The calibration's runs still to go (None: it is over), from the run directory."""
    goal = int(run.meta["calibration_hits"])
    budget = int(run.meta["calibration_runs"])
    c0 = run.stats(0).counts
    if c0.hits >= goal or c0.evidence >= budget:
        return None
    return Limits(runs=budget - c0.evidence, until_hits=goal - c0.hits, jobs=jobs)


def calibrated(run: BisectRun, opts: BisectOptions) -> bool:
    """After the calibration's runs: check them, start the strategy, say the plan."""
    from repro.app.view import last_output_line
    from repro.strategy.stats import format_rate, upper_rate_if_clean

    console = run.console
    meta = run.meta
    terms = run.terms
    n = len(run.positions)
    st0 = run.stats(0)
    c0 = st0.counts
    if st0.built is False or st0.unusable:
        kind = None if st0.built is False else invalid_runs_kind(c0.outcomes)
        if st0.built is False:
            said = f"does not build: {st0.build_error or st0.unusable}"
        elif kind is not None:
            said = f"built, but {st0.unusable}: {INVALID_HINTS[kind]}"
        else:
            # Its runs crashed or hung: what the first of them printed last says why,
            # as a stress says it (a reproducer importing a module that is not there).
            said = f"built, but {st0.unusable}"
            tail = last_output_line(run.rundir.path, run.record.failed_log)
            if tail:
                said += f"; the first one's output ends: {tail}"
        return fail(run, f"the racy end {said}", "The racy end cannot be tested:")
    console.print(f"  racy end: {format_rate(c0.hits, c0.evidence)}")
    if c0.hits == 0:
        return fail(
            run,
            f"The racy end {run.positions[0].label} did not reproduce the target race in "
            f"{c0.evidence} runs (so its rate is below {upper_rate_if_clean(c0.evidence):.1%}, "
            "one-sided at 95%). "
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
    changes: dict[str, Any] = {"status": "bisecting"}
    variables = run.run_variables()
    if variables is not None:
        # The record began with this process's variables, before anything was built;
        # the runs started from those of the racy end's prepared run (a worker's own),
        # redacted where they were read (relevant_env).
        changes["environment"] = {**meta.get("environment", {}), **variables}
    run.rundir.update_meta(**changes)
    run.meta.update(changes)
    return True


def _print_plan(run: BisectRun, belief: RateBelief, build_cost: float, run_cost: float) -> None:
    """What the bisect should cost, from the calibrated rate, before spending it."""
    from repro.strategy.information import plan

    n = len(run.positions)
    cached = run.cached_positions()
    pl = plan(n, belief, float(run.meta["confidence"]), build_cost, run_cost, built=cached)
    rate, bound, _ = run.bound()
    run.meta["plan"] = {
        "runs": round(pl.runs),
        "runs_p90": round(pl.runs_high),
        "builds": round(pl.builds),
        "from_cache": round(pl.reused),
        "seconds": round(pl.seconds),
        # Not rounded up: every output floors it (floor_runs), and the console said
        # "fewer than 8.6" of a bound the record held as 8.7.
        "bound_runs": round(bound, 4),
        "rate": rate,
    }
    run.rundir.write_meta(run.meta)
    assumed = (
        f" (a build taken as {fmt_seconds(build_cost)}, 30 runs' worth, until one is "
        "measured: the time is a guess)"
        if run.measured_build_seconds() <= 0 and round(pl.builds) > 0
        else ""
    )
    # Commits the cache holds cost runs only; a plan that priced them as builds said
    # minutes for a bisect that took seconds.
    reused = (
        f" ({round(pl.reused)} more {'commit' if round(pl.reused) == 1 else 'commits'} "
        f"from the cache, which holds {len(cached)} of the range)"
        if cached and round(pl.reused) > 0
        else ""
    )
    # One candidate left takes no search (a bound of 0 runs said nothing).
    floor = (
        f"; no bisect can need fewer than {floor_runs(run.meta['plan']['bound_runs'])} "
        f"runs on average at rate "
        f"{rate:.1%} (Fano's bound)"
        if bound >= 0.5
        else ""
    )
    run.console.print(
        f"[bold]plan[/]: about {pl.runs:.0f} runs (90% within {pl.runs_high:.0f}) and "
        f"{plural(round(pl.builds), 'build')}{reused}, {fmt_seconds(pl.seconds)}{assumed}"
        f"{floor}",
        highlight=False,
    )
