"""The bisect's per-position rows, from the fold: one table for the console, the
summary, ``--json-out`` and the reports. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repro.runlog.fold import PositionRecord, Record, step_verdict
from repro.strategy.terms import Terms


def p_clean_at(posterior: Sequence[float] | None, pos: int) -> float | None:
    """Probability that position ``pos`` is clean: the first clean one is at or before it."""
    if posterior is None:
        return None
    return float(sum(posterior[1 : pos + 1]))


def position_rows(
    record: Record,
    positions: Sequence[Mapping[str, Any]],
    terms: Terms,
    posterior: Sequence[float] | None = None,
    culprit_ids: frozenset[str] = frozenset(),
    verdicts: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Every position, oldest first, with what was measured there.

    ``verdicts`` are the ones a finished bisect stored (with the strategy's
    probabilities); without them the verdict is described from the runs alone.
    """
    n = len(positions)
    rows = []
    for order, pos in enumerate(terms.history_positions(n)):
        p = positions[pos]
        info = p.get("info") or {}
        rec = record.positions.get(pos) or PositionRecord()
        c = rec.counts
        if verdicts is not None and pos in verdicts:
            verdict = verdicts[pos]
        else:
            verdict = step_verdict(rec, pos == n - 1, p_clean_at(posterior, pos))
        rows.append(
            {
                "order": order,
                "pos": pos,
                "id": p.get("id"),
                "label": p.get("label"),
                "subject": info.get("subject"),
                "author": info.get("author"),
                "date": info.get("date"),
                "url": info.get("url"),
                "tested": rec.tested,
                "built": rec.built,
                "cached": rec.cached,
                "build_seconds": round(rec.build_seconds, 1),
                "build_error": rec.build_error,
                "build_log": rec.build_log,
                "backend": rec.backend,
                "unusable": rec.unusable,
                "runs": c.evidence,
                "all_runs": c.runs,
                "hits": c.hits,
                "other_races": record.distinct_races(rec.other_signatures),
                "runs_with_other_races": rec.runs_with_other,
                "failed_runs": c.failed,
                "invalid_runs": c.invalid,
                "outcomes": {o.value: k for o, k in c.outcomes.items() if k},
                "phases": sorted(rec.phases),
                "verdict": verdict,
                "end": "racy end" if pos == 0 else ("clean end" if pos == n - 1 else None),
                "culprit": str(p.get("id")) in culprit_ids,
            }
        )
    return rows
