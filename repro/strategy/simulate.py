"""Simulated bisects: the strategy against histories whose answer is known.

The guarantee tests and the benches run the same search as ``repro bisect`` on a made-up
race (boundary ``b``, rate ``p``), with the calibration and the clean-end check, and compare
it with ``git bisect`` run with a fixed number of runs per commit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from repro.strategy.bisect import BUILD_WEIGHT, Bisector, Done
from repro.strategy.rate import CALIBRATION_HITS, RateBelief

__all__ = ["SimResult", "baseline_git_bisect", "simulate"]


@dataclass(frozen=True)
class SimResult:
    """Outcome of one simulated bisection; ``runs`` and ``builds`` include calibration."""

    found_lo: int
    found_hi: int
    correct: bool
    runs: int
    builds: int
    calib_runs: int = 0
    confidence: float = math.nan
    failed: bool = False
    end_runs: int = 0  # of ``calib_runs``: the clean-end check
    culprit_runs: int = 0  # bisect runs at the true first clean position itself


def _run_batch(rng: random.Random, p: float, racy: bool, k: int) -> list[bool]:
    return [racy and rng.random() < p for _ in range(k)]


def simulate(
    n: int,
    b: int,
    p: float,
    rng: random.Random,
    *,
    confidence: float = 0.99,
    skips: frozenset[int] = frozenset(),
    calib_runs_max: int = 5000,
    calib_hits_target: int = CALIBRATION_HITS,
    build_cost: float = 60.0,
    run_cost: float = 1.0,
    batch: int = 1,
    max_runs: int = 2_000_000,
    interior_rate: float | None = None,
    calib_hits_for: Callable[[int, int], bool] | None = None,
    rate_mixture: Sequence[tuple[float, float]] | None = None,
    clean_end_racy: float = 0.0,
    build_weight: float = BUILD_WEIGHT,
    rate_probes: bool = True,
) -> SimResult:
    """One bisection with ``repro``'s strategy against a simulated history, costs included.

    It calibrates position 0 (until ``calib_hits_target`` hits, at most ``calib_runs_max`` runs),
    checks the clean end with as many runs as the calibration says are needed at
    ``confidence``, then follows ``next_step``.  Runs go in parallel batches of ``batch``: all
    runs of a batch count, and a probe stops after the batch that hit.  A failed build of an
    unusable position counts as a build.

    ``interior_rate`` is the rate at the racy commits inside the range (default ``p``, the
    calibrated end's), to measure what a rate that differs along the range does.
    ``clean_end_racy`` > 0 checks the clean end inside the posterior (see ``Bisector``)
    instead of before the search; then ``b == n`` (the race shows at the clean end too) is
    a history that can be simulated.
    ``calib_hits_for(hits, runs)``, if given, says whether calibration goes on (instead of the
    fixed ``calib_hits_target``), within ``calib_runs_max``.
    """
    top = n if clean_end_racy > 0.0 else n - 1
    if not 1 <= b <= top:
        raise ValueError(f"b must be in 1..{top}, got {b}")
    runs = 0
    hits = 0
    inner = p if interior_rate is None else interior_rate

    def more(h: int, r: int) -> bool:
        if calib_hits_for is not None:
            return calib_hits_for(h, r)
        return h < calib_hits_target

    while runs < calib_runs_max and (hits == 0 or more(hits, runs)):
        hits += sum(_run_batch(rng, p, True, batch))
        runs += batch
    calib_hit_runs = runs
    builds = 1
    if hits == 0:
        return SimResult(0, n - 1, False, runs, builds, runs, 0.0, failed=True)
    if clean_end_racy > 0.0:
        end_runs = 0  # the clean end is a hypothesis of the posterior, probed when it pays
    else:
        end_runs = RateBelief.from_calibration(hits, runs).runs_to_rule_out(confidence)
        end_runs = -(-end_runs // batch) * batch  # the clean end never hits in this model
    runs += end_runs
    builds += 0 if clean_end_racy > 0.0 else 1
    calib_runs = runs
    at_culprit = 0

    bis = Bisector(
        n,
        confidence=confidence,
        calib_hits=hits,
        calib_runs=calib_hit_runs,
        build_cost=build_cost,
        run_cost=run_cost,
        batch=batch,
        rate_mixture=rate_mixture,
        clean_end_racy=clean_end_racy,
        build_weight=build_weight,
        rate_probes=rate_probes,
    )
    built: set[int] = set()
    while True:
        step = bis.next_step()
        if isinstance(step, Done):
            ok = step.lo <= b <= step.hi
            return SimResult(
                step.lo,
                step.hi,
                ok,
                runs,
                builds,
                calib_runs,
                step.confidence,
                end_runs=end_runs,
                culprit_runs=at_culprit,
            )
        t = step.index
        if t not in built:
            builds += 1
            built.add(t)
        if t in skips:
            bis.record_unusable(t)
            continue
        done = 0
        while done < step.runs:
            out = _run_batch(rng, inner, t < b, batch)
            runs += batch
            at_culprit += batch if t == b else 0
            done += batch
            for hit in out:
                bis.record_run(t, hit)
            if any(out):
                break
        if runs > max_runs:
            return SimResult(0, n - 1, False, runs, builds, calib_runs, 0.0, failed=True)


def baseline_git_bisect(
    n: int,
    b: int,
    p: float,
    rng: random.Random,
    *,
    repeats: int,
    skips: frozenset[int] = frozenset(),
) -> SimResult:
    """Plain binary search where a commit is bad if any of ``repeats`` runs hits.

    This is ``git bisect run`` with a loop in the script, the usual workaround today.  The
    script stops at the first hit, so a racy commit costs fewer than ``repeats`` runs.  An
    unusable midpoint is skipped to the nearest usable commit, as ``git bisect skip`` does; if
    none is left, the answer is the whole remaining range.  No calibration, no end checks.
    """
    if not 1 <= b <= n - 1:
        raise ValueError(f"b must be in 1..{n - 1}, got {b}")
    lo, hi = 0, n - 1  # lo is "bad" (racy), hi is "good" (clean)
    runs = builds = 0
    tried: set[int] = set()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        pick: int | None = None
        # Walk outwards from the midpoint; each unusable commit met on the way costs a failed
        # build the first time (git hands it out, the build breaks, the user skips it).
        for c in sorted(range(lo + 1, hi), key=lambda c: (abs(c - mid), c)):
            if c not in skips:
                pick = c
                break
            if c not in tried:
                tried.add(c)
                builds += 1
        if pick is None:
            break
        builds += 1
        bad = False
        for _ in range(repeats):
            runs += 1
            if pick < b and rng.random() < p:
                bad = True
                break
        if bad:
            lo = pick
        else:
            hi = pick
    ok = lo + 1 <= b <= hi
    return SimResult(lo + 1, hi, ok, runs, builds, 0, math.nan)
