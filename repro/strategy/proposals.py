"""Several probes at once, for lanes (workers) that probe in parallel.

The single-probe strategy (``Bisector.next_step``) says where one probe learns most; with
``k`` free workers, ``k`` copies of that probe would learn what one does. Here the probes are
chosen jointly, and a probe in flight that other lanes' results have made pointless is
named, so its lane can leave it. The answer and its stopping rule stay ``next_step``'s.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from repro.strategy.bisect import Bisector, Done, Probe

__all__ = [
    "BEST_PROBE_PIECE",
    "SETTLED_SHARE",
    "propose_probes",
    "provisional_bisector",
    "settled_probes",
]


def propose_probes(bisector: Bisector, k: int, busy: Collection[int] = ()) -> list[Probe] | Done:
    """Up to ``k`` probes for free workers while others still probe ``busy``, or the answer.

    Chosen jointly, not as ``k`` copies of the best single probe. The commits in flight cut
    the posterior of ``b`` into segments whose outcomes are still to come; the new probes
    go where they split the most mass: one at a time, each to the segment whose pieces
    would stay largest, and within a segment at its quantiles ``i/(m+1)`` (with nothing in
    flight, the posterior's ``i/(k+1)``: ``log2(k+1)`` bits together where one probe gives
    at most one). The best single probe (``next_step``, which knows which commits are
    built) replaces the nearest pick of its segment: without it, 4 lanes built 27 commits
    instead of 23 and took 0.52 of the makespan instead of 0.48. It does not where it
    would split next to a commit in flight (``_with_best``). Every probe asks for that probe's
    number of runs. An empty list: nothing worth probing that is not in flight already
    (wait for a result). The answer and its stopping rule are ``next_step``'s, so the
    guarantee holds as for one probe. With ``k == 1`` and nothing busy this is
    ``next_step``.

    Taking probes as workers free up, instead of in rounds that wait for the slowest,
    keeps the workers whose probe hit early busy (simulated, n = 1,000, p = 0.1, build
    60 s, run 1 s, 4 workers: 0.54 of one worker's makespan in rounds, 0.49 this way).
    """
    step = bisector.next_step()
    if isinstance(step, Done):
        return step
    taken = set(busy)
    if not taken and k <= 1:
        return [step]
    rate: Probe | None = None
    if step.for_rate:
        # Runs to learn the rate at a known-racy commit: one lane takes them (unless one
        # already does), the others probe where the boundary may be.
        rate = None if step.index in taken else step
        main = bisector.next_step(rate_probe=False)
        if isinstance(main, Done):
            return main
        step = main
        if rate is not None:
            k -= 1
            if k <= 0:
                return [rate]
    # The quantiles' levels: the posterior summed up (the settled test reads ``cdf()``; the
    # two differ in float rounding only).
    cdf = list(itertools.accumulate(bisector.posterior_b()))
    top = bisector.n - 1  # the last real position; index n is the virtual "racy at the end"
    floor = bisector.highest_hit
    edges = [floor, *sorted(t for t in taken if floor < t <= top), len(cdf) - 1]
    # Segment (a, c]: c is in flight, or the last edge (the virtual "racy at the end" when
    # the clean end is open, else the verified clean end): the free positions are a+1..c-1.
    # A commit whose outcome the evidence has all but decided is no probe (two lanes once
    # ran one such commit 21 times over while another built the commit that mattered).
    settled = _settled_test(bisector, bisector.cdf())
    segments = []
    for a, c in itertools.pairwise(edges):
        free = [
            t
            for t in range(a + 1, min(c, top + 1))
            if not bisector.is_unusable(t) and (t == step.index or not settled(t))
        ]
        segments.append((cdf[c] - cdf[a], a, free))
    counts = [0] * len(segments)
    for _ in range(k):
        open_ = [i for i, (m, _, free) in enumerate(segments) if m > 0 and counts[i] < len(free)]
        if not open_:
            break
        i = max(open_, key=lambda i: segments[i][0] / (counts[i] + 1))
        counts[i] += 1
    chosen: list[int] = []
    for (mass, a, free), m, c in zip(segments, counts, edges[1:], strict=True):
        if not m:
            continue
        levels = [cdf[t] for t in free]
        picks: list[int] = []
        for j in range(1, m + 1):
            q = bisect_left(levels, cdf[a] + mass * j / (m + 1))
            picks.append(free[min(q, len(free) - 1)])
        if step.index in free:
            picks = _with_best(
                picks,
                step.index,
                bisector.is_built(step.index),
                (cdf[a], cdf[c]),
                cdf,
                mass / (m + 1),
            )
        picks = sorted(dict.fromkeys(picks))
        # Quantiles that fell on the same commit (a narrow posterior): spread to free neighbours.
        rest = [t for t in free if t not in picks]
        while len(picks) < m and rest:
            mid = picks[len(picks) // 2]
            t = min(rest, key=lambda t: (abs(t - mid), t))
            rest.remove(t)
            insort(picks, t)
        chosen.extend(picks)
    probes = [Probe(t, step.runs) for t in sorted(chosen)]
    return probes if rate is None else [rate, *probes]


# The best single probe takes a quantile pick's place unless a piece it leaves in its
# segment holds less than this share of a quantile piece: see ``_with_best``.
BEST_PROBE_PIECE = 0.25


def _with_best(
    picks: list[int],
    best: int,
    built: bool,
    ends: tuple[float, float],
    cdf: Sequence[float],
    piece: float,
) -> list[int]:
    """``picks`` (a segment's quantiles) with ``best`` in place of the nearest, unless
    ``best`` is not ``built`` and that leaves a piece of the segment (between ``ends``'
    levels) smaller than ``BEST_PROBE_PIECE * piece``.

    ``next_step`` knows which commits are built but not which are in flight, so its
    commit can be the neighbour of one in flight (two lanes on commits 125 and 128 of
    1,000, each about to split the same place): a second build for a probe that would
    learn almost nothing. A built commit is kept wherever it falls: it costs no build.
    Simulated (n = 1,000, build 60 s, run 1 s, 60 histories), the makespan of 4 lanes
    against one: 0.452 -> 0.446 at p = 0.5 (0.450 -> 0.445 on other seeds), 0.430 ->
    0.422 at p = 0.1, 0.401 -> 0.397 at p = 0.02. Without the exception for built
    commits, 0.442 / 0.427 / 0.407 (more builds at p = 0.02); keeping only built ones,
    0.444 / 0.432, and 2 lanes at p = 0.1 went from 0.628 to 0.639.
    """
    nearest = min(range(len(picks)), key=lambda i: abs(picks[i] - best))
    trial = sorted([*picks[:nearest], best, *picks[nearest + 1 :]])
    if built:
        return trial
    levels = [ends[0], *(cdf[t] for t in trial), ends[1]]
    smallest = min(y - x for x, y in itertools.pairwise(levels))
    return trial if smallest >= BEST_PROBE_PIECE * piece else picks


# A probe in flight whose smaller side holds less than this share of the error allowed
# (``1 - confidence``) can no longer move the answer: see ``settled_probes``.
SETTLED_SHARE = 1.0


def provisional_bisector(
    n: int,
    calib_hits: int,
    calib_runs: int,
    counts: Mapping[int, Sequence[int]],
    built: Iterable[int] = (),
    unusable: Iterable[int] = (),
    **options: Any,
) -> Bisector:
    """The strategy as the evidence so far makes it: a calibration (``calib_hits`` in
    ``calib_runs``), ``counts`` (position -> ``(hits, misses)``), the ``built`` positions and
    the ``unusable`` ones.

    While one lane calibrates the racy end, the other lanes build ahead: they need probes
    before the calibration is over. With no hit yet, the calibration counts as if its next
    run hit (``Beta(1, runs + 1)``): the lower the rate, the more runs a probe asks for,
    and probes that leave a built commit after a run or two are what made lanes build
    twice the commits when this was first tried. The runs count as they are: the
    posterior of a strategy made at the calibration's end from every run so far is the
    same as if they had come after it (the likelihood does not depend on the order).
    ``options`` are ``Bisector``'s.
    """
    if calib_hits < 1:
        calib_hits, calib_runs = 1, calib_runs + 1
    bis = Bisector(n, calib_hits=calib_hits, calib_runs=calib_runs, **options)
    for pos in built:
        bis.mark_built(pos)
    for pos, (hits, misses) in sorted(counts.items()):
        for _ in range(hits):
            bis.record_run(pos, True)
        for _ in range(misses):
            bis.record_run(pos, False)
    for pos in unusable:  # after its runs, as it is logged: a run would make it usable again
        bis.record_unusable(pos)
    return bis


def settled_probes(bisector: Bisector, busy: Collection[int]) -> list[int]:
    """The positions in flight whose outcome the evidence has already all but decided.

    A lane probes ``t`` to learn on which side of ``t`` the boundary lies. Once other
    lanes' results leave less than ``SETTLED_SHARE * (1 - confidence)`` of the
    posterior on one side, neither outcome at ``t`` can move the answer much; the lane
    had better leave (its build too, if it is still building) and take a probe that
    can. The best single probe (``next_step``'s) is never settled: it would only be
    proposed again. Simulated (n = 1,000, build 60 s, run 1 s, 4 lanes, 60 trials),
    against lanes that keep their probes: builds 21.7/20.6/21.2 -> 20.4/17.9/16.4 at
    p = 0.02/0.1/0.5, makespan against one lane 0.39/0.48/0.56 -> 0.40/0.47/0.51. A
    tenth of the error as the share gave the same makespans with 5-28% more runs;
    letting a settled lane finish its build first gained nothing, so the build is
    stopped. The answer and its guarantee are untouched: leaving a probe only drops
    runs that were not yet made.
    """
    if not busy:
        return []
    step = bisector.next_step()
    best = step.index if isinstance(step, Probe) else -1
    settled = _settled_test(bisector, bisector.cdf())
    return [t for t in sorted(set(busy)) if t != best and settled(t)]


def _settled_test(bisector: Bisector, cdf: Sequence[float]) -> Callable[[int], bool]:
    """Is the outcome at ``t`` all but decided (less than the settled share on a side)?
    ``cdf``: the bisector's ``cdf()``, which a caller has at hand."""
    tol = SETTLED_SHARE * (1.0 - bisector.confidence)

    def settled(t: int) -> bool:
        left = cdf[t]  # P(b <= t): "clean at t"
        return min(left, 1.0 - left) < tol

    return settled
