"""When a commit's runs cannot show the race, so that a bisect skips it. Pure.

Runs that crash, time out or lose their stacks count for nothing (they are no
evidence). A commit where every run is such is skipped, like ``git bisect run``'s
exit 125. The rule was "3 such runs, more than the counted ones, no hit": greenlet
crashed in 45% of all runs at every commit (gcc's TSAN and its stack switching), so
3 crashes before any counted run came at about one commit in eleven, and at the
fixed end, which needs the most runs, nearly always: 3 bisects of 3 ended there
("the fixed end cannot be tested"), each after the answer was 89% likely (sweep 17).
Now the runs without evidence must also be unlikely for a commit whose runs count as
often as those of the commits run so far.
"""

from __future__ import annotations

import math

# Never fewer runs than this before a commit is skipped: a first crash proves little.
MIN_UNUSABLE_RUNS = 3
# Skipped with no counted run when a commit as usable as the others would begin with so
# many runs that do not count this rarely: the streak from the first run is one test,
# whenever it is looked at, so this is the chance of skipping such a commit.
UNUSABLE_CHANCE = 0.01
# Skipped with a few counted runs when so few would come this rarely. Asked after every
# run, this test is repeated; at 1e-4 a commit as usable as the others was skipped in
# 0.5-1% of 3,000 simulated probes of 200 runs (usable shares 0.3 to 0.9).
RARELY_COUNTED_CHANCE = 1e-4


def usable_fraction(counted: int, runs: int) -> float:
    """The share of runs that count, from the other commits' runs (Laplace's rule: a
    first probe with nothing run elsewhere is taken as usable half the time, not
    always, so that it is not skipped after 3 unlucky runs)."""
    return (counted + 1) / (runs + 2)


def cannot_count(evidence: int, not_evidence: int, hits: int, usable: float) -> bool:
    """Whether a commit whose runs gave ``evidence`` counted runs (``hits`` of them
    with the target) and ``not_evidence`` others is one whose runs cannot show the race,
    when elsewhere a share ``usable`` of runs counted."""
    if hits or not_evidence < MIN_UNUSABLE_RUNS or not_evidence <= evidence:
        return False
    if evidence == 0:
        return (1 - usable) ** not_evidence < UNUSABLE_CHANCE
    return _at_most(evidence, evidence + not_evidence, usable) < RARELY_COUNTED_CHANCE


def _at_most(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if p >= 1.0:
        return 0.0 if k < n else 1.0
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
