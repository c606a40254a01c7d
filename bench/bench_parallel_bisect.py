#!/usr/bin/env python3
"""Parallel bisect in simulation: makespan and accuracy with k workers.

Each round, ``propose_probes`` gives up to ``k`` probes; each goes to its own worker, which
builds the commit if it has no build yet (``--build`` seconds) and runs it (``--run`` seconds a
run) until the first hit or the probe's runs are spent. A round lasts as long as its slowest
probe; the makespan is the sum of rounds, after a calibration and a clean-end check whose runs
are spread over the ``k`` workers (with ``k >= 2`` both ends build at once). ``k = 1`` is
today's sequential bisect. The answer is checked against the true boundary, drawn uniformly;
confidence 0.99.

Usage: bench/bench_parallel_bisect.py [--trials T] [--n N]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repro.strategy.bisect import Bisector, Done, RateBelief, propose_probes

CALIB_HITS = 3  # repro bisect's default
CONFIDENCE = 0.99


@dataclass
class Trial:
    seconds: float
    runs: int
    builds: int
    correct: bool


def simulate_parallel(
    n: int, b: int, p: float, k: int, rng: random.Random, build: float, run: float
) -> Trial:
    hits = runs = 0
    while hits < CALIB_HITS and runs < 5000:
        hits += sum(rng.random() < p for _ in range(k))
        runs += k
    seconds = build + runs / k * run
    end = RateBelief.from_calibration(hits, runs).runs_to_rule_out(CONFIDENCE)
    # With two workers or more, the clean end is built while the racy end is: one build.
    seconds += (build if k == 1 else 0.0) + math.ceil(end / k) * run
    total_runs, builds = runs + end, 2
    bis = Bisector(n, confidence=CONFIDENCE, calib_hits=hits, calib_runs=runs)
    built = {0, n - 1}
    while True:
        step = propose_probes(bis, k)
        if isinstance(step, Done):
            return Trial(seconds, total_runs, builds, step.lo <= b <= step.hi)
        longest = 0.0
        for probe in step:
            t = probe.index
            cost = 0.0
            if t not in built:
                built.add(t)
                builds += 1
                cost += build
            for _ in range(probe.runs):
                hit = t < b and rng.random() < p
                bis.record_run(t, hit)
                total_runs += 1
                cost += run
                if hit:
                    break
            longest = max(longest, cost)
        seconds += longest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--build", type=float, default=60.0)
    ap.add_argument("--run", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(
        f"n={args.n}, build {args.build:g} s, run {args.run:g} s, confidence {CONFIDENCE}, "
        f"{args.trials} trials a cell (same seeds for every k)\n"
    )
    print("|    p | k | makespan (min) | vs k=1 | runs | builds | right |")
    print("|-----:|--:|---------------:|-------:|-----:|-------:|------:|")
    for p in (0.02, 0.1, 0.5):
        base = None
        for k in (1, 2, 4, 8):
            trials = []
            for i in range(args.trials):
                rng = random.Random(f"{args.seed}-{p}-{i}")
                b = rng.randint(1, args.n - 1)
                trials.append(simulate_parallel(args.n, b, p, k, rng, args.build, args.run))
            mk = statistics.mean(t.seconds for t in trials) / 60
            base = base or mk
            right = sum(t.correct for t in trials)
            print(
                f"| {p:4g} | {k} | {mk:14.1f} | {mk / base:6.2f} | "
                f"{statistics.mean(t.runs for t in trials):4.0f} | "
                f"{statistics.mean(t.builds for t in trials):6.1f} | "
                f"{right}/{len(trials)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
