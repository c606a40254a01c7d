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

COLORS = {
    "target": "#d1242f",
    "other": "#e36209",
    "clean": "#2da44e",
    "failed": "#8c959f",
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


def bisect_chart(bisect: Mapping[str, Any]) -> str:
    """Commits oldest to newest; per tested commit its runs (bar), hits (red part),
    verdict (marker) and the culprit (highlighted)."""
    commits: list[Mapping[str, Any]] = list(bisect.get("commits") or [])
    n = max(1, len(commits))
    width, left, right = 960, 50, 20
    top, bar_h = 46, 150
    axis_y = top + bar_h
    label_every = 1 if n <= 40 else math.ceil(n / 40)
    height = axis_y + 130
    plot_w = width - left - right
    slot = plot_w / n
    bar_w = max(2.0, min(28.0, slot * 0.7))
    max_runs = max([int(c.get("runs", 0)) + int(c.get("failed_runs", 0)) for c in commits] + [1])
    scale = bar_h / math.log1p(max_runs)
    word = "release" if bisect.get("side") == "versions" else "commit"
    title = f"Bisect over {len(commits)} {word}s, oldest first: runs and hits per tested {word}"
    body: list[str] = [_text(left, 16, title, 13, font_weight="600")]
    body += _legend(
        left,
        34,
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
        f'<circle cx="{mx}" cy="30" r="5" fill="{COLORS["target"]}"/>',
        _text(mx + 9, 34, "racy", 11),
        f'<circle cx="{mx + 52}" cy="30" r="5" fill="none" stroke="{COLORS["clean"]}" '
        'stroke-width="2"/>',
        _text(mx + 61, 34, "no hit", 11),
        f'<path d="M{mx + 110} 26L{mx + 118} 34M{mx + 118} 26L{mx + 110} 34" '
        f'stroke="{COLORS["failed"]}" stroke-width="2"/>',
        _text(mx + 123, 34, "skipped (untestable)", 11),
    ]
    for i, c in enumerate(commits):
        cx = left + slot * (i + 0.5)
        label = str(c.get("label") or "")
        if c.get("culprit"):
            body.append(
                _rect(
                    left + slot * i,
                    top - 4,
                    slot,
                    bar_h + 30,
                    COLORS["culprit"],
                    f"culprit {label}",
                )
            )
        runs = int(c.get("runs", 0))
        hits = int(c.get("hits", 0))
        failed = int(c.get("failed_runs", 0))
        total = runs + failed
        tip = (
            f"{label} {c.get('subject') or ''}\n{hits} hits in {runs} runs"
            + (f", {failed} failed runs" if failed else "")
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
            if slot >= 22:
                body.append(_text(cx, axis_y - h_total - 4, f"{hits}/{runs}", 9, "middle"))
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
        else:
            body.append(
                f'<line x1="{_n(cx)}" y1="{_n(axis_y)}" x2="{_n(cx)}" y2="{_n(axis_y + 4)}" '
                f'stroke="{COLORS["axis"]}"/>'
            )
        show = c.get("tested") or c.get("end") or c.get("culprit") or i % label_every == 0
        if show and (c.get("tested") or c.get("end") or c.get("culprit") or n <= 40):
            ly = axis_y + 26
            body.append(
                f'<text x="{_n(cx)}" y="{_n(ly)}" font-size="10" text-anchor="end" '
                f'transform="rotate(-55 {_n(cx)} {_n(ly)})"'
                + (' font-weight="700"' if c.get("culprit") else "")
                + f">{escape(label)}</text>"
            )
    body.append(
        f'<line x1="{left}" y1="{_n(axis_y)}" x2="{width - right}" y2="{_n(axis_y)}" '
        f'stroke="{COLORS["axis"]}"/>'
    )
    for runs_tick in (1, 10, 100, 1000, 10000):
        if runs_tick > max_runs:
            break
        y = axis_y - math.log1p(runs_tick) * scale
        body.append(
            f'<line x1="{left - 4}" y1="{_n(y)}" x2="{left}" y2="{_n(y)}" '
            f'stroke="{COLORS["axis"]}"/>'
        )
        body.append(_text(left - 6, y + 3, str(runs_tick), 9, "end"))
    body.append(
        _text(
            12,
            top + bar_h / 2,
            "runs (log)",
            10,
            "middle",
            transform=f"rotate(-90 12 {_n(top + bar_h / 2)})",
        )
    )
    first = commits[0] if commits else {}
    last = commits[-1] if commits else {}
    body.append(_text(left, height - 8, f"oldest: {first.get('label', '')}", 10))
    body.append(_text(width - right, height - 8, f"newest: {last.get('label', '')}", 10, "end"))
    culprit = bisect.get("culprit")
    if culprit:
        verb = "fixed by" if bisect.get("direction") == "fix" else "introduced by"
        body.append(
            _text(
                width / 2,
                height - 8,
                f"{verb} {culprit.get('label')}",
                11,
                "middle",
                font_weight="700",
            )
        )
    return _svg(width, height, title, body)


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
