"""What a bisect believes about the race's rate ``p`` at a racy commit, before the search.

The calibration at the racy end gives ``h`` hits in ``r`` runs; ``RateBelief`` turns that into
a Beta distribution, and ``RATE_MIXTURE`` says how far below it the rate inside the range may
be. The search (``repro.strategy.bisect``) integrates ``p`` out against these; the app asks
this module how many hits a calibration needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CALIBRATION_HITS", "RATE_MIXTURE", "RateBelief"]

# The rate at racy commits inside the range, relative to the calibrated end: (ratio, weight).
RATE_MIXTURE: tuple[tuple[float, float], ...] = ((1.0, 0.7), (0.5, 0.2), (0.25, 0.1))
# Hits at the racy end before the search starts (``repro bisect``'s default, a recipe's
# ``bisect.calibration_hits``).  Measured with this strategy (``simulate``, runs in all,
# calibration included), 3 / 4 / 5 / 6 / 8 hits: n = 200, p = 0.1, a build worth 30 runs
# (400 histories) 355 / 344 / 342 / 342 / 348, standard deviation 241 / 164 / 143 / 131 / 114;
# n = 16, p = 0.25: 105 / 98 / 96 / 96 / 102; n = 150, p = 0.5: 67 / 65 / 63 / 64 / 67;
# n = 50 and 1000, p = 0.02 (150 histories): 1465 / 1400 / 1429 / 1425 / 1519 and 1931 /
# 1884 / 1894 / 1896 / 1955; p = 1 (n = 169) 26-28 for all.  With 3 hits the rate belief is
# so vague that an unlucky calibration costs hundreds of runs at the culprit.
CALIBRATION_HITS = 5


@dataclass(frozen=True)
class RateBelief:
    """Belief about the per-run hit rate ``p`` at a racy commit: ``Beta(alpha, beta)``.

    Kept as a distribution, not a point estimate, because a lucky calibration (3 hits in 5 runs
    of a 20% race) would otherwise make every later miss look far too conclusive.
    """

    alpha: float
    beta: float

    @classmethod
    def from_calibration(cls, hits: int, runs: int) -> RateBelief:
        """Posterior after ``hits`` in ``runs`` under the log-uniform base prior ``p**-1``."""
        if hits < 1:
            raise ValueError("calibration needs at least one hit: the racy end must be racy")
        if runs < hits:
            raise ValueError(f"calibration has more hits ({hits}) than runs ({runs})")
        return cls(float(hits), float(runs - hits + 1))

    def scaled(self, ratio: float) -> RateBelief:
        """The belief about a rate ``ratio`` times this one: same ``alpha``, mean times ``ratio``.

        Keeping ``alpha`` keeps the relative spread (about ``1/sqrt(alpha)``) that the
        calibration's hits justify.
        """
        if ratio == 1.0:
            return self
        a = self.alpha
        return RateBelief(a, (a + self.beta) / ratio - a)

    def mean(self) -> float:
        """Posterior mean of ``p``."""
        return self.alpha / (self.alpha + self.beta)

    def log_miss_probability(self, runs: int) -> float:
        """``log E[(1-p)**runs]``: how likely a racy commit is to miss ``runs`` times in a row."""
        a, b = self.alpha, self.beta
        return (
            math.lgamma(b + runs) - math.lgamma(b) - math.lgamma(a + b + runs) + math.lgamma(a + b)
        )

    def miss_probability(self, runs: int) -> float:
        """``E[(1-p)**runs]``, averaged over the uncertainty about ``p``."""
        return math.exp(self.log_miss_probability(runs))

    def runs_to_rule_out(self, confidence: float, *, max_runs: int = 1 << 24) -> int:
        """Fewest runs whose all-miss outcome makes "racy" at most ``1 - confidence`` likely.

        This is what a clean-end check needs: with fewer runs, a clean verdict on the clean end
        would rest on luck.  Uses the whole belief, so a vague calibration asks for more runs.
        """
        target = math.log1p(-confidence)
        if self.log_miss_probability(max_runs) > target:
            return max_runs
        lo, hi = 0, 1
        while self.log_miss_probability(hi) > target:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.log_miss_probability(mid) > target:
                lo = mid
            else:
                hi = mid
        return hi
