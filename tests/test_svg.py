"""The bisect chart stays readable where the answer is (issue 12, item 6).

A bisect spends its last probes next to the culprit, so the tested commits there are
a few pixels apart; their labels must not pile up, and the runs axis must have ticks
a reader can use. Text boxes are estimated from the SVG itself (font size times number
of characters, rotation included) and checked pairwise for overlap.
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from repro.report.svg import bisect_chart

NS = "{http://www.w3.org/2000/svg}"
CHAR_WIDTH = 0.6  # of the font size, for sans-serif digits and letters


def _bisect(n: int, culprit: int, tested: dict[int, tuple[int, int]]) -> dict[str, Any]:
    """A fix bisect over ``n`` commits, oldest first; ``tested``: pos -> (runs, hits)."""
    commits = []
    for i in range(n):
        runs, hits = tested.get(i, (0, 0))
        verdict = "racy" if hits else (f"no hit in {runs} runs" if runs else "")
        commits.append(
            {
                "order": i,
                "pos": i,
                "id": f"{i:040x}",
                "label": f"{(i * 2654435761) % 16**9:09x}",
                "subject": f"commit {i}",
                "tested": i in tested,
                "runs": runs,
                "hits": hits,
                "failed_runs": 0,
                "verdict": verdict,
                "end": "racy end" if i == 0 else ("clean end" if i == n - 1 else None),
                "culprit": i == culprit,
            }
        )
    return {
        "commits": commits,
        "culprit": commits[culprit],
        "direction": "fix",
        "side": "extension",
    }


# The shape of the PyO3 bisect: 9 builds, 27 runs, the last probes next to the fix.
PYO3_LIKE = _bisect(
    420,
    231,
    {
        0: (9, 6),
        419: (8, 0),
        210: (2, 1),
        315: (3, 0),
        262: (3, 0),
        236: (3, 0),
        223: (1, 1),
        229: (2, 1),
        230: (1, 1),
        231: (3, 0),
        232: (3, 0),
        233: (2, 0),
    },
)
SMALL = _bisect(16, 9, {0: (7, 3), 15: (30, 0), 8: (5, 2), 9: (12, 0), 12: (6, 0)})
WIDE = _bisect(2000, 1001, {i: (1 + i % 7, 1 if i < 1001 else 0) for i in range(990, 1012)})


def _boxes(svg: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """Every text's estimated box as a polygon in the SVG's coordinates."""
    out = []
    for el in ET.fromstring(svg).iter(f"{NS}text"):
        text = "".join(el.itertext())
        size = float(el.get("font-size", "11"))
        x, y = float(el.get("x", "0")), float(el.get("y", "0"))
        w = len(text) * size * CHAR_WIDTH
        anchor = el.get("text-anchor", "start")
        x0 = x - (w / 2 if anchor == "middle" else w if anchor == "end" else 0)
        corners = [(x0, y - 0.8 * size), (x0 + w, y - 0.8 * size), (x0 + w, y + 0.2 * size)]
        corners.append((x0, y + 0.2 * size))
        m = re.search(
            r"rotate\(([-\d.]+)(?:[ ,]+([-\d.]+)[ ,]+([-\d.]+))?\)", el.get("transform", "")
        )
        if m:
            a = math.radians(float(m.group(1)))
            cx, cy = float(m.group(2) or 0), float(m.group(3) or 0)
            corners = [
                (
                    cx + (px - cx) * math.cos(a) - (py - cy) * math.sin(a),
                    cy + (px - cx) * math.sin(a) + (py - cy) * math.cos(a),
                )
                for px, py in corners
            ]
        out.append((text, corners))
    return out


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Separating axis test for two convex quadrilaterals (0.5 px of tolerance)."""
    for poly in (a, b):
        for i in range(4):
            (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % 4]
            nx, ny = y2 - y1, x1 - x2
            norm = math.hypot(nx, ny) or 1.0
            pa = [(px * nx + py * ny) / norm for px, py in a]
            pb = [(px * nx + py * ny) / norm for px, py in b]
            if max(pa) <= min(pb) + 0.5 or max(pb) <= min(pa) + 0.5:
                return False
    return True


def _collisions(svg: str) -> list[tuple[str, str]]:
    boxes = _boxes(svg)
    return [
        (ta, tb) for i, (ta, a) in enumerate(boxes) for tb, b in boxes[i + 1 :] if _overlap(a, b)
    ]


@pytest.mark.parametrize("bisect", [PYO3_LIKE, SMALL, WIDE], ids=["pyo3-like", "small", "wide"])
def test_no_two_texts_overlap(bisect: dict[str, Any]) -> None:
    svg = bisect_chart(bisect)
    assert _collisions(svg) == []


def test_the_answer_and_its_neighbourhood_are_labelled() -> None:
    texts = [t for t, _ in _boxes(bisect_chart(PYO3_LIKE))]
    commits = PYO3_LIKE["commits"]
    for pos in (0, 419, 229, 230, 231, 232, 233):
        assert commits[pos]["label"] in texts, pos


def test_overlap_check_catches_piled_up_labels() -> None:
    """The check itself: two labels 3 px apart do overlap, rotated or not."""
    pile = (
        '<svg xmlns="http://www.w3.org/2000/svg">'
        '<text x="100" y="50" font-size="10" transform="rotate(-55 100 50)">1e2aae308</text>'
        '<text x="103" y="50" font-size="10" transform="rotate(-55 103 50)">059e24905</text>'
        '<text x="300" y="50" font-size="10" text-anchor="middle">1e2aae308</text>'
        '<text x="380" y="50" font-size="10" text-anchor="middle">059e24905</text></svg>'
    )
    assert _collisions(pile) == [("1e2aae308", "059e24905")]


def _ticks(svg: str) -> list[tuple[float, int]]:
    """(y, value) of the runs axis's tick labels: numbers right-aligned left of the plot."""
    out = []
    for el in ET.fromstring(svg).iter(f"{NS}text"):
        text = "".join(el.itertext())
        if el.get("text-anchor") == "end" and text.isdigit() and float(el.get("x", 0)) < 50:
            out.append((float(el.get("y", 0)), int(text)))
    return out


@pytest.mark.parametrize(("bisect", "top"), [(PYO3_LIKE, 9), (SMALL, 30), (WIDE, 7)])
def test_runs_axis_has_readable_ticks(bisect: dict[str, Any], top: int) -> None:
    ticks = _ticks(bisect_chart(bisect))
    values = [v for _, v in ticks]
    assert len(values) >= 3, values
    assert max(values) >= top / 2.5
    ys = [y for y, _ in sorted(ticks, key=lambda t: t[1])]
    assert ys == sorted(ys, reverse=True)  # larger counts higher up
    assert all(a - b >= 10 for a, b in itertools.pairwise(ys))


def test_every_run_of_the_stress_chart_has_its_bar() -> None:
    """Sweep 14: "Outcomes of 19 runs" drew 18: an incomplete run had no colour."""
    from repro.report.svg import stress_chart

    buckets = [
        {"first": 1, "last": 1, "outcomes": {"target": 1}, "rate_so_far": 1.0},
        {"first": 2, "last": 2, "outcomes": {"incomplete": 1}, "rate_so_far": 1.0},
        {"first": 3, "last": 3, "outcomes": {"clean": 1}, "rate_so_far": 0.5},
    ]
    svg = stress_chart(buckets)
    assert "Outcomes of 3 runs" in svg
    tips = re.findall(r"<title>(run \d+: [^<]*)</title>", svg)
    assert tips == ["run 1: target 1", "run 2: not counted 1", "run 3: clean 1"], tips
