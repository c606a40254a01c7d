"""The summary table of a report, built once for every format.

Markdown and HTML once built these rows apart and drifted (one said "runs", the other
"evidence runs"); now each row is a label and a list of parts that say what they are
(plain text, a code span, a commit reference, a link), and each format only renders
parts. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.report import fmt


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Commit:
    """A commit (or release) label, linked when its URL is known."""

    label: str
    url: str | None = None


@dataclass(frozen=True)
class Link:
    url: str


Part = Text | Code | Commit | Link


@dataclass(frozen=True)
class Row:
    label: str
    parts: tuple[Part, ...]
    strong: bool = False  # the row that answers the question


def _commit(c: Mapping[str, Any]) -> Commit:
    return Commit(str(c.get("label") or c.get("id")), c.get("url"))


def _joined(items: Sequence[Part], sep: str = ", ") -> list[Part]:
    out: list[Part] = []
    for k, item in enumerate(items):
        if k:
            out.append(Text(sep))
        out.append(item)
    return out


def summary_rows(doc: Mapping[str, Any]) -> list[Row]:
    s = doc["summary"]
    b = doc.get("bisect")
    rows = _stress_rows(doc, s) if b is None else _bisect_rows(b, s)
    # over the whole record: a bisect's summary is its racy end's, all_runs is the whole
    hidden = fmt.suppressed_text(s.get("suppressed"), int(s.get("all_runs", s.get("runs")) or 0))
    if hidden:
        rows.append(Row("Suppressed", (Text(hidden),)))
    return rows


def _bisect_rows(b: Mapping[str, Any], s: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    c = b.get("culprit")
    candidates = b.get("culprit_range") or []
    label = fmt.culprit_label(b)
    if not c and len(candidates) > 1:
        rows.append(
            Row(
                label,
                (
                    Text(f"one of {len(candidates)}: "),
                    *_joined([_commit(x) for x in candidates]),
                    Text(
                        " (no single commit can be named: "
                        + (
                            "one of them could not be tested)"
                            if len(candidates) == 2
                            else f"{len(candidates) - 1} of them could not be tested)"
                        )
                    ),
                ),
                strong=True,
            )
        )
        if b.get("confidence") is not None:
            rows.append(Row("Confidence", (Text(fmt.confidence(b)),)))
    if c:
        rows.append(Row(label, (_commit(c), Text(" " + str(c.get("subject") or ""))), True))
        if len(candidates) > 1:
            rows.append(
                Row(
                    "Candidates",
                    (
                        *_joined([Code(str(x.get("label"))) for x in candidates]),
                        Text(" (the commits between could not be tested)"),
                    ),
                )
            )
        if b.get("merged"):
            rows.append(Row("Merge", (Text(fmt.merge_text(b["merged"])),)))
        begun = list(b.get("begun_at_answer") or ())
        unit = "release" if b.get("side") == "versions" else "commit"
        find = str(b.get("direction") or "fix")
        for race in begun:
            rows.append(Row("Warning", (Text(fmt.begun_text(race, find, unit)),)))
        if begun:
            rows.append(Row("Warning", (Text(fmt.begun_advice(len(begun), find, unit)),)))
        rows.append(Row("Author", (Text(str(c.get("author") or "")),)))
        rows.append(Row("Date", (Text(str(c.get("date") or "")),)))
        if c.get("url"):
            rows.append(Row("Link", (Link(str(c["url"])),)))
        rows.append(Row("Confidence", (Text(fmt.confidence(b)),)))
    elif b.get("failure"):
        rows.append(Row("Bisect failed", (Text(str(b["failure"])),), strong=True))
    elif len(candidates) <= 1:
        rows.append(Row("Culprit", (Text(fmt.not_found(b)),)))
    ce = b.get("clean_end") or {}
    ce_runs = ce.get("evidence_runs", ce.get("runs", 0))
    fixed = b.get("direction") == "fix"
    reused = b.get("calibration_from")
    rate_text = fmt.rate(s)
    if reused:
        rate_text += (
            f" ({reused.get('runs')} of them from the stress record "
            f"{Path(str(reused.get('path'))).name})"
        )
    rows.append(Row("Rate at the racy end", (Text(rate_text),)))
    end_text = f"{fmt.plural(ce.get('hits', 0), 'hit')} in {fmt.plural(ce_runs, 'run')}"
    if not ce_runs and not ce.get("hits") and not (b.get("culprit") or b.get("culprit_range")):
        end_text = "not run"
    elif not ce_runs and not ce.get("hits"):
        # Checked inside the search: the misses that confirm the answer rule out a racy end.
        end_text = "not run: the runs at the answer rule out a racy end too"
    rows.append(Row(f"{'Fixed' if fixed else 'Clean'} end", (Text(end_text),)))
    rows.append(Row("Time to first hit", (Text(fmt.first_hit(s)),)))
    rows.append(
        Row(
            "Range",
            (
                Code(str(b.get("racy"))),
                Text(" (racy) .. "),
                Code(str(b.get("clean"))),
                Text(
                    f" ({'fixed' if fixed else 'clean'}), "
                    f"{b.get('positions')} {fmt.commit_word(b)}s"
                ),
            ),
        )
    )
    rows.append(Row("Cost", (Text(fmt.cost(b)),)))
    info = b.get("information") or {}
    if info.get("bound_runs"):
        rows.append(
            Row(
                "Runs against the bound",
                (
                    Text(
                        fmt.against_bound(info)
                        + (f"; {fmt.at_answer(info['at_answer'])}" if info.get("at_answer") else "")
                    ),
                ),
            )
        )
    return rows


def _stress_rows(doc: Mapping[str, Any], s: Mapping[str, Any]) -> list[Row]:
    rows = [
        Row("Reproduction rate", (Text(fmt.rate(s)),), strong=True),
        Row("Outcomes", (Text(fmt.outcomes(s.get("outcomes") or {})),)),
        Row("Time to first hit", (Text(fmt.first_hit(s)),)),
    ]
    tested = (doc.get("run") or {}).get("tested")
    if tested:
        rows.append(Row("Tested commit", (Code(str(tested.get("sha"))),)))
    rows.append(
        Row(
            "Run time",
            (
                Text(
                    f"{fmt.seconds(s.get('elapsed_seconds'))} with {s.get('jobs') or 1} "
                    f"job{'s' if (s.get('jobs') or 1) != 1 else ''} at once, "
                    f"{fmt.seconds(s.get('mean_run_seconds'))} per run"
                ),
            ),
        )
    )
    return rows
