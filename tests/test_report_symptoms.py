"""Races inside CPython beside an extension's race are said to be possibly its doing.

The run directories come from the real `repro stress` on a reproducer that prints a
stored TSAN log of a real package run (ringlite, a meson-python extension whose
module-level string is made on first use without a barrier, on a free-threaded TSAN
CPython 3.13): the extension's race in `ring_tag`, and two races that the
half-published string causes in CPython's reference counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import repro

DATA = Path(__file__).resolve().parent / "data" / "tsan"
LOG = DATA / "cpython-ext-lazy-init.log"


def _stress(
    root: Path,
    functions: list[str],
    drop: list[str] | None = None,
    log: Path = LOG,
    script: Path | None = None,
) -> tuple[Path, str]:
    if script is None:
        script = root / "replay.sh"
        script.write_text(f"#!/bin/sh\ncat '{log}'\nexit 66\n")
        script.chmod(0o755)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: ringlite-replay\n"
        f"reproducer:\n  command: {json.dumps(str(script))}\n  timeout: 30\n"
        f"target:\n  kind: data race\n  functions: {json.dumps(functions)}\n  depth: 1\n"
        + (f"signature:\n  drop_frames: {json.dumps(drop)}\n" if drop else "")
    )
    runs = root / "runs"
    res = repro("stress", str(recipe), "--runs", "2", "--runs-dir", str(runs))
    assert res.returncode == 0, res.stdout + res.stderr
    (path,) = [p for p in runs.iterdir() if p.is_dir()]
    return path, res.stdout


def _reports(run_dir: Path, tmp: Path) -> tuple[str, str, dict[str, Any]]:
    md, html, js = tmp / "report.md", tmp / "report.html", tmp / "report.json"
    for out, fmt in ((md, "markdown"), (html, "html"), (js, "json")):
        res = repro("report", str(run_dir), "-o", str(out), "--format", fmt)
        assert res.returncode == 0, res.stderr
    return md.read_text(), html.read_text(), json.loads(js.read_text())


@pytest.mark.parametrize(
    ("functions", "flagged"),
    [
        (["ring_tag"], 2),  # the extension's race: both others are inside CPython
        (["_Py_atomic_add_ssize", "new_reference"], 0),  # a CPython race: nothing to say
    ],
    ids=["extension-target", "cpython-target"],
)
def test_races_inside_cpython_beside_an_extension_target(
    tmp_path: Path, functions: list[str], flagged: int
) -> None:
    run_dir, console = _stress(tmp_path, functions)
    md, html, doc = _reports(run_dir, tmp_path)
    inside = [o["signature"] for o in doc["other_races"] if o["inside_cpython"]]
    assert len(inside) == flagged, doc["other_races"]
    rows = [line for line in md.splitlines() if line.startswith("| `") and "inside CPython" in line]
    assert len(rows) == flagged, md
    assert html.count("<td>inside CPython</td>") == flagged
    said = f"{flagged} of these races start inside CPython"
    assert (said in md) == bool(flagged), md
    assert (said in html) == bool(flagged)
    if flagged:
        # The extension's own race is never flagged, and the flagged ones are CPython's.
        assert not any("ring_tag" in line.split("|")[3] for line in rows), rows
        assert all(f"`{sig}`" in "\n".join(rows) for sig in inside)
    # The console says what the report says: the same races marked in its table, and
    # the same note (before, it listed them as bare "other" races).
    marked = [line for line in console.splitlines() if "inside CPython" in line and "│" in line]
    assert sorted(sig for sig in inside if any(sig in line for line in marked)) == sorted(inside)
    assert len(marked) == flagged, console
    assert (said in " ".join(console.split())) == bool(flagged), console


def test_the_recipes_frames_to_drop_decide_where_a_race_starts(tmp_path: Path) -> None:
    """A recipe that drops CPython's inline helpers (``Include/*``) and PyTuple_Pack reads
    the race whose access runs Py_INCREF < PyTuple_Pack < ring_tag as starting in ring_tag,
    as the run's signatures and the target suggestion do: then no other race is "inside
    CPython". With only the default frames dropped, the report said it was (and the
    extension-target case above flags two)."""
    run_dir, console = _stress(tmp_path, ["ring_tag"], ["Include/*", "PyTuple_Pack"])
    md, _, doc = _reports(run_dir, tmp_path)
    assert doc["other_races"], doc
    assert not any(o["inside_cpython"] for o in doc["other_races"]), doc["other_races"]
    assert "start inside CPython" not in md and "starts inside CPython" not in md
    assert "inside CPython" not in console, console


def test_a_race_with_a_lost_stack_is_not_one_more_race_inside_cpython(tmp_path: Path) -> None:
    """Sweep 15's note listed reports with one stack lost beside the whole races they
    are (``same_race_as``), as more races inside CPython."""
    text = LOG.read_text()
    second = text.index("WARNING: ThreadSanitizer", text.index("SUMMARY:"))
    start = text.rindex("==================", 0, second)
    end = text.index("==================", text.index("SUMMARY:", second)) + 18
    block = text[start:end]
    head, _, rest = block.partition("  Previous write")
    lost = head + "  Previous write" + rest.split("\n", 1)[0] + "\n"
    lost += "    [failed to restore the stack]\n\n" + rest[rest.index("  Thread T4") :]
    log = tmp_path / "with-lost.log"
    log.write_text(text + "\n" + lost + "\n")
    run_dir, _ = _stress(tmp_path, ["ring_tag"], log=log)
    _, _, doc = _reports(run_dir, tmp_path)
    partial = [o for o in doc["other_races"] if o.get("same_race_as")]
    assert len(partial) == 1 and len(doc["other_races"]) == 3, doc["other_races"]
    inside = [o["signature"] for o in doc["other_races"] if o["inside_cpython"]]
    assert len(inside) == 2 and partial[0]["signature"] not in inside, doc["other_races"]


def test_races_inside_cpython_that_show_without_the_target_are_not_its_doing(
    tmp_path: Path,
) -> None:
    """Sweep 18: CPython's string interning raced at frozenlist's racy commits and at its
    fixed ones alike, and the note said "Fix the target first and run again; these may
    go with it" (greenlet's: the fatal-error handler's races in runs that crashed). Here
    one of the two runs prints the two CPython races without the extension's."""
    lines = LOG.read_text().splitlines(keepends=True)
    second = next(i for i, line in enumerate(lines) if i > 0 and line.startswith("=====") and
                  lines[i - 1].startswith("====="))  # fmt: skip
    alone = tmp_path / "cpython-races-alone.log"
    alone.write_text("".join(lines[second:]))
    assert "ring_tag ../src/ringlite/_ring.c:9" not in alone.read_text()
    state = tmp_path / "n"
    script = tmp_path / "alternate.sh"
    script.write_text(
        # mkdir: one of two runs at once gets each log
        f"#!/bin/sh\nif mkdir '{state}' 2>/dev/null; then cat '{LOG}'; else cat '{alone}'; fi\n"
        "exit 66\n"
    )
    script.chmod(0o755)
    run_dir, console = _stress(tmp_path, ["ring_tag"], script=script)
    md, html, doc = _reports(run_dir, tmp_path)
    assert "inside CPython" not in html
    others = doc["other_races"]
    assert len(others) == 2 and all(o["runs_without_target"] == 1 for o in others), others
    assert not any(o["inside_cpython"] for o in others), others
    assert "inside CPython" not in md and "inside CPython" not in " ".join(console.split())
