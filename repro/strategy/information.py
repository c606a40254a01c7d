"""What any bisect of an intermittent race must spend, and what ours expects to spend.

A run at a racy commit shows the target with probability ``p`` and a run at a clean commit
never does: each run is a Z-channel.  Its capacity bounds the bits one run can tell about the
boundary, and Fano's inequality turns that into a floor on the mean number of runs that *any*
search needs to name one commit among ``n`` with error at most ``delta``, even knowing ``p``
(feedback, i.e. choosing the next probe from the past, does not raise a channel's capacity).
Printing that floor next to what a bisect spent says how much room is left; printing a plan
before the work says what it will cost while the user can still change their mind.

Fano's floor counts bits and says nothing about *where* the runs go. A second floor does: only
runs at the first clean commit itself tell "it is the first clean one" from "the next one is",
since every other run has the same odds under both answers. A racy commit misses ``K`` runs in
a row with probability ``(1-p)**K``, so an answer right with probability ``1 - delta`` must
spend about ``ln(1/delta) / -ln(1-p)`` runs there (``culprit_bound``), whether it knows ``p``
or not. The two floors are each true alone; their sum is not proven to be one.

Pure: no I/O; ``plan`` uses its own seeded random generator, so it answers the same every time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from dataclasses import dataclass

from repro.strategy.bisect import Bisector, Done, clean_end_prior
from repro.strategy.rate import RateBelief

__all__ = ["Plan", "capacity", "culprit_bound", "fano_bound", "plan"]


def capacity(p: float) -> float:
    """Capacity in bits of one run that shows the race with probability ``p`` when racy."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {p}")
    if p == 1.0:
        return 1.0
    return math.log2(1.0 + p * (1.0 - p) ** ((1.0 - p) / p))


def fano_bound(n: int, p: float, delta: float) -> float:
    """Fewest runs on average that can name the first clean commit of ``n`` with error ``delta``.

    ``n`` counts the candidate answers (the commits of the range); 0 when Fano says nothing.
    """
    if n < 1:
        raise ValueError(f"need at least one candidate commit, got n={n}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"error rate must be in [0, 1), got {delta}")
    return max(0.0, ((1.0 - delta) * math.log2(n) - 1.0) / capacity(p))


def culprit_bound(n: int, p: float, delta: float) -> float:
    """Fewest runs on average at the first clean commit itself, among ``n`` equally likely ones.

    Proof sketch.  Answers ``b`` and ``b + 1`` differ only in runs at ``b``: racy under
    ``b + 1``, clean under ``b``.  So the chance of answering ``b`` when ``b + 1`` is true is at
    least ``E_b[answer b; (1-p)**K_b]``, with ``K_b`` the runs at ``b``.  ``(1-p)**K`` lies above
    its convex piecewise-linear hull ``psi`` over the integers, and Jensen's inequality on the
    ``n - 1`` pairs that have a right neighbour, each right with probability ``alpha_b``, gives
    ``a * psi(k) <= delta`` with ``a = 1 - delta - 1/n`` and ``k`` the mean runs at the true
    commit when it is named.  The floor is ``a * psi^-1(delta / a)``: about
    ``ln(1/delta) / -ln(1-p)`` runs, and at ``p = 1`` about one (a miss is conclusive, but some
    run must be made there).  Nothing in it asks the strategy to know ``p``: it holds for
    every strategy whose error at this rate is at most ``delta``.
    """
    if n < 1:
        raise ValueError(f"need at least one candidate commit, got n={n}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {p}")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"error rate must be in [0, 1), got {delta}")
    a = 1.0 - delta - 1.0 / n
    if a <= delta:
        return 0.0
    eps = delta / a
    if p == 1.0:
        return a * (1.0 - eps)
    if eps <= 0.0:  # never wrong at a rate below 1: no number of misses is enough
        return math.inf
    log_x = math.log1p(-p)
    k = math.floor(math.log(eps) / log_x)
    # Float rounding can put the bracket one off: x**k >= eps > x**(k+1) must hold.
    while k > 0 and math.exp(k * log_x) < eps:
        k -= 1
    while math.exp((k + 1) * log_x) >= eps:
        k += 1
    hi, lo = math.exp(k * log_x), math.exp((k + 1) * log_x)
    return a * (k + (hi - eps) / (hi - lo))


@dataclass(frozen=True)
class Plan:
    """Expected cost of the bisect after calibration: ``builds`` are the builds it will
    make (not the racy end's, made for the calibration, nor those the cache holds);
    ``reused`` the commits it will take from the cache."""

    runs: float
    builds: float
    seconds: float
    runs_high: float  # the 90th percentile of the simulated bisects' runs
    bound: float  # Fano's floor on runs at the belief's mean rate
    rate: float  # the belief's mean rate
    reused: float = 0.0


# Simulated bisects behind a plan: enough for a mean within about 10%, few enough to answer in
# about a second at n = 1000 and p = 0.02.
_PLAN_TRIALS = 24
_PLAN_MAX_RUNS = 200_000
# Draws from the rate belief that the plan's stratified rates are read from.
_PLAN_RATE_POOL = 4096


def plan(
    n: int,
    belief: RateBelief,
    confidence: float,
    build_seconds: float,
    run_seconds: float,
    *,
    trials: int = _PLAN_TRIALS,
    seed: int = 0,
    built: Collection[int] = (),
) -> Plan:
    """What a bisect of ``n`` positions (both ends included) with this strategy should cost.

    A closed form would have to model the strategy's trade of runs against builds; simulating
    the strategy itself is both simpler and right by construction.  Each trial draws the rate
    from ``belief`` (so a vague calibration plans for its own uncertainty), a uniform boundary,
    and runs the real ``Bisector`` with the same calibration.  ``built``: positions whose
    builds exist already (the cache's), which the search prefers and which cost no build.
    """
    if n < 2:
        raise ValueError(f"need at least the two verified ends, got n={n}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    hits = max(1, round(belief.alpha))
    runs_cal = max(hits, round(belief.alpha + belief.beta - 1.0))
    rng = random.Random(f"plan-{seed}-{n}-{hits}-{runs_cal}")
    # Stratified draws: the rate at evenly spaced quantiles of the belief (read off a large
    # sorted sample) and the boundary at evenly spaced positions, paired at random.  The small
    # rates cost most, and plain draws missed them or drew them twice by luck: for n = 300 and
    # 5 hits in 25 runs (mean about 166 runs at 200 trials), 24 plain draws forecast 139..197
    # runs over three seeds, stratified ones 156..170 over five.
    pool = sorted(rng.betavariate(belief.alpha, belief.beta) for _ in range(_PLAN_RATE_POOL))
    rates = [pool[int((i + 0.5) * _PLAN_RATE_POOL / trials)] for i in range(trials)]
    bounds = [1 + int((i + rng.random()) * (n - 1) / trials) for i in range(trials)]
    rng.shuffle(bounds)
    have = {0, *built}
    all_runs: list[int] = []
    all_builds: list[int] = []
    all_reused: list[int] = []
    for rate, b in zip(rates, bounds, strict=True):
        p = min(1.0, max(1e-6, rate))
        bis = Bisector(
            n,
            confidence=confidence,
            calib_hits=hits,
            calib_runs=runs_cal,
            build_cost=build_seconds,
            run_cost=max(run_seconds, 1e-6),
            clean_end_racy=clean_end_prior(n),
        )
        for i in have - {0}:
            bis.mark_built(i)
        runs = 0
        visited: set[int] = set()
        while runs < _PLAN_MAX_RUNS:
            step = bis.next_step()
            if isinstance(step, Done):
                break
            visited.add(step.index)
            for _ in range(step.runs):
                runs += 1
                hit = step.index < b and rng.random() < p
                bis.record_run(step.index, hit)
                if hit:
                    break
        all_runs.append(runs)
        all_builds.append(len(visited - have))
        all_reused.append(len((visited & have) - {0}))
    mean_runs = math.fsum(all_runs) / trials
    mean_builds = math.fsum(all_builds) / trials
    ranked = sorted(all_runs)
    high = float(ranked[min(trials - 1, math.ceil(0.9 * trials) - 1)])
    rate = belief.mean()
    return Plan(
        runs=mean_runs,
        builds=mean_builds,
        seconds=mean_builds * build_seconds + mean_runs * run_seconds,
        runs_high=high,
        bound=fano_bound(n - 1, rate, 1.0 - confidence),
        rate=rate,
        reused=math.fsum(all_reused) / trials,
    )
