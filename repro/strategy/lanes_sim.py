"""Parallel bisect lanes in simulation: ``k`` workers probing at once, clock included.

Pure (the caller's ``random.Random`` is the only source of chance), so that the bench
measures the same lanes that the tests hold to the guarantee. It models what
``repro bisect`` does on a cluster. Lane 1 builds the racy end and calibrates it while
the other lanes build ahead (``build_ahead``): they probe what ``provisional_bisector``
proposes from the calibration so far, and their runs count once the real strategy takes
over at the calibration's end. (``build_ahead=False``: every lane builds the racy end
and calibrates, the lanes start after, as the app did before.) The clean end is a
hypothesis of the posterior (``clean_end_prior``). Each lane builds its commit if nobody
has (builds of different lanes overlap) and runs it until the first hit or the probe's
runs are spent. A lane that ends takes a new probe at once, given the commits still in
flight (``rounds=True``: it waits for the round's slowest probe instead, as the app did
before), and lanes whose probe that result settled (``settled_probes``) leave it, an
unfinished build included, and take new ones too (``preempt=False``: they carry on, as
the app did before). A build counts as there when it ends, as the app logs it.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

from repro.strategy.bisect import BUILD_WEIGHT, Bisector, Done, Probe, clean_end_prior
from repro.strategy.proposals import propose_probes, provisional_bisector, settled_probes
from repro.strategy.rate import CALIBRATION_HITS

CONFIDENCE = 0.99
POLL = 8  # runs between two looks at the answer (the app polls every 0.2 s)
MAX_CALIBRATION = 5000


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
    while hits < CALIBRATION_HITS and runs < MAX_CALIBRATION:
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
    build_ahead: bool = True,
    rate_probes: bool = True,
) -> Trial:
    """One bisection by ``k`` lanes against a history whose first clean position is ``b``."""
    ahead = build_ahead and k > 1 and not rounds
    counts: dict[int, list[int]] = {}  # interior position -> [hits, misses]

    def strategy(hits: int, runs: int, built: Mapping[int, float], now: float) -> Bisector:
        return provisional_bisector(
            n,
            hits,
            runs,
            counts,
            [pos for pos, t in built.items() if pos and t <= now],
            confidence=confidence,
            build_cost=build,
            run_cost=run,
            clean_end_racy=clean_end_prior(n),
            build_weight=build_weight,
            rate_probes=rate_probes,
        )

    bis: Bisector | None = None
    ch = cr = 0
    clock = 0.0
    ready: dict[int, float] = {0: build}  # position -> when its build is there
    if not ahead:
        clock, ch, cr = _calibrate(p, k, rng, build, run)
        ready[0] = 0.0
        bis = strategy(ch, cr, ready, clock)
    total = cr

    def start(pos: int, now: float) -> float:
        if pos not in ready:
            ready[pos] = now + build
        return max(now, ready[pos])

    def done(step: Done) -> Trial:
        return Trial(clock, total, len(ready), step.lo <= b <= step.hi)

    # Events: (time, lane, its probe's number, probe, runs done so far); a lane's runs go
    # one after another, and an event of a probe the lane has left is dropped. Position 0
    # is lane 1's calibration while it lasts (no strategy proposes the racy end).
    events: list[tuple[float, int, int, Probe, int]] = []
    serial = itertools.count()
    current: dict[int, int] = {}  # lane -> the number of its probe
    busy: dict[int, int] = {}  # lane -> the position it probes

    def assign(lane: int, probe: Probe, now: float) -> None:
        current[lane] = next(serial)
        busy[lane] = probe.index
        heapq.heappush(events, (start(probe.index, now) + run, lane, current[lane], probe, 1))

    idle = list(range(k))
    if ahead:
        idle.remove(0)
        assign(0, Probe(0, MAX_CALIBRATION), clock)
    while True:
        if idle and not (rounds and events):
            ahead_of = strategy(ch, cr, ready, clock) if bis is None else bis
            more = propose_probes(ahead_of, len(idle), set(busy.values()))
            if isinstance(more, Done):
                if bis is not None:
                    return done(more)
            else:
                for nxt in more:
                    assign(idle.pop(), nxt, clock)
        now, lane, serial_no, probe, j = heapq.heappop(events)
        if current.get(lane) != serial_no:
            continue
        clock = max(clock, now)
        if probe.index == 0 and bis is None:  # a calibration run
            cr += 1
            total += 1
            ch += rng.random() < p
            if ch < CALIBRATION_HITS and cr < MAX_CALIBRATION:
                heapq.heappush(events, (now + run, lane, serial_no, probe, j + 1))
                continue
            bis = strategy(ch, cr, ready, now)  # the real one, with every run so far
            del busy[lane], current[lane]
            idle.append(lane)
        else:
            if j == 1 and bis is not None:
                bis.mark_built(probe.index)  # the build is there now (as the app logs it)
            hit = probe.index < b and rng.random() < p
            counts.setdefault(probe.index, [0, 0])[0 if hit else 1] += 1
            total += 1
            if bis is not None:
                bis.record_run(probe.index, hit)
                if hit or j % POLL == 0 or j >= probe.runs:
                    answer = bis.answered()
                    if answer is not None:
                        return done(answer)
            if not hit and j < probe.runs:
                heapq.heappush(events, (now + run, lane, serial_no, probe, j + 1))
                continue
            del busy[lane], current[lane]
            idle.append(lane)
        if preempt and bis is not None and not rounds:
            # Lanes whose probe the others have settled leave it, unfinished build and all.
            for gone in settled_probes(bis, set(busy.values())):
                for other in [x for x, t in busy.items() if t == gone]:
                    del busy[other], current[other]
                    idle.append(other)
                if ready[gone] > now:
                    del ready[gone]
