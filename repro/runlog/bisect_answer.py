"""A bisect's belief and answer, from its log alone. Pure.

The strategy's posterior does not depend on the order of the runs, so the strategy a
finished (or killed) bisect held is the one its log makes: the settings of its
``strategy`` event and every run of the search, as the fold counted them. The live
bisect and every report ask this module, so that the culprit, the confidence, the
step verdicts and the bound are one computation, not a live one and a stored copy
(a bisect killed between its last run and its summary left a report that said
"not found yet" of an answer at 85%).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from repro.runlog.events import StrategyEvent
from repro.runlog.fold import Record
from repro.strategy.bisect import Bisector, Done
from repro.strategy.information import culprit_bound, fano_bound
from repro.strategy.proposals import provisional_bisector
from repro.strategy.terms import Terms


def strategy_from(
    record: Record, n: int, calib_hits: int, calib_runs: int, **options: Any
) -> Bisector:
    """The strategy from everything measured so far: the builds, the unusable commits
    and the search's runs all count, as if they had come after the calibration."""
    counts: dict[int, tuple[int, int]] = {}
    built, unusable = [], []
    for pos, st in record.positions.items():
        if pos == 0:
            continue
        if st.bisect_runs:
            hits = sum(st.bisect_runs)
            counts[pos] = (hits, len(st.bisect_runs) - hits)
        interior = 0 < pos < n - 1
        if st.built and interior:
            built.append(pos)
        if st.unusable and interior:
            unusable.append(pos)
    return provisional_bisector(n, calib_hits, calib_runs, counts, built, unusable, **options)


def options_of(ev: StrategyEvent) -> dict[str, Any]:
    return {
        "confidence": ev.confidence,
        "build_cost": ev.build_cost,
        "run_cost": ev.run_cost,
        "batch": ev.batch,
        "anchors": list(ev.anchors) if ev.anchors is not None else None,
        "clean_end_racy": ev.clean_end_racy,
    }


def replayed(record: Record, n: int) -> Bisector | None:
    """The strategy as the log leaves it; None before the calibration ended."""
    ev = record.strategy
    if ev is None or n < 2:
        return None
    return strategy_from(record, n, ev.calib_hits, ev.calib_runs, **options_of(ev))


def bound(bisector: Bisector, n: int, confidence: float) -> tuple[float, float, float]:
    """(rate, Fano's bound, the floor at the answer) as the evidence stands."""
    rate = bisector.rate_estimate()
    candidates = max(1, n - 1)
    delta = 1.0 - float(confidence)
    return rate, fano_bound(candidates, rate, delta), culprit_bound(candidates, rate, delta)


# A race seen on the answer's clean side and never on its racy side is named when, at the
# rate it shows at, so many racy-side runs would all have missed it less often than this.
UNSEEN_CHANCE = 0.01


@dataclass(frozen=True)
class Blame:
    """What an answer names, as every output states it."""

    culprit: dict[str, Any] | None
    culprit_range: list[dict[str, Any]] | None
    ids: frozenset[str]
    # Other races that begin where the target ends (``begun_at_answer``).
    begun: tuple[dict[str, Any], ...] = ()


def begun_at_answer(record: Record, first_clean: int) -> tuple[dict[str, Any], ...]:
    """Other races seen at the answer's clean commit that no racy commit ever showed.

    When a commit renames or moves the racing code (a function renamed, a body split),
    the target's signature stops matching there and that commit reads as the fix, while
    the same race goes on under another name, as "another race" that begins at that
    very commit. A race is named when it shows at the clean commit next to the answer,
    never in the racy side's runs, and those runs were enough that, at the rate it
    shows on the clean side, all of them missing it has a chance under
    ``UNSEEN_CHANCE``. A fix that brings a new race of its own is named too: the
    user's look tells them apart, the counts cannot.
    """
    at = record.positions.get(first_clean)
    if at is None or not at.other_runs:
        return ()
    racy = [p for pos, p in record.positions.items() if pos < first_clean]
    clean = [p for pos, p in record.positions.items() if pos >= first_clean]
    racy_runs = sum(p.counts.evidence for p in racy)
    clean_runs = sum(p.counts.evidence for p in clean)
    # A report with a lost stack ("? | f") is the whole race it is part of, seen or not on
    # the racy side (sweep 15 was warned of one that its own stress saw at the racy end);
    # one with no whole race to be is no name for anything, and is left out.
    same = record.same_races()
    seen_racy = {same.get(sid, sid) for p in racy for sid in p.other_runs}
    # A target whose race starts in the extension's code is not renamed into a race of
    # CPython's own code: the fix that moved multidict onto PyList_GetItemRef brought one
    # (new_reference), and it was warned of as the target under another name.
    in_extension = any(
        s.entry.target and not s.entry.inside_cpython for s in record.signatures.values()
    )
    out = []
    for sid in sorted(at.other_runs):
        stats = record.signatures.get(sid)
        partial = stats is not None and not all(stats.entry.top_frames)
        if same.get(sid, sid) in seen_racy or partial or clean_runs == 0:
            continue
        if in_extension and stats is not None and stats.entry.inside_cpython:
            continue
        seen = sum(p.other_runs.get(sid, 0) for p in clean)
        rate = min(1.0, seen / clean_runs)
        if racy_runs == 0 or (1.0 - rate) ** racy_runs >= UNSEEN_CHANCE:
            continue
        out.append(
            {
                "signature": sid,
                "description": stats.entry.description if stats is not None else sid,
                "clean_side_runs": clean_runs,
                "seen_in": seen,
                "racy_side_runs": racy_runs,
            }
        )
    return tuple(out)


def blame(
    done: Done, positions: Sequence[Mapping[str, Any]], terms: Terms, record: Record
) -> Blame:
    """The commit (or the range of untestable ones) an answer ``done`` names."""
    lo, hi = terms.culprit_positions(done.lo, done.hi)
    picked = list(range(min(lo, hi), max(lo, hi) + 1))
    blamed = [positions[k] for k in picked]
    ids = frozenset(str(p.get("id")) for p in blamed)
    begun = begun_at_answer(record, done.hi)
    if len(blamed) > 1:
        rng = [
            {
                "id": p.get("id"),
                "label": p.get("label"),
                "subject": (p.get("info") or {}).get("subject"),
                "unusable": record.positions[k].unusable if k in record.positions else None,
            }
            for k, p in zip(picked, blamed, strict=True)
        ]
        return Blame(None, rng, ids, begun)
    first = blamed[0]
    info = first.get("info") or {}
    culprit = {
        "sha": info.get("sha"),
        "id": first.get("id"),
        "label": first.get("label"),
        **{k: info.get(k) for k in ("subject", "author", "date", "url", "version")},
    }
    return Blame(culprit, None, ids, begun)


def information(
    bisector: Bisector,
    record: Record,
    positions: Sequence[Mapping[str, Any]],
    terms: Terms,
    confidence: float,
    done: Done | None,
) -> dict[str, Any]:
    """The runs against the bound; with an answer of one commit, the runs at it
    against the least any bisect must spend there."""
    n = len(positions)
    bisect_runs = sum(len(p.bisect_runs) for p in record.positions.values())
    rate, fano, floor = bound(bisector, n, confidence)
    out: dict[str, Any] = {
        "bisect_runs": bisect_runs,
        "bound_runs": round(fano, 4),  # floored where it is said (floor_runs)
        "ratio": round(bisect_runs / fano, 2) if fano > 0 else None,
        "rate_estimate": rate,
    }
    if done is not None and done.lo == done.hi and done.lo < n:
        at = record.positions.get(done.lo)
        out["at_answer"] = {
            "commit": positions[done.lo].get("label"),
            "role": f"{terms.answer_clean_word} {terms.unit}",
            "runs": len(at.bisect_runs) if at is not None else 0,
            "floor_runs": round(floor, 4),
        }
    return out
