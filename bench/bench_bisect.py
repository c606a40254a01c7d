"""Benchmark: repro's bisect strategy against ``git bisect run`` with a repeat loop.

Both search the same simulated histories (same n, boundary and rate per trial).  repro's cost
includes its calibration at the racy end and its clean-end check; the baseline's does not (it
is told the ends).  The "tuned" baseline gets the smallest repeat count that reaches 99% expected
accuracy *for the true rate*, which a real user would not know: it is the best the baseline can
do, not what it does.

Every row also shows Fano's floor on the mean runs of *any* bisect that knows the rate (the
bound, ``repro.strategy.information``) and the ratio of the row's runs after calibration to it.  A
second table splits repro's runs: calibration, clean-end check, bisect, and the bisect runs
spent at the true first clean commit itself, against the floor on those (``culprit_bound``:
the runs any bisect must average there at that rate).  ``--interior-rate 0.5`` makes the
racy commits inside the range show the race at half the calibrated end's rate, for every
method (the git rows' repeat counts stay tuned to the end's rate, which is what their users
would measure or assume); ``--single-rate`` gives the strategy the single calibrated rate it
had before the rate mixture (for before/after tables).

    .venv/bin/python bench/bench_bisect.py [--trials N] [--skips 0.05] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from repro.strategy.bisect import BUILD_WEIGHT, clean_end_prior
from repro.strategy.information import culprit_bound, fano_bound
from repro.strategy.rate import CALIBRATION_HITS, RATE_MIXTURE, RateBelief
from repro.strategy.simulate import SimResult, baseline_git_bisect, simulate

__all__ = [
    "baseline_accuracy",
    "calibrate",
    "racy_steps",
    "tuned_repeats",
    "tuned_repeats_for_belief",
]

BUILD_COST = 60.0
RUN_COST = 1.0
CALIB_HITS = CALIBRATION_HITS  # repro bisect's default


def racy_steps(n: int) -> list[int]:
    """``out[d]``: how many boundaries make the baseline's binary search meet ``d`` racy commits.

    The baseline is wrong iff some racy midpoint misses all its runs (clean midpoints never
    mislead it), so its expected accuracy over a uniform boundary follows from these counts.
    """
    out = [0] * (n.bit_length() + 2)
    for b in range(1, n):
        lo, hi, racy = 0, n - 1, 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if mid < b:
                racy += 1
                lo = mid
            else:
                hi = mid
        out[racy] += 1
    return out


def baseline_accuracy(steps: list[int], p: float, repeats: int) -> float:
    """Exact expected accuracy of the baseline (no unusable commits)."""
    ok = 1.0 - (1.0 - p) ** repeats
    return sum(c * ok**d for d, c in enumerate(steps)) / sum(steps)


def tuned_repeats(steps: list[int], p: float, target: float = 0.99) -> int:
    """Smallest repeat count whose expected accuracy at rate ``p`` reaches ``target``."""
    lo, hi = 0, 1
    while baseline_accuracy(steps, p, hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if baseline_accuracy(steps, p, mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def tuned_repeats_for_belief(
    steps: list[int], hits: int, runs: int, target: float = 0.99, grid: int = 300
) -> int:
    """Smallest repeat count whose accuracy, averaged over the calibrated belief, hits ``target``.

    The belief is the same ``Beta(hits, runs - hits + 1)`` that repro starts from, so this
    baseline gets exactly repro's information: the fairest "tuned" git bisect.
    """
    lo_p = math.log(1e-5)
    ps = [math.exp(lo_p * (1 - (k + 0.5) / grid)) for k in range(grid)]
    # Density on log p: Beta density times p (the Jacobian), unnormalised, in log space.
    logs = [hits * math.log(p) + (runs - hits) * math.log1p(-p) if p < 1 else -math.inf for p in ps]
    top = max(logs)
    ws = [math.exp(x - top) for x in logs]
    z = math.fsum(ws)
    ws = [w / z for w in ws]

    def acc(r: int) -> float:
        return math.fsum(w * baseline_accuracy(steps, p, r) for w, p in zip(ws, ps, strict=True))

    lo, hi = 0, 1
    while acc(hi) < target and hi < 1 << 24:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if acc(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate(rng: random.Random, p: float, hits_target: int = CALIB_HITS) -> tuple[int, int]:
    """The same calibration as repro's simulation: run the racy end until ``hits_target`` hits."""
    hits = runs = 0
    while hits < hits_target and runs < 5000:
        runs += 1
        hits += rng.random() < p
    return hits, runs


@dataclass
class Row:
    label: str
    results: list[SimResult]

    def line(self, n: int, p: float, build_cost: float, bound: float) -> str:
        k = len(self.results)
        acc = sum(r.correct for r in self.results) / k
        runs = sum(r.runs for r in self.results) / k
        bisect_runs = sum(r.runs - r.calib_runs for r in self.results) / k
        builds = sum(r.builds for r in self.results) / k
        cost = builds * build_cost + runs * RUN_COST
        ratio = bisect_runs / bound if bound > 0 else math.inf
        return (
            f"| {n:>5} | {p:>4} | {self.label:<18} | {100 * acc:6.1f}% | {runs:8.1f} "
            f"| {bisect_runs:8.1f} | {bound:6.1f} | {ratio:5.2f} | {builds:6.1f} "
            f"| {cost / 60:7.1f} |"
        )

    def breakdown(self, n: int, p: float, bound: float, floor: float) -> str:
        k = len(self.results)
        calib = sum(r.calib_runs - r.end_runs for r in self.results) / k
        end = sum(r.end_runs for r in self.results) / k
        bisect_runs = sum(r.runs - r.calib_runs for r in self.results) / k
        culprit = sum(r.culprit_runs for r in self.results) / k
        wrong = sum(not r.correct for r in self.results)
        return (
            f"| {n:>5} | {p:>4} | {calib:7.1f} | {end:7.1f} | {bisect_runs:8.1f} "
            f"| {culprit:8.1f} | {floor:6.1f} | {bound:6.1f} "
            f"| {bisect_runs / bound if bound else math.inf:5.2f} | {wrong:>3}/{k} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per cell (default 200)")
    ap.add_argument("--skips", type=float, default=0.0, help="fraction of unusable commits")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1, help="runs per parallel batch (repro)")
    ap.add_argument(
        "--build-cost", type=float, default=BUILD_COST, help="seconds per build (run = 1 s)"
    )
    ap.add_argument("--n", type=int, nargs="*", default=[50, 150, 1000])
    ap.add_argument("--p", type=float, nargs="*", default=[0.02, 0.1, 0.5, 1.0])
    ap.add_argument(
        "--interior-rate",
        type=float,
        default=1.0,
        help="rate at racy commits inside the range, relative to the calibrated end",
    )
    ap.add_argument(
        "--single-rate", action="store_true", help="repro with one calibrated rate (no mixture)"
    )
    ap.add_argument(
        "--build-weight",
        type=float,
        default=BUILD_WEIGHT,
        help=f"share of a build's cost weighed in the probe choice (default {BUILD_WEIGHT})",
    )
    ap.add_argument(
        "--mixture",
        default=None,
        help="repro's rate mixture as ratio:weight,... (default: the strategy's RATE_MIXTURE)",
    )
    ap.add_argument("--repro-only", action="store_true", help="skip the git bisect baselines")
    ap.add_argument(
        "--confidence",
        type=float,
        default=0.99,
        help="repro's confidence (default 0.99, as the baselines' tuning and the bound)",
    )
    ap.add_argument(
        "--calibration-hits",
        type=int,
        default=CALIB_HITS,
        help=f"hits repro calibrates the racy end to (default {CALIB_HITS}, repro's)",
    )
    ap.add_argument(
        "--stress-runs",
        type=int,
        default=0,
        help="repro's calibration takes all of this many runs at the racy end (a whole "
        "stress record), then runs on while short of the hit goal; `repro bisect "
        "--calibration-from` takes only the runs up to the goal",
    )
    ap.add_argument(
        "--no-rate-probes",
        action="store_true",
        help="repro as before session 15: no runs at the highest hit to learn the rate",
    )
    ap.add_argument(
        "--verified-end",
        action="store_true",
        help="repro as before: the clean end checked apart before the search",
    )
    args = ap.parse_args()

    def stress_calibration(hits: int, runs: int) -> bool:
        return runs < args.stress_runs or hits < args.calibration_hits

    mixture: tuple[tuple[float, float], ...] | None = None
    if args.single_rate:
        mixture = ((1.0, 1.0),)
    elif args.mixture:
        pairs = (item.split(":") for item in args.mixture.split(","))
        mixture = tuple((float(r), float(w)) for r, w in pairs)
    build_cost = args.build_cost

    print(
        f"trials per cell: {args.trials}; build = {build_cost:g} s, run = {RUN_COST:g} s; "
        f"unusable commits: {100 * args.skips:g}%; repro confidence {args.confidence:g}, "
        f"batch {args.batch}; "
        f"interior rate x{args.interior_rate:g}; build weight {args.build_weight:g}; "
        f"rate mixture {mixture or RATE_MIXTURE}; clean end "
        f"{'checked apart' if args.verified_end else 'in the posterior'}; rate probes "
        f"{'off' if args.no_rate_probes else 'on'}\n"
    )
    print(
        "|     n |    p | method             | accuracy |     runs | (bisect) |  bound | ratio "
        "| builds | cost min |"
    )
    print(
        "|------:|-----:|:-------------------|---------:|---------:|---------:|-------:|------:"
        "|-------:|---------:|"
    )
    splits: list[str] = []
    start = time.perf_counter()
    for n in args.n:
        steps = racy_steps(n)
        for p in args.p:
            rng = random.Random(f"{args.seed}-{n}-{p}")
            # Every run inside the range, repro's or a baseline's (told the ends, it runs
            # nowhere else), sees the interior rate; so does the floor.
            p_in = p * args.interior_rate
            cases = []
            for _ in range(args.trials):
                b = rng.randint(1, n - 1)
                skips = frozenset(i for i in range(1, n - 1) if rng.random() < args.skips)
                cases.append((b, skips, rng.getrandbits(64)))
            tuned = tuned_repeats(steps, p)
            fixed = sorted({1, 10, 50, tuned})
            ours = Row(f"repro @{args.confidence:g}", [])
            # "oracle": tuned to the true rate; with a lower rate inside, only to the end's.
            tag = " (oracle)" if args.interior_rate == 1.0 else " (end's p)"
            rows = {r: Row(f"git N={r}" + (tag if r == tuned else ""), []) for r in fixed}
            plug_in = Row("git N(p^)", [])
            believer = Row("git N(belief)", [])
            for b, skips, seed in cases:
                ours.results.append(
                    simulate(
                        n,
                        b,
                        p,
                        random.Random(seed),
                        confidence=args.confidence,
                        skips=skips,
                        calib_hits_target=args.calibration_hits,
                        calib_hits_for=stress_calibration,
                        build_cost=build_cost,
                        run_cost=RUN_COST,
                        batch=args.batch,
                        interior_rate=p_in,
                        rate_mixture=mixture,
                        clean_end_racy=0.0 if args.verified_end else clean_end_prior(n),
                        build_weight=args.build_weight,
                        rate_probes=not args.no_rate_probes,
                    )
                )
                if args.repro_only:
                    continue
                for r, row in rows.items():
                    res = baseline_git_bisect(
                        n, b, p_in, random.Random(seed), repeats=r, skips=skips
                    )
                    row.results.append(res)
                # Careful users: the same calibration, then N tuned to the measured rate (plug-in)
                # or to the whole belief about it.  Their cost includes the calibration...
                crng = random.Random(seed)
                h, r_hits = calibrate(crng, p)
                r_cal = r_hits
                # ... and the same clean-end check as repro (it cannot hit: only its cost counts).
                r_cal += RateBelief.from_calibration(h, r_hits).runs_to_rule_out(0.99)
                state = crng.getstate()
                for row, n_rep in (
                    (plug_in, tuned_repeats(steps, h / r_hits)),
                    (believer, tuned_repeats_for_belief(steps, h, r_hits)),
                ):
                    crng.setstate(state)
                    res = baseline_git_bisect(n, b, p_in, crng, repeats=n_rep, skips=skips)
                    row.results.append(
                        SimResult(
                            res.found_lo,
                            res.found_hi,
                            res.correct,
                            res.runs + r_cal,
                            res.builds + 2,
                            r_cal,
                        )
                    )
            bound = fano_bound(n - 1, p_in, 0.01)
            shown = [ours] if args.repro_only else [ours, *rows.values(), plug_in, believer]
            for row in shown:
                print(row.line(n, p, build_cost, bound))
            splits.append(ours.breakdown(n, p, bound, culprit_bound(n - 1, p_in, 0.01)))
            sys.stdout.flush()
    print(
        "\nruns: all runs, including calibration (until "
        f"{args.calibration_hits} hits at the racy end for repro, {CALIB_HITS} for the git "
        "N(...) rows) and clean-end check for repro and the git N(...) "
        "rows; (bisect): runs after those; builds include the ends where they were built; "
        "cost: builds x build + runs x run, "
        "in minutes. git N=k (oracle): k tuned to the true rate; N(p^): tuned to the measured "
        "rate; N(belief): tuned to the rate's posterior (repro's information). bound: Fano's "
        "floor on mean runs at 1% error knowing the rate (inside the range); ratio: "
        "(bisect) / bound; culprit: bisect runs at the true first clean commit; floor: "
        "the least mean any bisect right 99% of the time at that rate can spend there."
    )
    print("\nWhere repro's runs go (means per bisect):\n")
    print(
        "|     n |    p |   calib |     end | (bisect) |  culprit |  floor |  bound | ratio "
        "| wrong |"
    )
    print(
        "|------:|-----:|--------:|--------:|---------:|---------:|-------:|-------:|------:"
        "|------:|"
    )
    for line in splits:
        print(line)
    print(f"elapsed {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
