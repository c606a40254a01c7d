"""Statistics for reproduction rates. Pure functions, no I/O.

The Wilson score interval is used instead of the normal approximation because rates
here are often near 0 or 1 with few runs, where the normal interval goes below 0 or
claims certainty after a handful of runs.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(hits: int, runs: int, z: float = Z95) -> tuple[float, float]:
    if runs <= 0:
        return (0.0, 1.0)
    if hits < 0 or hits > runs:
        raise ValueError(f"hits={hits} out of range for runs={runs}")
    p = hits / runs
    z2 = z * z
    denom = 1.0 + z2 / runs
    centre = (p + z2 / (2 * runs)) / denom
    half = z * math.sqrt(p * (1 - p) / runs + z2 / (4 * runs * runs)) / denom
    lo = 0.0 if hits == 0 else max(0.0, centre - half)
    hi = 1.0 if hits == runs else min(1.0, centre + half)
    return (lo, hi)


def rate(hits: int, runs: int) -> float:
    return hits / runs if runs else 0.0


def clean_runs_needed(rate_: float, confidence: float) -> int:
    """Runs without a hit needed to say "clean" with the given confidence.

    A racy commit shows no hit in n runs with probability (1 - rate)^n; this is the
    smallest n that pushes that below 1 - confidence.
    """
    if not 0.0 < rate_ <= 1.0:
        raise ValueError("rate must be in (0, 1]")
    if rate_ >= 1.0:
        return 1
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(1.0 - rate_)))


def upper_rate_if_clean(runs: int, confidence: float = 0.95) -> float:
    """The largest rate still consistent with `runs` clean runs (the rule of three, exact)."""
    if runs <= 0:
        return 1.0
    return 1.0 - math.pow(1.0 - confidence, 1.0 / runs)


def format_rate(hits: int, runs: int) -> str:
    lo, hi = wilson_interval(hits, runs)
    return f"{rate(hits, runs):.1%} [{lo:.1%}, {hi:.1%}] ({hits}/{runs})"
