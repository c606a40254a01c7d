"""The Markdown report fits an issue whatever the run saw (issue 12, item 3).

The run directories come from the real `repro stress` on a reproducer that prints
stored TSAN logs of real programs (tests/data/tsan): the PyO3 borrow-flag race,
which is the target, next to the races of Rust's std and test harness that a PyO3
test binary shows in every run, and races of small C programs. That is the shape of
the PyO3 bisect whose report was 62,138 characters, 75% of it other races.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import repro

from repro.report import build_document
from repro.report.markdown import BUDGET, GITHUB_LIMIT, render_markdown
from repro.report.tsantext import trim_report
from repro.tsan.parse import parse_log

DATA = Path(__file__).resolve().parent / "data" / "tsan"
LOGS = [
    "pyo3-borrowflag-racy.log",
    "rust-racy.log",
    "clang-racy_counter.log",
    "gcc-use_after_free.log",
    "clang-half_locked.log",
]
TARGET = "pyo3::pycell::impl_::tests::test_thread_safety_2::*"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("size")
    script = root / "replay.sh"
    script.write_text(
        "#!/bin/sh\n" + "".join(f"cat '{DATA / name}'\n" for name in LOGS) + "exit 66\n"
    )
    script.chmod(0o755)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        "name: pyo3-replay\n"
        f"reproducer:\n  command: {json.dumps(str(script))}\n  timeout: 30\n"
        f"target:\n  kind: data race\n  functions: [{json.dumps(TARGET)}]\n"
        "  files: [src/pycell/impl_.rs]\n  depth: 1\n"
    )
    runs = root / "runs"
    res = repro("stress", str(recipe), "--runs", "4", "--runs-dir", str(runs))
    assert res.returncode == 0, res.stdout + res.stderr
    (path,) = [p for p in runs.iterdir() if p.is_dir()]
    return path


def _target_text() -> str:
    reports = parse_log((DATA / "pyo3-borrowflag-racy.log").read_text()).reports
    (target,) = [r for r in reports if "test_thread_safety_2" in (r.summary or "")]
    return trim_report(target.raw)


def _frame_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if re.match(r"\s*#\d+ ", line)]


def test_markdown_has_the_target_in_full_and_other_races_one_line_each(
    run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.md"
    res = repro("report", str(run_dir), "-o", str(out))
    assert res.returncode == 0, res.stderr
    md = out.read_text()
    doc = build_document(run_dir)
    others = doc["other_races"]
    assert len(others) >= 10

    assert len(md) <= BUDGET
    assert "BuildId" not in md
    # The target's stack, every frame repro shows, exactly as trimmed.
    target = _frame_lines(_target_text())
    assert len(target) > 20
    for line in target:
        assert line in md, line
    # Each other race is one line (a table row), and none of their stacks is here.
    for o in others:
        lines = [x for x in md.splitlines() if f"`{o['signature']}`" in x]
        assert len(lines) == 1, (o["signature"], lines)
        assert lines[0].startswith("| ") and f"| {o['runs']} |" in lines[0]
    assert "#0 alloc::alloc::dealloc" not in md and "#0 increment_counter" not in md
    # Races inside Rust's std are said to be expected noise; the project's races are not.
    assert "inside Rust's standard library" in md and "expected noise" in md
    rows = {o["signature"]: x for o in others for x in md.splitlines() if o["signature"] in x}
    noise = {sig for sig, row in rows.items() if "noise (Rust std)" in row}
    functions = {o["signature"]: o.get("function") for o in others}
    assert {functions[s] for s in noise} >= {"alloc::alloc::dealloc"}
    for sig, fn in functions.items():
        if fn in ("increment_counter", "use_buffer", "racy::store_value", "racy::load_value"):
            assert sig not in noise, fn

    # The full reports are beside it, and the report says so.
    side = tmp_path / "report-other-races.md"
    assert f"report: {side}" in res.stderr
    assert "`report-other-races.md` beside this report" in md
    full = side.read_text()
    assert "BuildId" not in full
    for o in others:
        assert f"## `{o['signature']}`" in full
        assert _frame_lines(str(o["report"]))[0] in full


def test_stdout_report_points_at_the_run_directory(run_dir: Path) -> None:
    res = repro("report", str(run_dir))
    assert res.returncode == 0, res.stderr
    md = res.stdout
    assert len(md) <= BUDGET and "BuildId" not in md
    assert "run directory's logs" in md and "other-races.md" not in md
    assert "`logs/run-" in md


def _inflated(doc: dict[str, Any]) -> dict[str, Any]:
    """The real document with more of everything a report can hold."""
    others = [
        dict(o, signature=f"{o['signature']}{i}") for i in range(3) for o in doc["other_races"]
    ]
    big = dict(doc)
    big["other_races"] = others[:25]
    big["other_races_total"] = 40
    big["reproduce"] = dict(doc["reproduce"], recipe=doc["reproduce"]["recipe"] * 20)
    env = dict(doc["environment"])
    env["variables"] = {f"VAR_{i}": "v" * 200 for i in range(300)}
    big["environment"] = env
    return big


def _note(md: str) -> str:
    (line,) = [x for x in md.splitlines() if "this report leaves out" in x]
    return line


def test_over_budget_leaves_out_the_least_useful_part(run_dir: Path) -> None:
    doc = _inflated(build_document(run_dir))
    assert len(render_markdown(doc, budget=10**9)) > BUDGET  # really too long
    md = render_markdown(doc, "report-other-races.md")
    assert len(md) <= BUDGET
    # The environment variables alone were enough: nothing else is missing.
    assert "leaves out the environment variables:" in _note(md)
    assert "VAR_1" not in md
    for line in _frame_lines(_target_text()):
        assert line in md
    assert all(f"`{o['signature']}`" in md for o in doc["other_races"])
    assert "## Suggested TSAN suppression" in md and "<summary>recipe.yaml</summary>" in md
    assert "... and 15 less frequent ones, in the run directory." in md


@pytest.mark.parametrize("budget", [12_000, 6_000, 1_500])
def test_any_budget_is_kept(run_dir: Path, budget: int) -> None:
    doc = _inflated(build_document(run_dir))
    md = render_markdown(doc, "report-other-races.md", budget=budget)
    assert len(md) <= budget
    assert md.startswith(f"# {doc['title']}\n")
    note = _note(md)
    assert f"To stay under {budget:,} characters" in note
    assert "## The race" in md and _frame_lines(_target_text())[0] in md
    if budget == 12_000:
        assert "the other races after the 10 most frequent" in note
        assert "... and 15 more in `report-other-races.md`" in md
        assert "the target's TSAN report" not in note
    else:
        assert "the target's TSAN report after" in note


def test_a_title_fits_a_github_issue_whatever_the_function_is_called() -> None:
    """A C++ target's name with its template arguments: the title elides them, and any
    title stays within GitHub's 256 characters."""
    from repro.report.data import TITLE_LIMIT, race_name

    long = (
        "std::_Rb_tree<int, std::pair<int const, int>, std::less<int> >::_M_insert("
        + ("std::vector<std::map<int, std::string>>, " * 40)
        + "int)"
    )
    name = race_name({"kind": "data race", "function": long, "file": "race.cpp"})
    assert name == "data race in std::_Rb_tree<...>::_M_insert(...) (race.cpp)"
    unbalanced = race_name({"kind": "data race", "function": "f" * 300})
    assert len(unbalanced) < TITLE_LIMIT
    assert race_name({"kind": "data race", "function": "operator<"}).endswith("operator<")
    # An operator's own brackets stay: `operator()` read `operator(...)` (a pybind11 lambda).
    lam = "pybind11_init__core(pybind11::module_&)::$_::operator()(Counter&, long) const"
    assert race_name({"kind": "data race", "function": lam}) == (
        "data race in pybind11_init__core(...)::$_::operator()(...) const"
    )
    shift = race_name({"kind": "data race", "function": "A<int>::operator<<(std::ostream&)"})
    assert shift == "data race in A<...>::operator<<(...)"


def test_dollars_in_markdown_text_are_not_math() -> None:
    """GitHub typesets `$...$` as math; clang names lambdas `$_0`, and a report's row of
    two of them rendered as a formula."""
    from repro.report.markdown import text

    assert text("f()::$_0::operator() | g()::$_1") == "f()::\\$_0::operator() | g()::\\$_1"


def test_the_other_races_file_fits_a_comment_too(run_dir: Path) -> None:
    """The file of other races is pasted as a comment of its own: with 25 races of long
    reports it ran past GitHub's 65,536 characters. Reports are cut to their first lines,
    then the races left are named one line each; every race is still there."""
    from repro.report.markdown import render_other_races

    doc = build_document(run_dir)
    big = _inflated(doc)
    long = [
        dict(
            o,
            report=str(o["report"])
            + "\n"
            + "\n".join(f"    #{k} frame_{k} x.c:{k}" for k in range(200)),
        )
        for o in big["other_races"]
    ]
    big["other_races"] = long
    full_size = sum(len(str(o["report"])) for o in long)
    assert full_size > 2 * GITHUB_LIMIT  # what the file held before
    side = render_other_races(big)
    assert side is not None
    assert len(side) <= GITHUB_LIMIT, len(side)
    for o in long:
        assert f"`{o['signature']}`" in side, o["signature"]
    first = long[0]
    assert _frame_lines(str(first["report"]))[0] in side  # the first race's report begins
    assert "more lines in the JSON and HTML reports" in side or "more (their full" in side
    # A small run's file is whole, as before.
    small = render_other_races(doc)
    assert small is not None
    for o in doc["other_races"]:
        if o.get("report"):
            assert str(o["report"]).splitlines()[-1] in small
