"""Inline SVG charts for the HTML report: the bisect at a glance, and a stress run over time.

Hand-written SVG rather than a plotting library: the report must be one file that
opens offline, the charts are simple, and exact text output keeps reports of the
same run directory byte-identical. Every mark carries a ``<title>`` so a reader
can hover for the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from repro.report.fmt import plural

COLORS = {
    "target": "#d1242f",
    "other": "#e36209",
    "clean": "#2da44e",
    "failed": "#8c959f",
    "not counted": "#bf8700",
    "culprit": "#fff3b0",
    "axis": "#57606a",
    "rate": "#0969da",
}
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\""


def _n(x: float) -> str:
    """Coordinates with one decimal: enough for screens, stable as text."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(s)}</text>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str | None = None) -> str:
    body = f"<title>{escape(title)}</title>" if title else ""
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}" height="{_n(max(h, 0.0))}" '
        f'fill="{fill}">{body}</rect>'
    )


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for label, color in items:
        out.append(_rect(x, y - 9, 10, 10, color))
        out.append(_text(x + 14, y, label, 11))
        x += 24 + 6.0 * len(label)
    return out


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px" role="img" aria-label="{escape(label)}" '
        f"{FONT}>\n<title>{escape(label)}</title>\n" + "\n".join(body) + "\n</svg>"
    )


# Text widths are estimated, not measured (no fonts at report time): this share of the
# font size per character is on the wide side for sans-serif hex and digits.
CHAR_WIDTH = 0.64
LABEL_ROWS = 4
LABEL_ROW_H = 14
LABEL_GAP = 6.0
# How far a label may move sideways from its commit, on a leader line.
MAX_SHIFT = 260.0


def text_width(s: str, size: float, bold: bool = False) -> float:
    return len(s) * size * (CHAR_WIDTH + (0.04 if bold else 0.0))


def log_ticks(top: int) -> list[int]:
    """Tick values for a log1p axis up to ``top``: 0, then 1-2-5 steps (1, 2, 5, 10,
    20, ...), or powers of ten when those would be more than seven."""
    steps = [m * 10**e for e in range(7) for m in (1, 2, 5)]
    ticks = [v for v in steps if v <= top]
    if len(ticks) > 7:
        ticks = [v for v in ticks if str(v).startswith("1")]
    return [0, *ticks]


def _shown(c: Mapping[str, Any]) -> bool:
    return bool(c.get("tested") or c.get("end") or c.get("culprit"))


def commit_slots(commits: Sequence[Mapping[str, Any]], plot_w: float) -> list[float]:
    """The width each commit gets on the x axis.

    Equal widths put a bisect's last probes, next to the culprit, a few pixels apart
    on a range of hundreds of commits. So tested commits (and the ends) get room for
    their label, up to 70 px each and 80% of the plot together, and the untested
    stretches between them share the rest: order is kept, distances are not.
    """
    n = len(commits)
    if n == 0:
        return []
    uniform = plot_w / n
    k = sum(1 for c in commits if _shown(c))
    if k == 0 or k == n or uniform >= 40:
        return [uniform] * n
    wide = min(70.0, 0.8 * plot_w / k)
    narrow = (plot_w - k * wide) / (n - k)
    if narrow >= wide or wide <= uniform:
        return [uniform] * n
    return [wide if _shown(c) else narrow for c in commits]


def _squeezed_stretches(
    commits: Sequence[Mapping[str, Any]],
    starts: Sequence[float],
    slots: Sequence[float],
    axis_y: float,
) -> list[str]:
    """A grey band on the axis for each run of untested commits, with its count."""
    out: list[str] = []
    i = 0
    while i < len(commits):
        if _shown(commits[i]):
            i += 1
            continue
        j = i
        while j < len(commits) and not _shown(commits[j]):
            j += 1
        w = starts[j - 1] + slots[j - 1] - starts[i]
        word = "commit" if j - i == 1 else "commits"
        out.append(_rect(starts[i], axis_y - 3, w, 6, "#d0d7de", f"{j - i} untested {word}"))
        i = j
    return out


def _center(commits: Sequence[Mapping[str, Any]]) -> int:
    """Where the answer is: the culprit, else the boundary between the last racy and
    the first clean tested commit, else the middle."""
    for i, c in enumerate(commits):
        if c.get("culprit"):
            return i
    racy = [i for i, c in enumerate(commits) if c.get("verdict") == "racy"]
    clean = [i for i, c in enumerate(commits) if c.get("tested") and c.get("verdict") != "racy"]
    if racy and clean:
        return (max(racy) + min(clean)) // 2
    return len(commits) // 2


def layout_labels(
    wanted: Sequence[tuple[int, float, float]], lo: float, hi: float
) -> dict[int, tuple[int, float]]:
    """Place labels in rows under the axis without overlaps.

    ``wanted`` is (key, x of the commit, label width), most important first; the
    result maps each placed key to (row, x of the label's centre). Each label takes
    the free spot nearest its commit, a lower row costing like a small sideways move,
    at most MAX_SHIFT away; one that fits nowhere is left out (its bar keeps a
    tooltip). Pure, so that the test can check the same layout the chart draws.
    """
    rows: list[list[tuple[float, float]]] = [[] for _ in range(LABEL_ROWS)]
    placed: dict[int, tuple[int, float]] = {}
    for key, cx, w in wanted:
        best: tuple[float, int, float] | None = None
        for r, row in enumerate(rows):
            candidates = [cx]
            for a, b in row:
                candidates += [b + LABEL_GAP + w / 2, a - LABEL_GAP - w / 2]
            for x in candidates:
                x = min(max(x, lo + w / 2), hi - w / 2)
                if abs(x - cx) > MAX_SHIFT:
                    continue
                if any(x - w / 2 < b + LABEL_GAP and x + w / 2 > a - LABEL_GAP for a, b in row):
                    continue
                cost = abs(x - cx) + 18 * r
                if best is None or cost < best[0]:
                    best = (cost, r, x)
        if best is not None:
            _, r, x = best
            rows[r].append((x - w / 2, x + w / 2))
            placed[key] = (r, x)
    return placed


def bisect_chart(bisect: Mapping[str, Any]) -> str:
    """Commits oldest to newest; per tested commit its runs (bar), hits (red part),
    verdict (marker) and the culprit (highlighted).

    A bisect's last probes sit next to the culprit, a few pixels apart, so labels are
    laid out in rows with leader lines (layout_labels): the culprit first, then the
    two ends, then tested commits nearest the culprit outwards.
    """
    commits: list[Mapping[str, Any]] = list(bisect.get("commits") or [])
    width, left, right = 960, 50, 20
    top, bar_h = 56, 150
    axis_y = top + bar_h
    label_top = axis_y + 24
    plot_w = width - left - right
    slots = commit_slots(commits, float(plot_w))
    max_runs = max([int(c.get("runs", 0)) + int(c.get("failed_runs", 0)) for c in commits] + [1])
    scale = bar_h / math.log1p(max_runs)
    word = "release" if bisect.get("side") == "versions" else "commit"
    title = f"Bisect over {len(commits)} {word}s, oldest first: runs and hits per tested {word}"
    squeezed = len(set(slots)) > 1
    if squeezed:
        title += " (untested stretches squeezed)"
    body: list[str] = [_text(left, 16, title, 13, font_weight="600")]
    body += _legend(
        left,
        36,
        [
            ("runs with the target race", COLORS["target"]),
            ("runs without it", COLORS["clean"]),
            ("failed runs", COLORS["failed"]),
            ("culprit", "#e3b600"),
        ],
    )
    # The verdict markers drawn under the axis, explained at the right of the legend.
    mx = width - right - 250
    body += [
        f'<circle cx="{mx}" cy="32" r="5" fill="{COLORS["target"]}"/>',
        _text(mx + 9, 36, "racy", 11),
        f'<circle cx="{mx + 52}" cy="32" r="5" fill="none" stroke="{COLORS["clean"]}" '
        'stroke-width="2"/>',
        _text(mx + 61, 36, "no hit", 11),
        f'<path d="M{mx + 110} 28L{mx + 118} 36M{mx + 118} 28L{mx + 110} 36" '
        f'stroke="{COLORS["failed"]}" stroke-width="2"/>',
        _text(mx + 123, 36, "skipped (untestable)", 11),
    ]
    starts = [left + sum(slots[:i]) for i in range(len(commits))]
    xs = [x0 + w / 2 for x0, w in zip(starts, slots, strict=True)]
    if squeezed:
        body += _squeezed_stretches(commits, starts, slots, axis_y)
    for i, c in enumerate(commits):
        cx = xs[i]
        slot = slots[i]
        bar_w = max(2.0, min(28.0, slot * 0.7))
        label = str(c.get("label") or "")
        if c.get("culprit"):
            body.append(
                _rect(
                    cx - max(slot, 6.0) / 2,
                    top - 4,
                    max(slot, 6.0),
                    bar_h + 22,
                    COLORS["culprit"],
                    f"culprit {label}",
                )
            )
        runs = int(c.get("runs", 0))
        hits = int(c.get("hits", 0))
        failed = int(c.get("failed_runs", 0))
        total = runs + failed
        tip = (
            f"{label} {c.get('subject') or ''}\n{plural(hits, 'hit')} in {plural(runs, 'run')}"
            + (f", {plural(failed, 'failed run')}" if failed else "")
            + f"\nverdict: {c.get('verdict') or 'not tested'}"
        )
        if total:
            h_total = math.log1p(total) * scale
            y = axis_y - h_total
            parts = [
                (hits, COLORS["target"]),
                (runs - hits, COLORS["clean"]),
                (failed, COLORS["failed"]),
            ]
            for count, color in parts:
                if count <= 0:
                    continue
                h = h_total * count / total
                body.append(_rect(cx - bar_w / 2, y, bar_w, h, color, tip))
                y += h
            count_text = f"{hits}/{runs}"
            if text_width(count_text, 9) <= slot - 4:
                body.append(_text(cx, axis_y - h_total - 4, count_text, 9, "middle"))
        # The verdict marker under the axis.
        my = axis_y + 12
        verdict = str(c.get("verdict") or "")
        if verdict == "racy":
            body.append(
                f'<circle cx="{_n(cx)}" cy="{_n(my)}" r="5" fill="{COLORS["target"]}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        elif verdict == "skipped":
            body.append(
                f'<path d="M{_n(cx - 4)} {_n(my - 4)}L{_n(cx + 4)} {_n(my + 4)}M{_n(cx + 4)} '
                f'{_n(my - 4)}L{_n(cx - 4)} {_n(my + 4)}" stroke="{COLORS["failed"]}" '
                f'stroke-width="2"><title>{escape(tip)}</title></path>'
            )
        elif c.get("tested") and (runs or verdict.startswith("clean")):
            body.append(
                f'<circle cx="{_n(cx)}" cy="{_n(my)}" r="5" fill="none" '
                f'stroke="{COLORS["clean"]}" stroke-width="2"><title>{escape(tip)}</title></circle>'
            )
        elif slot >= 3:
            body.append(
                f'<line x1="{_n(cx)}" y1="{_n(axis_y)}" x2="{_n(cx)}" y2="{_n(axis_y + 4)}" '
                f'stroke="{COLORS["axis"]}"/>'
            )
    labels, rows_used = _commit_labels(commits, xs, label_top, float(left), float(width - right))
    body += labels
    height = label_top + max(1, rows_used) * LABEL_ROW_H + 24
    body.append(
        f'<line x1="{left}" y1="{_n(axis_y)}" x2="{width - right}" y2="{_n(axis_y)}" '
        f'stroke="{COLORS["axis"]}"/>'
    )
    last_y = math.inf
    for runs_tick in log_ticks(max_runs):
        y = axis_y - math.log1p(runs_tick) * scale
        if last_y - y < 11:  # too close to the tick below to be read
            continue
        last_y = y
        body.append(
            f'<line x1="{left - 4}" y1="{_n(y)}" x2="{left}" y2="{_n(y)}" '
            f'stroke="{COLORS["axis"]}"/>'
        )
        body.append(_text(left - 6, y + 3, str(runs_tick), 9, "end"))
    body.append(
        _text(
            12,
            top + bar_h / 2,
            "runs (log scale)",
            10,
            "middle",
            transform=f"rotate(-90 12 {_n(top + bar_h / 2)})",
        )
    )
    body.append(_text(left, height - 6, "\u2190 oldest", 10))
    body.append(_text(width - right, height - 6, "newest \u2192", 10, "end"))
    culprit = bisect.get("culprit")
    if culprit:
        verb = "fixed by" if bisect.get("direction") == "fix" else "introduced by"
        body.append(
            _text(
                width / 2,
                height - 6,
                f"{verb} {culprit.get('label')}",
                11,
                "middle",
                font_weight="700",
            )
        )
    return _svg(width, height, title, body)


def _commit_labels(
    commits: Sequence[Mapping[str, Any]], xs: Sequence[float], y0: float, lo: float, hi: float
) -> tuple[list[str], int]:
    """The commit labels under the axis, each joined to its commit by a leader line,
    and the number of label rows used."""
    center = _center(commits)
    n = len(commits)
    every = 1 if n <= 40 else 0

    def rank(i: int) -> tuple[int, int]:
        c = commits[i]
        first = 0 if c.get("culprit") else 1 if c.get("end") else 2 if c.get("tested") else 3
        return (first, abs(i - center))

    keys = [i for i, c in enumerate(commits) if _shown(c) or every]
    keys.sort(key=rank)
    sizes = {i: (10.0, bool(commits[i].get("culprit"))) for i in keys}
    wanted = [
        (i, xs[i], text_width(str(commits[i].get("label") or ""), *sizes[i]) + 2) for i in keys
    ]
    placed = layout_labels(wanted, lo, hi)
    lines: list[str] = []
    texts: list[str] = []
    for i in sorted(placed):
        row, x = placed[i]
        c = commits[i]
        ly = y0 + row * LABEL_ROW_H + 10
        lines.append(
            f'<line x1="{_n(xs[i])}" y1="{_n(y0 - 5)}" x2="{_n(x)}" y2="{_n(ly - 10)}" '
            f'stroke="#afb8c1" stroke-width="0.8"/>'
        )
        # A white halo hides the leader lines of lower rows where they pass behind.
        extra = {"stroke": "#fff", "stroke_width": "3", "paint_order": "stroke"}
        if c.get("culprit"):
            extra["font_weight"] = "700"
        texts.append(_text(x, ly, str(c.get("label") or ""), 10, "middle", **extra))
    rows_used = 1 + max((row for row, _ in placed.values()), default=0)
    return lines + texts, rows_used


def stress_chart(
    buckets: Sequence[Mapping[str, Any]],
    label: str = "runs",
    rate_line: bool = True,
    end_note: str | None = None,
) -> str:
    """Outcomes in run order (stacked bars) and the reproduction rate so far (line).

    The rate line only means something when every run tested the same build, so a
    bisect's runs (many commits) are drawn without it.
    """
    n = max(1, len(buckets))
    width, left, right, top, plot_h = 960, 50, 50, 46, 150
    axis_y = top + plot_h
    height = axis_y + 40
    plot_w = width - left - right
    slot = plot_w / n
    bar_w = max(2.0, slot * 0.8)
    max_total = max([sum(int(v) for v in b["outcomes"].values()) for b in buckets] + [1])
    total_runs = int(buckets[-1]["last"]) if buckets else 0
    title = f"Outcomes of {total_runs} {label} in the order they ran"
    if rate_line:
        title += ", and the rate so far"
    body: list[str] = [_text(left, 16, title, 13, font_weight="600")]
    body += _legend(
        left,
        34,
        [
            ("target race", COLORS["target"]),
            ("other races only", COLORS["other"]),
            ("clean", COLORS["clean"]),
            ("crash, timeout, TSAN failure", COLORS["failed"]),
            ("not counted (incomplete, ...)", COLORS["not counted"]),
            *([("rate so far", COLORS["rate"])] if rate_line else []),
        ],
    )
    points = []
    for i, b in enumerate(buckets):
        x = left + slot * i + (slot - bar_w) / 2
        oc = b["outcomes"]
        failed = sum(int(oc.get(k, 0)) for k in ("crash", "timeout", "tsan-failure"))
        parts = [
            ("target", int(oc.get("target", 0))),
            ("other", int(oc.get("other", 0))),
            ("clean", int(oc.get("clean", 0))),
            ("failed", failed),
        ]
        # The runs that cannot count (incomplete, unsymbolized, no test, GIL on, source
        # tree): every run has its bar, as the title's count says (19 said, 18 drawn).
        parts.append(("not counted", sum(int(v) for v in oc.values()) - sum(c for _, c in parts)))
        span = f"runs {b['first']}-{b['last']}" if b["first"] != b["last"] else f"run {b['first']}"
        tip = f"{span}: " + ", ".join(f"{k} {v}" for k, v in parts if v)
        y = float(axis_y)
        for name, count in parts:
            if count <= 0:
                continue
            h = plot_h * count / max_total
            y -= h
            body.append(_rect(x, y, bar_w, h, COLORS[name], tip))
        r = b.get("rate_so_far")
        if r is not None and rate_line:
            points.append((left + slot * (i + 0.5), axis_y - plot_h * float(r)))
    if points:
        d = " ".join(f"{'M' if k == 0 else 'L'}{_n(x)} {_n(y)}" for k, (x, y) in enumerate(points))
        body.append(f'<path d="{d}" fill="none" stroke="{COLORS["rate"]}" stroke-width="2"/>')
    body.append(
        f'<line x1="{left}" y1="{_n(axis_y)}" x2="{width - right}" y2="{_n(axis_y)}" '
        f'stroke="{COLORS["axis"]}"/>'
    )
    for frac in (0.0, 0.5, 1.0) if rate_line else ():
        fy = axis_y - plot_h * frac
        body.append(_text(width - right + 4, fy + 3, f"{frac:.0%}", 9))
    body.append(_text(left - 6, top + 3, str(max_total), 9, "end"))
    body.append(_text(left - 6, axis_y + 3, "0", 9, "end"))
    body.append(_text(left, height - 10, "run 1", 10))
    last = f"run {total_runs}" + (f" ({end_note})" if end_note else "")
    body.append(_text(width - right, height - 10, last, 10, "end"))
    return _svg(width, height, title, body)
