#!/usr/bin/env python3
"""Parallel bisect in simulation: makespan and accuracy with k workers.

The lanes are ``repro.strategy.lanes_sim.simulate_lanes`` (what ``repro bisect`` does on
a cluster, see there); ``--mode rounds`` makes every round wait for its slowest probe, as
the app did before. The answer is checked against the true boundary, drawn uniformly;
confidence 0.99.

Usage: bench/bench_parallel_bisect.py [--trials T] [--n N] [--mode lanes|rounds]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repro.strategy.bisect import BUILD_WEIGHT
from repro.strategy.lanes_sim import CONFIDENCE, simulate_lanes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--build", type=float, default=60.0)
    ap.add_argument("--run", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=("lanes", "rounds"), default="lanes")
    ap.add_argument("--rates", default="0.02,0.1,0.5")
    ap.add_argument(
        "--no-preempt", action="store_true", help="lanes keep probes others settled (before)"
    )
    ap.add_argument(
        "--no-build-ahead",
        action="store_true",
        help="lanes start after the racy end is calibrated (before)",
    )
    ap.add_argument(
        "--build-weight", type=float, default=BUILD_WEIGHT, help="1 = builds at full price (before)"
    )
    ap.add_argument(
        "--no-rate-probes",
        action="store_true",
        help="no runs at the highest hit to learn the rate (before session 15)",
    )
    args = ap.parse_args()
    print(
        f"n={args.n}, build {args.build:g} s, run {args.run:g} s, confidence {CONFIDENCE}, "
        f"{args.mode}{'' if args.no_preempt else ', settled probes left'}, "
        f"build weight {args.build_weight:g}, "
        f"{'lanes after calibration' if args.no_build_ahead else 'building ahead'}, "
        f"rate probes {'off' if args.no_rate_probes else 'on'}, "
        f"{args.trials} trials a cell (same seeds for every k)\n"
    )
    print("|    p | k | makespan (min) | vs k=1 | runs | builds | right |")
    print("|-----:|--:|---------------:|-------:|-----:|-------:|------:|")
    for p in (float(x) for x in args.rates.split(",")):
        base = None
        for k in (1, 2, 4, 8):
            trials = []
            for i in range(args.trials):
                rng = random.Random(f"{args.seed}-{p}-{i}")
                b = rng.randint(1, args.n - 1)
                trials.append(
                    simulate_lanes(
                        args.n, b, p, k, rng, build=args.build, run=args.run,
                        rounds=args.mode == "rounds", preempt=not args.no_preempt,
                        build_weight=args.build_weight, build_ahead=not args.no_build_ahead,
                        rate_probes=not args.no_rate_probes,
                    )
                )  # fmt: skip
            mk = statistics.mean(t.seconds for t in trials) / 60
            base = base or mk
            right = sum(t.correct for t in trials)
            print(
                f"| {p:4g} | {k} | {mk:14.1f} | {mk / base:6.3f} | "
                f"{statistics.mean(t.runs for t in trials):4.0f} | "
                f"{statistics.mean(t.builds for t in trials):6.1f} | "
                f"{right}/{len(trials)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
