"""Benchmark: is the cost at the culprit the strategy's or the belief's?

At the end of a bisect one question is left: is the candidate ``b`` clean (the answer), or
racy at a rate low enough to have missed (then the answer is further on)?  Two kinds of run
bear on it: runs at ``b`` (a hit settles it, misses lower the odds) and runs at the highest
racy commit ``f`` (hits there sharpen the rate, so later misses at ``b`` weigh more).

This script solves that last phase exactly, by dynamic programming over (hits at ``f``, runs
at ``f``, misses at ``b``): the Bayes-optimal policy minimises the expected runs under the
belief itself (``repro.strategy.rate``: the calibration's Beta, the rate mixture, the
evidence from racy commits so far) and stops when ``P(b clean) >= confidence``.  It then
prices that policy, and the policy "runs at ``b`` only", when the truth is "``b`` is clean
and the rate is ``p``".  If the two are close, no cleverer order of runs in the last phase
saves much: the runs at ``b`` are set by how vague the belief is, which is what the rate
mixture (issue 15's item 3) and a short calibration make it.

    .venv/bin/python bench/bench_final_phase.py [--p 0.1]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from repro.strategy.information import culprit_bound
from repro.strategy.rate import RATE_MIXTURE, RateBelief

_CAP_F = 150  # runs at f the policy may spend
_CAP_B = 2000  # misses at b before giving up (never reached in the table's states)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


class FinalPhase:
    """The belief at the start of the last phase, and the exact values of two policies."""

    def __init__(
        self,
        calib: tuple[int, int],
        racy: tuple[int, int],
        mixture: tuple[tuple[float, float], ...],
        p_racy: float,
        confidence: float,
    ) -> None:
        base = RateBelief.from_calibration(*calib)
        total = math.fsum(w for _, w in mixture)
        self.comps = [(math.log(w / total), base.scaled(r)) for r, w in mixture]
        self.h0, self.m0 = racy[0], racy[1] - racy[0]
        self.p_racy = p_racy
        self.confidence = confidence
        # Each state's belief is asked for by the stopping test and by the choice: once.
        self.belief = functools.lru_cache(maxsize=None)(self._belief)
        self.value = functools.lru_cache(maxsize=None)(self._value)
        self.cost = functools.lru_cache(maxsize=None)(self._cost)

    def _belief(self, hf: int, nf: int, k: int) -> tuple[float, float, float]:
        """P(b racy), and the mean rate under "b clean" and "b racy", after this evidence."""
        h, m = self.h0 + hf, self.m0 + nf - hf
        clean: list[tuple[float, float]] = []
        racy: list[tuple[float, float]] = []
        for lw, c in self.comps:
            a, b = c.alpha, c.beta
            clean.append((lw + _lbeta(a + h, b + m) - _lbeta(a, b), (a + h) / (a + h + b + m)))
            racy.append(
                (lw + _lbeta(a + h, b + m + k) - _lbeta(a, b), (a + h) / (a + h + b + m + k))
            )
        top = max(x for x, _ in clean + racy)
        z0 = math.fsum(math.exp(x - top) for x, _ in clean) * (1 - self.p_racy)
        z1 = math.fsum(math.exp(x - top) for x, _ in racy) * self.p_racy
        e0 = math.fsum(math.exp(x - top) * e for x, e in clean) * (1 - self.p_racy) / z0
        e1 = math.fsum(math.exp(x - top) * e for x, e in racy) * self.p_racy / z1
        return z1 / (z0 + z1), e0, e1

    def _choices(self, hf: int, nf: int, k: int, use_f: bool) -> tuple[float, float]:
        """(value of a run at b, value of a run at f) under the belief."""
        p1, e0, e1 = self.belief(hf, nf, k)
        at_b = 1 + (1 - p1 * e1) * self.value(hf, nf, k + 1, use_f)
        if not use_f or nf >= _CAP_F:
            return at_b, math.inf
        pf = (1 - p1) * e0 + p1 * e1
        at_f = 1 + pf * self.value(hf + 1, nf + 1, k, use_f)
        at_f += (1 - pf) * self.value(hf, nf + 1, k, use_f)
        return at_b, at_f

    def _done(self, hf: int, nf: int, k: int) -> bool:
        return 1 - self.belief(hf, nf, k)[0] >= self.confidence

    def _value(self, hf: int, nf: int, k: int, use_f: bool) -> float:
        if self._done(hf, nf, k):
            return 0.0
        if k >= _CAP_B:
            return math.inf
        return min(self._choices(hf, nf, k, use_f))

    def _cost(self, hf: int, nf: int, k: int, use_f: bool, p: float) -> tuple[float, float]:
        """(runs at b, runs at f) that the policy spends when b is clean and the rate is p."""
        if self._done(hf, nf, k):
            return 0.0, 0.0
        if k >= _CAP_B:
            return math.inf, 0.0
        at_b, at_f = self._choices(hf, nf, k, use_f)
        if at_f < at_b:
            hb, hff = self.cost(hf + 1, nf + 1, k, use_f, p)
            mb, mf = self.cost(hf, nf + 1, k, use_f, p)
            return p * hb + (1 - p) * mb, 1 + p * hff + (1 - p) * mf
        b, f = self.cost(hf, nf, k + 1, use_f, p)
        return b + 1, f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--p", type=float, default=0.1, help="the true rate (default 0.1)")
    ap.add_argument("--confidence", type=float, default=0.99)
    args = ap.parse_args()
    sys.setrecursionlimit(1_000_000)
    p = args.p
    cal = (5, round(5 / p))  # a calibration to 5 hits that saw the rate's mean
    known = ((1.0, 1.0),)
    rows = [
        ("rate known (calibration 1000 hits), one rate", (1000, round(1000 / p)), known),
        ("calibration 5 hits, one rate", cal, known),
        ("calibration 5 hits, mixture (repro)", cal, RATE_MIXTURE),
        ("calibration 1 hit, one rate", (1, round(1 / p)), known),
    ]
    print(f"true rate {p}, b clean; confidence {args.confidence}\n")
    print(
        "| belief | racy commits so far | P(b racy) at start | runs at b only "
        "| optimal: at b | at f | in all |"
    )
    print("|:--|:--|--:|--:|--:|--:|--:|")
    for label, calib, mixture in rows:
        for racy in ((4, round(4 / p)), (1, round(1 / p))):
            for p_racy in (0.5, 0.8):
                fp = FinalPhase(calib, racy, mixture, p_racy, args.confidence)
                only_b, _ = fp.cost(0, 0, 0, False, p)
                opt_b, opt_f = fp.cost(0, 0, 0, True, p)
                seen = f"{racy[0]} hit{'s' if racy[0] != 1 else ''} in {racy[1]} runs"
                print(
                    f"| {label} | {seen} | {p_racy} | {only_b:.1f} "
                    f"| {opt_b:.1f} | {opt_f:.1f} | {opt_b + opt_f:.1f} |"
                )

    floor = culprit_bound(1000, p, 1 - args.confidence)
    print(f"\nfloor on runs at b for any bisect at this rate (n = 1000): {floor:.1f}")


if __name__ == "__main__":
    main()
