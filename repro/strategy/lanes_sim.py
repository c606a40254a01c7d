"""Parallel bisect lanes in simulation: ``k`` workers probing at once, clock included.

Pure (the caller's ``random.Random`` is the only source of chance), so that the bench
measures the same lanes that the tests hold to the guarantee. It models what
``repro bisect`` does on a cluster: the racy end is built and calibrated (its runs spread
over the ``k`` workers, which all hold the build), the clean end is a hypothesis of the
posterior (``clean_end_prior``), then ``k`` lanes probe at once. Each lane builds its
commit if nobody has (builds of different lanes overlap) and runs it until the first hit
or the probe's runs are spent. The lanes start with ``propose_probes`` (joint quantiles);
a lane that ends takes a new probe at once, given the commits still in flight
(``rounds=True``: it waits for the round's slowest probe instead, as the app did before),
and lanes whose probe that result settled (``settled_probes``) leave it, an unfinished
build included, and take new ones too (``preempt=False``: they carry on, as the app did
before). A build counts as there when it ends, as the app logs it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass

from repro.strategy.bisect import (
    BUILD_WEIGHT,
    CALIBRATION_HITS,
    Bisector,
    Done,
    Probe,
    clean_end_prior,
    propose_probes,
    settled_probes,
)

CONFIDENCE = 0.99
POLL = 8  # runs between two looks at the answer (the app polls every 0.2 s)


@dataclass
class Trial:
    """Wall-clock seconds (workers in parallel), runs and builds, and whether it was right."""

    seconds: float
    runs: int
    builds: int
    correct: bool


def _calibrate(
    p: float, k: int, rng: random.Random, build: float, run: float
) -> tuple[float, int, int]:
    hits = runs = 0
    while hits < CALIBRATION_HITS and runs < 5000:
        hits += sum(rng.random() < p for _ in range(k))
        runs += k
    return build + runs / k * run, hits, runs


def simulate_lanes(
    n: int,
    b: int,
    p: float,
    k: int,
    rng: random.Random,
    *,
    build: float = 60.0,
    run: float = 1.0,
    rounds: bool = False,
    preempt: bool = True,
    confidence: float = CONFIDENCE,
    build_weight: float = BUILD_WEIGHT,
) -> Trial:
    """One bisection by ``k`` lanes against a history whose first clean position is ``b``."""
    clock, hits, runs = _calibrate(p, k, rng, build, run)
    bis = Bisector(
        n,
        confidence=confidence,
        calib_hits=hits,
        calib_runs=runs,
        build_cost=build,
        run_cost=run,
        clean_end_racy=clean_end_prior(n),
        build_weight=build_weight,
    )
    total = runs
    ready: dict[int, float] = {0: 0.0}  # position -> when its build is there

    def start(pos: int, now: float) -> float:
        if pos not in ready:
            ready[pos] = now + build
        return max(now, ready[pos])

    def done(step: Done) -> Trial:
        return Trial(clock, total, len(ready), step.lo <= b <= step.hi)

    # Events: (time, lane, its probe's number, probe, runs done so far); a lane's runs go
    # one after another, and an event of a probe the lane has left is dropped.
    events: list[tuple[float, int, int, Probe, int]] = []
    serial = itertools.count()
    current: dict[int, int] = {}  # lane -> the number of its probe
    busy: dict[int, int] = {}  # lane -> the position it probes

    def assign(lane: int, probe: Probe, now: float) -> None:
        current[lane] = next(serial)
        busy[lane] = probe.index
        heapq.heappush(events, (start(probe.index, now) + run, lane, current[lane], probe, 1))

    while True:
        first = propose_probes(bis, k)
        if isinstance(first, Done):
            return done(first)
        for lane, probe in enumerate(first):
            assign(lane, probe, clock)
        idle: list[int] = list(range(len(first), k))
        while events:
            now, lane, serial_no, probe, j = heapq.heappop(events)
            if current.get(lane) != serial_no:
                continue
            clock = max(clock, now)
            if j == 1:
                bis.mark_built(probe.index)  # the build is there now (as the app logs it)
            hit = probe.index < b and rng.random() < p
            bis.record_run(probe.index, hit)
            total += 1
            if hit or j % POLL == 0 or j >= probe.runs:
                answer = bis.answered()
                if answer is not None:
                    return done(answer)
            if not hit and j < probe.runs:
                heapq.heappush(events, (now + run, lane, serial_no, probe, j + 1))
                continue
            del busy[lane], current[lane]
            idle.append(lane)
            if rounds:
                continue
            if preempt:
                # Lanes whose probe the others have settled leave it, unfinished build and all.
                for gone in settled_probes(bis, set(busy.values())):
                    for other in [x for x, t in busy.items() if t == gone]:
                        del busy[other], current[other]
                        idle.append(other)
                    if ready[gone] > now:
                        del ready[gone]
            # The idle lanes take probes the commits in flight leave open.
            more = propose_probes(bis, len(idle), set(busy.values()))
            if isinstance(more, Done):
                return done(more)
            for nxt in more:
                assign(idle.pop(), nxt, now)
