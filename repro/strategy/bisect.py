"""Where to look next when bisecting an intermittent race, and when to stop.

The model
---------
Commits are positions ``0..n-1``, ordered from the verified-racy end (0) to the verified-clean
end (``n-1``).  The unknown boundary ``b`` (``1 <= b <= n-1``) is the first clean position.  A
run at a position ``i < b`` shows the target race with probability ``p`` (the same ``p`` at every
racy commit); a run at ``i >= b`` never does.  So a hit is conclusive (``b > i``) and a miss only
makes "clean" more likely, by a factor that depends on ``p``, which is itself only known roughly
from the calibration at position 0 (``h`` hits in ``r`` runs).

Why a joint posterior over (b, p), integrated exactly
-----------------------------------------------------
Three families of answers exist in the prior art:

* plain ``git bisect`` with a loop (``bad`` if any of N runs hits): every step must be right,
  so N must be tuned to ``p`` *and* to the number of steps, and a rate lower than assumed
  silently blames the wrong commit (the prior-art measurement: plain git bisect 31.8% accurate
  in 16.2 runs);
* robust noisy binary search (robust-git-bisect: repeated votes, 99.5% accurate in 29.7 runs in
  the same comparison): much better, but the votes are sized for an assumed error rate, and
  the runs behind a vote are not pooled with the rest of the evidence when deciding to stop;
* BBChop-style Bayesian search with a *fixed* ``p``: it pools evidence and stops on a stated
  posterior probability, but a point estimate of ``p`` that is too high makes misses look more
  conclusive than they are, which is exactly how its error guarantee breaks.

We keep BBChop's posterior and stopping rule but do not fix ``p``: ``p`` is a nuisance parameter
with a Beta prior taken from the calibration, and we integrate it out.  Given the data, every
hit lies below ``b``, so the likelihood of ``(b, p)`` is ``p**H * (1-p)**M(b)`` for ``b`` above the
highest hit, where ``H`` counts all hits and ``M(b)`` the misses at positions below ``b``.  With a
Beta prior that integrates in closed form (a ratio of Beta functions), so the marginal posterior
of ``b`` is exact, costs two ``lgamma`` per stretch of positions that share ``M(b)``, and
needs no grid on ``p`` (a grid is the numerical version of the same integral; the closed form is
the grid with infinitely many points).  Hits elsewhere and misses at known-racy commits keep
refining ``p`` as the bisection goes.

The Beta prior is ``Beta(h, r - h + 1)``: the calibration's likelihood on top of the
scale-invariant base ``p**-1`` (log-uniform: a race is as likely to show in 1% as in 10% of runs).
Compared with a uniform base this leans towards smaller ``p``, i.e. towards trusting misses less:
the conservative side.  The calibration's stopping rule ("run until 5 hits") does not change the
likelihood, so it needs no correction.

The calibration measures the rate at the racy *end*; inside the range the rate can be lower (a
later commit made the window narrower). A single calibrated rate then trusts misses at racy
commits too much: with half the rate inside, 4% of answers at 0.99 were wrong. So the prior of
the rate inside the range is a mixture (``RATE_MIXTURE``): the calibrated Beta with weight 0.7,
and the same Beta with its mean halved (weight 0.2) and quartered (0.1), with the same
``alpha``, so the same relative spread. (At 0.8 / 0.1 / 0.1, 3.0% of the answers at 0.99 were
wrong at n = 50, p = 0.1 with half the rate inside; at 0.7 / 0.2 / 0.1, at most 1.2% in every
cell of ``bench/bench_bisect.py``'s grid, for 2-8% more runs when the rate is uniform.) Every
component integrates in closed form as above, so the posterior stays exact; the components'
weights are learnt from the evidence (waits for a hit at racy commits, misses at commits that
later hit), which is the detection of a lower rate, and until the evidence rules the lower
rates out they keep misses from counting for more than they may.

What the guarantee is
---------------------
We stop when one range of indistinguishable boundaries holds posterior probability
``>= confidence``.  If the model holds and ``(b, p)`` follow the prior, the probability that the
answer is wrong is then ``<= 1 - confidence``, whatever path the search took (the stopping rule
is a function of the posterior alone).  The tests check this by simulation with ``p`` drawn
log-uniformly over 1%..100%, and with half the calibrated rate inside the range.  What can
still break it is a rate far lower inside the range than a quarter of the calibrated one.

Choosing the probe
------------------
A probe is "``K`` runs at position ``t``", and its outcome that matters for ``b`` is "some hit" or
"all missed".  Its value is the mutual information between that outcome and ``b`` (the expected
drop of the entropy of ``b``'s posterior), which is ``h2(P(all miss)) - E_b[h2(P(all miss | b))]``
and, because ``P(all miss | b)`` is constant on stretches of ``b``, costs O(1) per ``t`` from
prefix sums.  Its cost is ``build_cost + K * run_cost`` if ``t`` has no build, ``K * run_cost``
if it has one.  We pick the best information per unit cost:

* for built positions, one more batch (``K = batch``): the marginal rate of staying there;
* for unbuilt positions, the best ``K`` on a doubling grid: the amortised rate of a new build.

Staying on a built commit while its marginal rate beats the amortised rate of building another
is the marginal-value rule of optimal foraging: pay a build only when it pays back.  The build
enters that rule at ``BUILD_WEIGHT`` of its cost, not all of it.  A search visits about
``log2(n)`` commits whatever it pays for them, so the price of a build barely changes how many
builds it makes; what the price decides is how long the search stays at a built commit before
moving on, and at the full price the rule overstays.  Measured (``bench/bench_bisect.py``, a
build worth 60 runs, 500 trials a cell): at a tenth of the cost the search makes 6-41% fewer
runs for at most one more build, and costs less in every cell of the grid; with a build worth
300 runs (100 trials, p >= 0.1) it costs less too.  Within one
stretch the value is concave in the probability mass left of ``t``, so the best unbuilt position
in each stretch is found in closed form and a binary search, and ``next_step`` stays in the
millisecond range for ``n = 5000``.

Among unbuilt positions whose rate is within ``_TIE_TOLERANCE`` of the best we take the
"stabilised midpoint": the one whose anchor (by default its position; callers pass e.g. a
commit's distance from the repository root) has the most trailing zero bits, i.e. the shallowest
node of an implicit balanced binary tree.  Two bisections over overlapping ranges then ask for
the same commits and reuse their builds, as cargo-bisect-rustc does.  A built position within the
same tolerance wins over any unbuilt one for the same reason.

A probe asks for as many runs as the one-batch-at-a-time policy would spend at that position if
every run missed (found by a doubling search on the hypothetical posterior).  The caller stops at
the first hit, so this is (nearly: the rival rate is re-evaluated only twice) the same policy
with fewer round trips.

``next_step`` answers ``Done`` when one range holds the requested probability, or when no probe
can change the posterior any more; the latter only happens when a single range is left (every
position that could split it is unusable), so its probability is then 1 within the model.

Everything here is pure and deterministic: the state is the sequence of ``record_*`` and
``mark_built`` calls, and replaying them gives the same ``next_step``.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from repro.strategy.rate import RATE_MIXTURE, RateBelief

__all__ = ["BUILD_WEIGHT", "Bisector", "Done", "Probe", "Step", "clean_end_prior"]

# Relative slack in information per cost within which we prefer a built or "stabilised" position
# over the strict optimum. Measured: 0.1 costs nothing in simulation; reused builds save minutes.
_TIE_TOLERANCE = 0.1
# The rate of a new build against K rises then falls; stop the doubling after this many falls.
_FALLS = 1
# Largest number of batches one probe (or one unbuilt plan) considers at a position.
_MAX_BATCHES = 1 << 14
# Below this expected information (nats) a probe is not worth asking for.
_MIN_INFO = 1e-12
# The share of a build's cost that the probe choice weighs it at (see "Choosing the probe").
BUILD_WEIGHT = 0.1


def _first_true(pred: Callable[[int], bool], hint: int, cap: int) -> int:
    """The least ``m`` in ``1..cap`` with ``pred(m)`` for a ``pred`` false then true (``cap``
    if none), galloping out from ``hint`` and bisecting the bracket found."""
    if pred(hint):
        good, bad, step = 0, hint, 1  # pred(good) false (0 stands for "none below"), pred(bad) true
        while bad - step >= 1:
            if not pred(bad - step):
                good = bad - step
                break
            bad, step = bad - step, step * 2
    else:
        good, step = hint, 1
        while True:
            if good >= cap:
                return cap
            bad = min(good + step, cap)
            if pred(bad):
                break
            good, step = bad, step * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if pred(mid):
            bad = mid
        else:
            good = mid
    return bad


def clean_end_prior(n: int) -> float:
    """How likely the clean end is to be racy after all, before any run there: ``1/n``.

    As likely as any one position is to be the boundary, so the search's guarantee covers
    a wrong clean end as it covers every other answer (measured: a racy clean end was
    named as such in 96-100% of simulated bisects at 0.99, for 4 to 100 runs).
    """
    return 1.0 / max(2, n)


def _h2(x: float) -> float:
    """Binary entropy in nats; 0 at the ends, where float noise could otherwise give NaN."""
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return -x * math.log(x) - (1.0 - x) * math.log1p(-x)


def _tz(a: int) -> int:
    """Trailing zero bits: the depth key of the implicit binary tree (more bits = shallower)."""
    if a == 0:
        return 1 << 30
    return (a & -a).bit_length() - 1


@dataclass(frozen=True)
class Probe:
    """Run the reproducer up to ``runs`` more times at ``index`` (stop early at a hit).

    ``for_rate``: ``index`` is known racy; the runs sharpen the race's rate, which makes
    the misses at the commit after it count for more (``Bisector._rate_probe``).
    """

    index: int
    runs: int
    for_rate: bool = False


@dataclass(frozen=True)
class Done:
    """The first clean position is in ``[lo, hi]`` with posterior probability ``confidence``."""

    lo: int
    hi: int
    confidence: float


Step = Probe | Done


@dataclass
class _Comp:
    """One component of the rate belief seen from the posterior: ``Beta(a, bb[j])`` per stretch.

    ``w[j]`` is the component's posterior weight inside stretch ``j``; ``lg_b``/``lg_ab`` cache
    the two ``lgamma`` terms that every ``E[(1-p)**K | b]`` of the stretch needs.
    """

    a: float
    bb: list[float]
    lg_b: list[float]
    lg_ab: list[float]
    w: list[float]


@dataclass
class _View:
    """The posterior of ``b`` as stretches ``[lo[j], hi[j]]`` that share the miss count ``M(b)``.

    Inside stretch ``j`` the posterior is ``c[j] * prior[b]``; ``mass[j]`` is its total and
    ``before[j]`` the mass of all earlier stretches.  ``comps`` hold what the rate belief's
    components (one, unless the belief is a mixture) say inside each stretch.
    """

    floor: int  # highest position with a hit: b > floor
    lo: list[int]
    hi: list[int]
    comps: list[_Comp]
    c: list[float]
    mass: list[float]
    before: list[float]


@dataclass
class _KTable:
    """For ``K`` runs: ``P(all miss | b)`` per stretch, its entropy, and their suffix sums."""

    k: int
    f: list[float]
    g: list[float]  # 1 - f, computed without cancellation
    hf: list[float]
    sf: list[float]  # sum over stretches >= j of mass * f
    sg: list[float]  # sum over stretches >= j of mass * h2(f)


@dataclass
class _Choice:
    index: int
    score: float
    built: bool


class Bisector:
    """Sequential Bayesian search for the first clean position of an intermittent race.

    Feed it what happened (``record_run``, ``record_unusable``, ``mark_built``) and ask
    ``next_step``.  It holds no clock, no randomness and no I/O, so a caller that persists the
    calls can rebuild it exactly.
    """

    def __init__(
        self,
        n: int,
        *,
        confidence: float = 0.99,
        calib_hits: int,
        calib_runs: int,
        build_cost: float = 60.0,
        run_cost: float = 1.0,
        batch: int = 1,
        prior: Sequence[float] | None = None,
        anchors: Sequence[int] | None = None,
        rate_mixture: Sequence[tuple[float, float]] | None = None,
        clean_end_racy: float = 0.0,
        build_weight: float = BUILD_WEIGHT,
        rate_probes: bool = True,
    ) -> None:
        """Set up the search.

        ``prior`` (length ``n``, index = ``b``, entry 0 ignored) is a belief about where the
        boundary is, e.g. from commit sizes or touched files; uniform if omitted.  ``anchors``
        (length ``n``) are stable integer ids of the positions, such as each commit's distance
        from the repository root, so the "stabilised midpoints" of two different ranges agree.

        ``clean_end_racy`` > 0 makes the clean end a claim to check, not a fact: it is the
        prior probability that the race still shows there (``b == n``: no clean position in
        the range), and position ``n - 1`` becomes a position like the others.  Checking the
        end apart, before the search, spends runs that only rule that one hypothesis out;
        inside the posterior, every miss at any position ``t`` counts against it (``b > t``
        includes ``b == n``), so the runs that confirm the answer confirm the end too.

        ``build_weight`` is the share of ``build_cost`` that choosing a probe weighs a new build
        at (``BUILD_WEIGHT`` by default; 1.0 was the rule before it was measured).

        ``rate_probes``: at the end of a search, spend runs at the highest hit to sharpen the
        rate when that is expected to save runs at the culprit (``_rate_probe``): 2-13% fewer
        bisect runs in every cell of bench_bisect's grid, the same wrong answers
        (bench/README.md, "Rate probes"); ``False`` is the strategy before them, for benches.
        """
        if n < 2:
            raise ValueError(f"need at least the two verified ends, got n={n}")
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        if build_cost < 0 or not math.isfinite(build_cost):
            raise ValueError(f"build_cost must be finite and >= 0, got {build_cost}")
        if run_cost <= 0 or not math.isfinite(run_cost):
            raise ValueError(f"run_cost must be finite and > 0, got {run_cost}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if not 0.0 <= build_weight <= 1.0:
            raise ValueError(f"build_weight must be in [0, 1], got {build_weight}")
        if not 0.0 <= clean_end_racy < 1.0:
            raise ValueError(f"clean_end_racy must be in [0, 1), got {clean_end_racy}")
        if prior is not None and len(prior) != n:
            raise ValueError(f"prior must have n={n} entries (index = b), got {len(prior)}")
        if anchors is not None and len(anchors) != n:
            raise ValueError(f"anchors must have n={n} entries, got {len(anchors)}")
        self.n = n  # the caller's positions; one virtual clean position follows when unverified
        self._end_open = clean_end_racy > 0.0
        if self._end_open:
            inner = [0.0] + [1.0] * (n - 1) if prior is None else [float(w) for w in prior]
            inner_total = math.fsum(inner[1:])
            if not inner_total > 0:
                raise ValueError("prior gives no weight to any boundary 1..n-1")
            scale = (1.0 - clean_end_racy) / inner_total
            prior = [0.0] + [w * scale for w in inner[1:]] + [clean_end_racy]
            if anchors is not None:
                anchors = [*anchors, int(anchors[-1]) + 1]
            n += 1
        self._rate = RateBelief.from_calibration(calib_hits, calib_runs)
        mixture = RATE_MIXTURE if rate_mixture is None else tuple(rate_mixture)
        if not mixture or any(
            not (0.0 < r <= 1.0 and w > 0.0 and math.isfinite(w)) for r, w in mixture
        ):
            raise ValueError(f"rate_mixture needs (ratio in (0, 1], weight > 0) pairs: {mixture}")
        total_w = math.fsum(w for _, w in mixture)
        self._components = [(math.log(w / total_w), self._rate.scaled(r)) for r, w in mixture]
        self._n = n
        self._confidence = confidence
        self._build_price = float(build_cost) * build_weight
        self._run_cost = float(run_cost)
        self._batch = batch
        self._rate_probes = rate_probes

        weights: list[float]
        if prior is None:
            weights = [0.0] + [1.0] * (n - 1)
        else:
            weights = [0.0] + [float(w) for w in prior[1:]]
            if any(w < 0 or not math.isfinite(w) for w in weights):
                raise ValueError("prior weights must be finite and >= 0")
        total = math.fsum(weights)
        if total <= 0:
            raise ValueError("prior gives no weight to any boundary 1..n-1")
        # _pcum[i] = prior mass of b <= i; stretches start at b >= 1, so _pcum[lo - 1] exists.
        self._pcum: list[float] = []
        acc = 0.0
        for w in weights:
            acc += w / total
            self._pcum.append(acc)
        self._pcum[-1] = 1.0

        if anchors is None:
            self._anchors: list[int] = list(range(n))
        else:
            self._anchors = [int(a) for a in anchors]

        self._hits: dict[int, int] = {}
        self._misses: dict[int, int] = {}
        self._miss_positions: list[int] = []  # sorted keys of _misses
        self._total_hits = 0
        self._floor = 0  # position 0 is verified racy
        self._unusable: set[int] = set()
        # An unverified clean end is built only if the search asks for it.
        self._built: set[int] = {0, n - 1}

    # ------------------------------------------------------------------ state

    @property
    def confidence(self) -> float:
        """The posterior probability an answer must hold."""
        return self._confidence

    @property
    def highest_hit(self) -> int:
        """The highest position with a hit (0, the racy end, before any): ``b`` lies above."""
        return self._floor

    def is_built(self, i: int) -> bool:
        """A build of ``i`` exists (or runs there went as far as the reproducer)."""
        return i in self._built

    def is_unusable(self, i: int) -> bool:
        """``i`` was recorded unusable and is never asked for."""
        return i in self._unusable

    # ------------------------------------------------------------------ events

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise IndexError(f"position {i} outside 0..{self.n - 1}")

    def record_run(self, i: int, hit: bool) -> None:
        """One run at ``i`` finished; ``hit`` says whether the target race showed."""
        self._check_index(i)
        # A run that got as far as the reproducer shows the commit is usable after all (say a
        # build that failed for lack of disk succeeded on retry).
        self._unusable.discard(i)
        if hit:
            if i == self._n - 1:
                raise ValueError("a hit at the verified-clean end contradicts the bisection range")
            self._hits[i] = self._hits.get(i, 0) + 1
            self._total_hits += 1
            self._floor = max(self._floor, i)
        else:
            if i not in self._misses:
                insort(self._miss_positions, i)
                self._misses[i] = 0
            self._misses[i] += 1
        self._built.add(i)

    def record_unusable(self, i: int) -> None:
        """``i`` cannot be built or its runs fail before the reproducer (``git bisect skip``).

        Runs already recorded at ``i`` stay as evidence; it is only never asked for again, and
        answer ranges treat it as untestable, which can only widen them.
        """
        self._check_index(i)
        if i in (0, self.n - 1):
            raise ValueError("the verified ends cannot be unusable")
        self._unusable.add(i)
        self._built.discard(i)

    def mark_built(self, i: int) -> None:
        """A build of ``i`` exists, so probing it costs runs only."""
        self._check_index(i)
        if i not in self._unusable:
            self._built.add(i)

    # --------------------------------------------------------------- posterior

    def _view(
        self, extra_at: int = -1, extra_misses: int = 0, racy_hits: int = 0, racy_misses: int = 0
    ) -> _View:
        """The posterior, optionally with ``extra_misses`` hypothetical misses at ``extra_at``,
        and ``racy_hits`` hits and ``racy_misses`` misses at known-racy positions (at or below
        the highest hit: they move the rate, not the boundary)."""
        n, floor = self._n, self._floor
        base_misses = racy_misses
        splits: list[tuple[int, int]] = []
        positions = self._miss_positions
        if extra_misses and extra_at not in self._misses:
            positions = sorted([*positions, extra_at])
        for i in positions:
            m = self._misses.get(i, 0) + (extra_misses if i == extra_at else 0)
            if i <= floor:
                base_misses += m
            elif i < n - 1:
                splits.append((i, m))
        lo: list[int] = []
        hi: list[int] = []
        miss: list[int] = []
        start, cur = floor + 1, base_misses
        for i, m in splits:
            lo.append(start)
            hi.append(i)
            miss.append(cur)
            start, cur = i + 1, cur + m
        lo.append(start)
        hi.append(n - 1)
        miss.append(cur)

        pcum = self._pcum
        prior_mass = [pcum[h] - pcum[s - 1] for s, h in zip(lo, hi, strict=True)]
        comps: list[_Comp] = []
        per_comp: list[list[float]] = []
        for log_w, belief in self._components:
            a = belief.alpha + self._total_hits + racy_hits
            bb = [belief.beta + m for m in miss]
            lg_b = [math.lgamma(x) for x in bb]
            lg_ab = [math.lgamma(a + x) for x in bb]
            # log of w * B(a, bb) / B(alpha, beta): the component's marginal likelihood.
            const = log_w + math.lgamma(a) - math.lgamma(belief.alpha) - math.lgamma(belief.beta)
            const += math.lgamma(belief.alpha + belief.beta)
            per_comp.append([const + lb - lab for lb, lab in zip(lg_b, lg_ab, strict=True)])
            comps.append(_Comp(a, bb, lg_b, lg_ab, []))
        logs: list[float] = []
        for j, pm in enumerate(prior_mass):
            terms = [pc[j] for pc in per_comp]
            top_j = max(terms)
            tot = math.fsum(math.exp(t - top_j) for t in terms)
            for comp, t in zip(comps, terms, strict=True):
                comp.w.append(math.exp(t - top_j) / tot)
            logs.append(top_j + math.log(tot) if pm > 0 else -math.inf)
        top = max(logs)
        if top == -math.inf:
            raise ValueError("the recorded hits rule out every boundary the prior allows")
        rel = [math.exp(x - top) for x in logs]
        z = math.fsum(r * pm for r, pm in zip(rel, prior_mass, strict=True))
        c = [r / z for r in rel]
        mass = [ci * pm for ci, pm in zip(c, prior_mass, strict=True)]
        before: list[float] = []
        acc = 0.0
        for mj in mass:
            before.append(acc)
            acc += mj
        return _View(floor, lo, hi, comps, c, mass, before)

    def _cum(self, v: _View, t: int) -> float:
        """Posterior probability that ``b <= t``."""
        if t <= v.floor:
            return 0.0
        j = bisect_right(v.lo, t) - 1
        return v.before[j] + v.c[j] * (self._pcum[t] - self._pcum[v.lo[j] - 1])

    def posterior_b(self) -> list[float]:
        """Posterior probability of each boundary; index = ``b`` (entry 0 is always 0)."""
        v = self._view()
        out = [0.0] * self._n
        pcum = self._pcum
        for j, (s, h) in enumerate(zip(v.lo, v.hi, strict=True)):
            cj = v.c[j]
            for b in range(s, h + 1):
                out[b] = cj * (pcum[b] - pcum[b - 1])
        return out

    def cdf(self) -> list[float]:
        """``P(b <= t)`` for each position ``t``: the posterior probability that ``t`` is clean."""
        v = self._view()
        return [self._cum(v, t) for t in range(self._n)]

    def rate_estimate(self) -> float:
        """Posterior mean of the rate at racy commits inside the range, from all the evidence.

        For reports: the rate against which the runs spent are compared with Fano's bound.
        """
        v = self._view()
        return math.fsum(
            v.mass[j] * math.fsum(comp.w[j] * comp.a / (comp.a + comp.bb[j]) for comp in v.comps)
            for j in range(len(v.lo))
        )

    def _usable_from(self, pos: int) -> int:
        """The first usable position at or after ``pos`` (the last position, usable or not,
        if none is): where an answer range that starts at ``pos`` ends."""
        while pos < self._n - 1 and pos in self._unusable:
            pos += 1
        return pos

    def _answer(self, v: _View) -> Done:
        """The range of indistinguishable boundaries that holds the posterior median.

        Boundaries between two consecutive usable positions cannot be told apart, so they form
        one answer range (with no unusable positions, a single commit).  Since confidence > 1/2,
        any range with that much mass holds the median, so checking one range is enough.
        """
        pcum = self._pcum
        j = 0
        while j + 1 < len(v.mass) and v.before[j + 1] < 0.5:
            j += 1
        need = (0.5 - v.before[j]) / v.c[j] if v.c[j] > 0 else 0.0
        target = pcum[v.lo[j] - 1] + need
        med = bisect_left(pcum, target, v.lo[j], v.hi[j] + 1)
        med = min(max(med, v.lo[j]), v.hi[j])
        nxt = self._usable_from(med)
        prv = med - 1
        while prv > 0 and prv in self._unusable:
            prv -= 1
        lo = max(prv + 1, v.floor + 1)
        conf = self._cum(v, nxt) - self._cum(v, prv)
        return Done(lo, nxt, min(1.0, max(0.0, conf)))

    # ------------------------------------------------------------ probe values

    def _ktable(self, v: _View, k: int) -> _KTable:
        m = len(v.lo)
        f = [0.0] * m
        g = [0.0] * m
        for comp in v.comps:
            a = comp.a
            for j, (x, lb, lab, w) in enumerate(
                zip(comp.bb, comp.lg_b, comp.lg_ab, comp.w, strict=True)
            ):
                lf = math.lgamma(x + k) - lb - math.lgamma(a + x + k) + lab
                f[j] += w * math.exp(lf)
                g[j] -= w * math.expm1(lf)
        hf = [_h2(x) for x in f]
        sf = [0.0] * (m + 1)
        sg = [0.0] * (m + 1)
        for j in range(m - 1, -1, -1):
            sf[j] = sf[j + 1] + v.mass[j] * f[j]
            sg[j] = sg[j + 1] + v.mass[j] * hf[j]
        return _KTable(k, f, g, hf, sf, sg)

    def _info(self, v: _View, kt: _KTable, j: int, t: int) -> float:
        """Mutual information (nats) between ``b`` and "all ``kt.k`` runs at ``t`` missed"."""
        inside = v.c[j] * (self._pcum[t] - self._pcum[v.lo[j] - 1])
        rest = v.mass[j] - inside
        p_miss = v.before[j] + inside + kt.f[j] * rest + kt.sf[j + 1]
        cond = kt.hf[j] * rest + kt.sg[j + 1]
        return max(0.0, _h2(p_miss) - cond)

    def _probe_cost(self, k: int, built: bool) -> float:
        return k * self._run_cost + (0.0 if built else self._build_price)

    def _askable(self, t: int, v: _View) -> bool:
        return v.floor < t < self._n - 1 and t not in self._unusable

    def _best_built(self, v: _View, built: set[int]) -> _Choice | None:
        kt = self._ktable(v, self._batch)
        cost = self._probe_cost(self._batch, True)
        best: _Choice | None = None
        for t in sorted(built):
            if not self._askable(t, v):
                continue
            j = bisect_right(v.lo, t) - 1
            score = self._info(v, kt, j, t) / cost
            if score > _MIN_INFO and (best is None or score > best.score):
                best = _Choice(t, score, True)
        return best

    def _nearest_unbuilt(self, v: _View, j: int, t: int, step: int, built: set[int]) -> int | None:
        lo, hi = v.lo[j], min(v.hi[j], self._n - 2)
        while lo <= t <= hi:
            if t not in built and t not in self._unusable:
                return t
            t += step
        return None

    def _unbuilt_in_stretch(
        self, v: _View, kt: _KTable, j: int, built: set[int]
    ) -> tuple[_Choice | None, int]:
        """Best unbuilt position of stretch ``j`` for ``kt.k`` runs, and the unconstrained optimum.

        The information is concave in the posterior mass ``x`` left of the probe: with
        ``P = a + g*x`` the chance of all misses, its derivative vanishes where
        ``log((1-P)/P) = -h2(f)/g``, so the optimum is closed-form; the best allowed position is
        the nearest allowed one on either side of it.
        """
        if v.mass[j] <= 0 or kt.g[j] <= 0:
            return None, -1
        g = kt.g[j]
        a = v.before[j] + kt.f[j] * v.mass[j] + kt.sf[j + 1]
        p_star = 1.0 / (1.0 + math.exp(-kt.hf[j] / g))
        x = min(max((p_star - a) / g, 0.0), v.mass[j])
        s, h = v.lo[j], v.hi[j]
        target = self._pcum[s - 1] + x / v.c[j]
        t = min(max(bisect_left(self._pcum, target, s, h + 1), s), h)
        cost = self._probe_cost(kt.k, False)
        best: _Choice | None = None
        for cand in (
            self._nearest_unbuilt(v, j, t, 1, built),
            self._nearest_unbuilt(v, j, t - 1, -1, built),
        ):
            if cand is None:
                continue
            score = self._info(v, kt, j, cand) / cost
            if score > _MIN_INFO and (best is None or score > best.score):
                best = _Choice(cand, score, False)
        return best, t

    def _ks(self) -> list[int]:
        ks: list[int] = []
        k = self._batch
        while k <= self._batch * _MAX_BATCHES:
            ks.append(k)
            k *= 2
        return ks

    def _best_unbuilt(
        self, v: _View, built: set[int]
    ) -> tuple[_Choice | None, list[tuple[_KTable, int, int, float]]]:
        """Best amortised rate of a new build, and per (K, stretch) optima for tie-breaking."""
        best: _Choice | None = None
        optima: list[tuple[_KTable, int, int, float]] = []
        falling = 0
        prev = 0.0
        negligible = 1e-6 * (1.0 - self._confidence)
        for k in self._ks():
            kt = self._ktable(v, k)
            round_best = 0.0
            for j in range(len(v.lo)):
                if v.mass[j] < negligible:
                    # Probing inside it is worth about as much as probing its built lower end.
                    continue
                choice, t_opt = self._unbuilt_in_stretch(v, kt, j, built)
                if choice is None:
                    continue
                optima.append((kt, j, t_opt, choice.score))
                round_best = max(round_best, choice.score)
                if best is None or choice.score > best.score:
                    best = choice
            # The rate rises while runs are cheap next to the build, then falls; two falls in a
            # row (or all stretches settled) means larger K cannot win.
            falling = falling + 1 if round_best < prev else 0
            prev = max(prev, round_best)
            if falling >= _FALLS or max(kt.f, default=0.0) < 1e-9:
                break
        return best, optima

    def _stabilised(
        self,
        v: _View,
        optima: list[tuple[_KTable, int, int, float]],
        threshold: float,
        built: set[int],
    ) -> _Choice | None:
        """Among unbuilt positions scoring >= threshold, the shallowest implicit-tree node."""
        best: tuple[int, float, int] | None = None
        for kt, j, t_opt, seg_best in optima:
            if seg_best < threshold:
                continue
            cost = self._probe_cost(kt.k, False)
            s, h = v.lo[j], min(v.hi[j], self._n - 2)
            t_opt = min(max(t_opt, s), h)

            def score(t: int, kt: _KTable = kt, j: int = j, cost: float = cost) -> float:
                return self._info(v, kt, j, t) / cost

            # Unimodal in t: binary-search both ends of the window above the threshold.
            centre = t_opt if score(t_opt) >= score(max(t_opt - 1, s)) else max(t_opt - 1, s)
            lo_edge, hi_in = s, centre
            while lo_edge < hi_in:
                mid = (lo_edge + hi_in) // 2
                if score(mid) >= threshold:
                    hi_in = mid
                else:
                    lo_edge = mid + 1
            lo_in, hi_edge = centre, h
            while lo_in < hi_edge:
                mid = (lo_in + hi_edge + 1) // 2
                if score(mid) >= threshold:
                    lo_in = mid
                else:
                    hi_edge = mid - 1
            for t in range(hi_in, lo_in + 1):
                if t in built or t in self._unusable:
                    continue
                depth = _tz(self._anchors[t])
                if best is not None and depth < best[0]:
                    continue
                sc = score(t)
                if sc < threshold:
                    continue
                key = (depth, sc, -t)
                if best is None or key > best:
                    best = key
        if best is None:
            return None
        return _Choice(-best[2], best[1], False)

    def _decide(self, v: _View, built: set[int]) -> tuple[_Choice | None, float | None]:
        """The probe position, and the rival rate of a new build if it stays valid once built.

        A built choice leaves the rival unchanged, so ``_runs_for`` can reuse it.
        """
        b_built = self._best_built(v, built)
        b_new, optima = self._best_unbuilt(v, built)
        top = max((c.score for c in (b_built, b_new) if c is not None), default=0.0)
        if top <= _MIN_INFO:
            return None, None
        threshold = (1.0 - _TIE_TOLERANCE) * top
        if b_built is not None and b_built.score >= threshold:
            return b_built, (0.0 if b_new is None else b_new.score)
        stable = self._stabilised(v, optima, threshold, built)
        return (b_new if stable is None else stable), None

    def _runs_for(self, t: int, rival_now: float | None) -> int:
        """How many runs the batch-at-a-time policy would spend at ``t`` if all missed.

        Doubling search over hypothetical all-miss futures, against the amortised rate of a new
        build (the rival, ``rival_now`` if the caller already knows today's).  Ending a probe
        early is harmless: ``next_step`` then re-decides.
        """
        built = self._built | {t}
        batch = self._batch

        def rival(v: _View) -> float:
            new, _ = self._best_unbuilt(v, built)
            return 0.0 if new is None else new.score

        def stays(v: _View, rival_score: float) -> bool:
            if self._answer(v).confidence >= self._confidence:
                return False
            mine = self._best_built(v, built)
            if mine is None or mine.index != t:
                return False
            return mine.score >= (1.0 - _TIE_TOLERANCE) * rival_score

        # Doubling with today's rival, then one rival at the point reached (mass concentrates as
        # misses pile up, so the rival only grows), then bisection with that rival.
        r0 = rival(self._view(t, 0)) if rival_now is None else rival_now
        good, bad = 0, 1
        while bad < _MAX_BATCHES and stays(self._view(t, bad * batch), r0):
            good, bad = bad, bad * 2
        if good:
            r1 = max(r0, rival(self._view(t, good * batch)))
            if not stays(self._view(t, good * batch), r1):
                good, bad = 0, good
        else:
            r1 = r0
        if bad >= _MAX_BATCHES:
            return batch * _MAX_BATCHES
        while bad - good > 1:
            mid = (good + bad) // 2
            if stays(self._view(t, mid * batch), r1):
                good = mid
            else:
                bad = mid
        return batch * (good + 1)

    def _holds(self, answer: Done, v: _View) -> bool:
        """The stopping rule: the answer holds the requested confidence. "No clean position
        in the range" is said only after a hit at the clean end, never on the prior alone."""
        return answer.confidence >= self._confidence and (
            answer.hi < self.n or v.floor >= self.n - 1
        )

    def best_answer(self) -> Done:
        """The most probable answer as the evidence stands, confident or not (a bisect
        that stopped early, or ended because nothing more could be learnt)."""
        return self._answer(self._view())

    def answered(self) -> Done | None:
        """The answer if the evidence so far gives it, without choosing a probe (cheap: a
        caller watching runs land, such as a round of parallel probes, asks often)."""
        v = self._view()
        answer = self._answer(v)
        return answer if self._holds(answer, v) else None

    def next_step(self, *, rate_probe: bool = True) -> Step:
        """Either the next probe, or the answer once it is confident (or nothing can be learnt).

        ``rate_probe=False``: never a probe at a known-racy commit (``_rate_probe``), for a
        caller that places that one apart (``propose_probes``).
        """
        v = self._view()
        answer = self._answer(v)
        if self._holds(answer, v):
            return answer
        choice, rival = self._decide(v, self._built)
        if choice is None:
            return answer
        if rate_probe and self._rate_probes:
            rate = self._rate_probe(v, choice.index)
            if rate is not None:
                return rate
        return Probe(choice.index, self._runs_for(choice.index, rival))

    # ------------------------------------------------------------ the rate's value

    def _finish_runs(self, t: int, racy_hits: int = 0, racy_misses: int = 0, hint: int = 1) -> int:
        """Runs at ``t``, all missing, until the answer holds: the cost to finish once only
        "``t`` is racy after all" stands against the answer.

        ``hint``: a guess (a neighbouring case's answer). The search gallops from it, so a
        close guess costs a few posteriors instead of two dozen.
        """
        target = self._confidence

        def holds(m: int) -> bool:
            return self._answer(self._view(t, m, racy_hits, racy_misses)).confidence >= target

        return _first_true(holds, max(1, min(hint, _MAX_BATCHES)), _MAX_BATCHES)

    def _rate_probe(self, v: _View, t: int) -> Probe | None:
        """Runs at the highest hit, to learn the rate, when they cost less than they save.

        The probe value (information about ``b``) gives runs at a known-racy commit none, yet
        at the end of a search they are often the cheapest way to finish: what is left is
        "the culprit ``t`` is racy after all, at a rate low enough to have missed", and misses
        at ``t`` rule that out slowly while the rate is vague (a quarter of the calibrated
        rate is in the prior). A few hits next to ``t`` make the rate sharp, and the misses
        at ``t`` then count for more. Compared by expected runs: runs at ``t`` alone until
        the answer holds, against the rate probe (stopped at its first hit, as every probe
        is) and then runs at ``t`` alone, for each of its outcomes.
        """
        f = v.floor
        nxt = self._usable_from(f + 1)
        # Only inside the range: the racy end's rate is the calibration's to measure, and
        # the rate next to the culprit is the one its misses are weighed against.
        if t != nxt or f < 1 or f not in self._built:
            return None
        now = self._finish_runs(t)
        if now <= 1:
            return None

        # Predictive of the first hit at f: E[(1-p)**i] over the posterior of p, which is
        # _ktable's all-miss chance weighed by each stretch's mass (its sf[0]).
        def miss_run(i: int) -> float:
            return self._ktable(v, i).sf[0]

        # Whole batches, as every probe runs (a batch of runs in parallel).
        ks = [self._batch << e for e in range(now.bit_length()) if self._batch << e <= now]
        if not ks:
            return None
        top_k = ks[-1]
        surv = [miss_run(i) for i in range(top_k + 1)]
        # Runs to finish after a first hit at run i: rises with i (more misses, a lower
        # rate), smoothly, so it is read at about 1.4x steps and interpolated between.
        grid = sorted({1, top_k, *(int(1.4**e) for e in range(40) if 1.4**e <= top_k)})
        at: dict[int, int] = {}
        guess = now
        for i in grid:  # rises with i: each guess is the last answer
            at[i] = guess = self._finish_runs(t, 1, i - 1, hint=guess)
        after_hit = [0.0] * (top_k + 1)
        for lo_i, hi_i in itertools.pairwise(grid):
            for i in range(lo_i, hi_i + 1):
                share = (i - lo_i) / (hi_i - lo_i)
                after_hit[i] = at[lo_i] + share * (at[hi_i] - at[lo_i])
        after_hit[1] = at[1]
        best_k, best_cost = 0, float(now)
        guess = now
        for k in ks:
            cost = 0.0
            for i in range(1, k + 1):
                cost += (surv[i - 1] - surv[i]) * (i + after_hit[i])
            guess = self._finish_runs(t, 0, k, hint=guess)
            cost += surv[k] * (k + guess)
            if cost < best_cost - 0.5:
                best_k, best_cost = k, cost
        if best_k == 0:
            return None
        return Probe(f, best_k, for_rate=True)
