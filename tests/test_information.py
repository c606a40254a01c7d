"""Tests for the information limit of a bisect and the plan printed before one."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from repro.strategy.bisect import clean_end_prior
from repro.strategy.information import capacity, culprit_bound, fano_bound, plan
from repro.strategy.rate import RateBelief
from repro.strategy.simulate import simulate


def test_capacity_known_values() -> None:
    assert capacity(1.0) == 1.0
    # The Z-channel with crossover 1/2: log2(5/4).
    assert math.isclose(capacity(0.5), math.log2(1.25))
    # Small p: about p / (e ln 2) = 0.53 p.
    assert math.isclose(capacity(1e-4), 1e-4 / (math.e * math.log(2)), rel_tol=1e-3)
    # Continuous at 1 and increasing.
    assert capacity(0.999999) == pytest.approx(1.0, abs=1e-4)
    ps = [0.01, 0.02, 0.1, 0.3, 0.5, 0.9, 1.0]
    assert all(capacity(a) < capacity(b) for a, b in itertools.pairwise(ps))


def test_fano_bound_known_values() -> None:
    # The figures of issue 15 at n = 1000, delta = 0.01.
    assert fano_bound(1000, 0.1, 0.01) == pytest.approx(162, abs=1)
    assert fano_bound(1000, 0.5, 0.01) == pytest.approx(28, abs=0.6)
    assert fano_bound(1000, 0.02, 0.01) == pytest.approx(830, abs=2)
    assert fano_bound(1000, 1.0, 0.01) == pytest.approx(8.87, abs=0.01)
    # Two candidates and a small error: Fano says nothing.
    assert fano_bound(2, 0.5, 0.01) == 0.0


@pytest.mark.parametrize(
    ("p", "n", "delta"), [(0.0, 10, 0.01), (1.5, 10, 0.01), (0.5, 0, 0.01), (0.5, 10, 1.0)]
)
def test_bad_inputs_raise(p: float, n: int, delta: float) -> None:
    with pytest.raises(ValueError):
        fano_bound(n, p, delta)


def test_plan_is_deterministic_and_sane() -> None:
    belief = RateBelief.from_calibration(5, 50)
    a = plan(150, belief, 0.99, 60.0, 1.0)
    assert a == plan(150, belief, 0.99, 60.0, 1.0)
    assert a.bound == pytest.approx(fano_bound(149, belief.mean(), 0.01))
    assert a.runs >= a.bound
    assert a.runs_high >= a.runs * 0.9
    assert math.log2(149) - 2 <= a.builds <= 3 * math.log2(149)
    assert a.seconds == pytest.approx(a.builds * 60.0 + a.runs)


def test_plan_counts_no_build_for_what_the_cache_holds() -> None:
    # A second bisect of a range whose commits are all built: the plan prices runs only
    # (it had priced every step as a build).
    belief = RateBelief.from_calibration(5, 25)
    fresh = plan(60, belief, 0.99, 60.0, 1.0)
    assert fresh.builds >= 3 and fresh.reused == 0
    everything = plan(60, belief, 0.99, 60.0, 1.0, built=range(1, 60))
    assert everything.builds == 0 and everything.reused >= 3
    assert everything.seconds == pytest.approx(everything.runs)
    some = plan(60, belief, 0.99, 60.0, 1.0, built=[15, 30, 45])
    assert some.builds < fresh.builds and some.reused > 0


def test_plan_matches_the_simulated_bisect() -> None:
    # The plan's expected bisect runs against an independent simulation of the whole bisect
    # (its own calibration, clean-end check and rate): within 25% of its mean.
    n, p, confidence = 300, 0.2, 0.99
    rng = random.Random(4)
    results = [
        simulate(n, rng.randint(1, n - 1), p, random.Random(rng.getrandbits(64)))
        for _ in range(120)
    ]
    measured_runs = statistics.fmean(r.runs - r.calib_runs for r in results)
    measured_builds = statistics.fmean(r.builds - 2 for r in results)
    # The calibration every trial starts from, on average: 5 hits in 5 / p runs.
    got = plan(n, RateBelief.from_calibration(5, 25), confidence, 60.0, 1.0, trials=48)
    assert got.runs == pytest.approx(measured_runs, rel=0.25)
    assert got.builds == pytest.approx(measured_builds, rel=0.2)


def _two_commit_cost(p: float, delta: float) -> float:
    """The best strategy for two candidates: K runs at the first, blame it if all miss.

    Wrong only when the second is the answer and the first (racy) missed K times, so the least
    K with ``(1-p)**K / 2 <= delta``; it runs at the true first clean commit only when that is
    the first one, half the time.
    """
    k = 0
    while (1.0 - p) ** k / 2.0 > delta:
        k += 1
    return k / 2.0


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 1.0])
def test_culprit_bound_is_nearly_reached_by_two_commits(p: float) -> None:
    # With two candidates the best strategy is known in closed form: the floor must lie below
    # it, and not far below (it is a floor, not a guess).
    best = _two_commit_cost(p, 0.01)
    floor = culprit_bound(2, p, 0.01)
    assert floor <= best
    assert floor >= 0.9 * best


def test_culprit_bound_known_values_and_shape() -> None:
    # About ln(1/delta) / -ln(1-p) for many candidates.
    assert culprit_bound(1000, 0.1, 0.01) == pytest.approx(math.log(99) / -math.log(0.9), rel=0.02)
    assert culprit_bound(1000, 0.02, 0.01) == pytest.approx(225, abs=1)
    # At p = 1 one run at the commit is needed, nearly always.
    assert culprit_bound(1000, 1.0, 0.01) == pytest.approx(0.98, abs=0.01)
    ps = [0.01, 0.05, 0.1, 0.5, 1.0]
    assert all(
        culprit_bound(150, a, 0.01) > culprit_bound(150, b, 0.01) for a, b in itertools.pairwise(ps)
    )
    # A looser error rate needs fewer runs; one candidate needs none.
    assert culprit_bound(150, 0.1, 0.05) < culprit_bound(150, 0.1, 0.01)
    assert culprit_bound(1, 0.1, 0.01) == 0.0
    # Never wrong: impossible below p = 1, one run per answer at p = 1.
    assert culprit_bound(150, 0.1, 0.0) == math.inf
    assert culprit_bound(150, 1.0, 0.0) == pytest.approx(1 - 1 / 150)


def test_the_bisect_spends_at_least_the_culprit_floor() -> None:
    # The strategy with the rate all but known (calibration to 400 hits, one rate), at
    # n = 40, p = 0.2: its mean runs at the true first clean commit lie above the floor, and
    # within 2x of it.
    n, p = 40, 0.2
    rng = random.Random(7)
    at_culprit = [
        simulate(
            n,
            rng.randint(1, n - 1),
            p,
            random.Random(rng.getrandbits(64)),
            calib_hits_target=400,
            rate_mixture=[(1.0, 1.0)],
            clean_end_racy=clean_end_prior(n),
        ).culprit_runs
        for _ in range(150)
    ]
    floor = culprit_bound(n - 1, p, 0.01)
    assert floor <= statistics.fmean(at_culprit) <= 2.0 * floor
