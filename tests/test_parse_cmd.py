"""`repro parse`: a pasted CI log -> distinct races, and a recipe skeleton that validates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repro

from repro.tsan.parse import MAX_LINE, LogScanner, parse_log, read_lines, read_reports

DATA = Path(__file__).resolve().parent / "data" / "tsan"


def ci_log(tmp_path: Path) -> Path:
    """Two real logs pasted as a CI service shows them: timestamps, noise in between."""
    lines = ["2024-12-20T10:11:12.0000000Z ##[group]Run make test"]
    for name in ("gcc-racy_counter.log", "pyo3-borrowflag-racy.log", "gcc-racy_counter.log"):
        for line in (DATA / name).read_text().splitlines():
            lines.append(f"2024-12-20T10:11:13.1234567Z {line}")
        lines.append("2024-12-20T10:11:14.0000000Z test result: FAILED. 1 passed; 1 failed")
    p = tmp_path / "ci.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_parse_groups_races_with_counts(tmp_path: Path) -> None:
    res = repro("parse", str(ci_log(tmp_path)), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    races = data["races"]
    by_fn = {r["accesses"][0][0]: r for r in races}
    assert by_fn["increment_counter"]["count"] == 2
    assert any("test_thread_safety_2" in r["accesses"][0][0] for r in races)
    assert data["reports"] == sum(r["count"] for r in races)
    # The table view names the same races.
    table = repro("parse", str(ci_log(tmp_path)))
    assert table.returncode == 0
    assert "increment_counter" in table.stdout


def test_recipe_skeleton_validates_and_targets_the_race(tmp_path: Path) -> None:
    log = ci_log(tmp_path)
    listing = json.loads(repro("parse", str(log), "--json").stdout)["races"]
    n = next(i for i, r in enumerate(listing, 1) if r["accesses"][0][0] == "increment_counter")
    res = repro("parse", str(log), "--recipe-skeleton", str(n))
    assert res.returncode == 0, res.stderr
    recipe = tmp_path / "skeleton.yaml"
    recipe.write_text(res.stdout)
    assert "increment_counter" in res.stdout
    # The command is the user's to write; until then the recipe says where it is missing.
    check = repro("recipe", "validate", str(recipe))
    assert check.returncode == 2
    assert "reproducer.command: still FILL_ME" in " ".join(check.stderr.split())
    recipe.write_text(
        res.stdout.replace('"FILL_ME: the command that triggers the race"', '"./racy 4"')
    )
    check = repro("recipe", "validate", str(recipe))
    assert check.returncode == 0, check.stderr


def test_parse_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    res = repro("parse", str(empty))
    assert res.returncode == 1
    assert "no TSAN reports" in res.stdout
    res = repro("parse", str(empty), "--recipe-skeleton", "1")
    assert res.returncode == 2
    assert "no TSAN reports" in res.stderr
    res = repro("parse", str(tmp_path / "missing.txt"))
    assert res.returncode == 2
    assert "no such file" in res.stderr


# --- memory stays flat on huge logs (issue 11, item 14) -------------------------------


def big_log(path: Path, reports: int) -> None:
    """`reports` copies of stored reports, each with its own pid and addresses."""
    templates = [(DATA / n).read_text() for n in ("gcc-racy_counter.log", "gcc-half_locked.log")]
    with path.open("w") as out:
        for i in range(reports):
            text = templates[i % 2].replace("pid=", f"pid={i}0")
            out.write(re.sub(r"0x[0-9a-f]{8,}", f"0x7f{i:010x}", text))


# The child reports its own high-water mark (VmHWM): ru_maxrss from wait4 would also
# count the pages of this pytest process at the moment of the fork.
_MEASURED = """
import atexit, runpy, sys

def _hwm(path=sys.argv[1]):
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(kb)

atexit.register(_hwm)
sys.argv = ["repro", *sys.argv[2:]]
runpy.run_module("repro", run_name="__main__", alter_sys=True)
"""


def peak_rss_mb(tmp_path: Path, *args: str) -> tuple[int, float, str]:
    hwm = tmp_path / "hwm.txt"
    res = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(hwm), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return res.returncode, int(hwm.read_text()) / 1024, res.stdout


def test_parse_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    small, large = tmp_path / "small.log", tmp_path / "large.log"
    big_log(small, 1000)  # 1.4 MB
    big_log(large, 9000)  # 12.6 MB
    code, rss_small, out_small = peak_rss_mb(tmp_path, "parse", str(small), "--json")
    assert code == 0
    code, rss_large, out_large = peak_rss_mb(tmp_path, "parse", str(large), "--json")
    assert code == 0
    assert json.loads(out_small)["reports"] == 1000
    data = json.loads(out_large)
    assert data["reports"] == 9000
    assert sorted(r["count"] for r in data["races"]) == [4500, 4500]
    # Reading it all at once took about 8 bytes of memory per byte of log (90 MB here).
    assert rss_large - rss_small < 15, (rss_small, rss_large)


def test_overlong_line_is_cut_not_held(tmp_path: Path) -> None:
    """A program that printed 40 MB without a line break, then raced."""
    report = (DATA / "gcc-racy_counter.log").read_text()
    small = tmp_path / "small.log"
    small.write_text(report + report)
    log = tmp_path / "long.log"
    with log.open("w") as f:  # written in pieces: this process stays small
        for _ in range(40):
            f.write("x" * 1_000_000)
        f.write("\n" + report + "y" * 200_000 + report)
    code, rss_small, _ = peak_rss_mb(tmp_path, "parse", str(small), "--json")
    assert code == 0
    code, rss_long, out = peak_rss_mb(tmp_path, "parse", str(log), "--json")
    assert code == 0
    assert json.loads(out)["reports"] == 2
    assert rss_long - rss_small < 15, (rss_small, rss_long)
    with log.open(newline="") as f:
        assert max(len(line) for line in read_lines(f)) == MAX_LINE


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.log")))
def test_streaming_reads_what_parse_log_reads(name: str) -> None:
    text = (DATA / name).read_text()
    scanner = LogScanner()
    with (DATA / name).open(newline="") as f:
        streamed = list(read_reports(f, scanner))
    whole = parse_log(text)
    assert streamed == list(whole.reports)
    assert scanner.parsed(streamed) == whole


def test_skeleton_is_never_wrapped_and_reaches_its_frames(tmp_path: Path) -> None:
    """The skeleton is a file to save: a terminal's width must not cut its lines (a cut
    comment is invalid YAML), and its depth reaches the frames it names (a Rust race is
    named by its caller, below the library's frames)."""
    log = tmp_path / "rust.log"
    log.write_text((DATA / "pyo3-borrowflag-racy.log").read_text())
    res = repro("parse", str(log), "--recipe-skeleton", "1", env={"COLUMNS": "40"})
    assert res.returncode == 0, res.stderr
    recipe = tmp_path / "s.yaml"
    recipe.write_text(res.stdout.replace("FILL_ME: the command that triggers the race", "./x"))
    check = repro("recipe", "validate", str(recipe))
    assert check.returncode == 0, check.stdout + check.stderr
    from repro.recipe import load_recipe
    from repro.tsan.signature import matches

    rule = load_recipe(recipe).recipe.target.rule()
    reports = parse_log(log.read_text()).reports
    assert any(matches(r, rule) for r in reports), (rule, res.stdout)


def test_reports_that_cannot_name_their_race_are_counted_apart(tmp_path: Path) -> None:
    """A lost stack or a cut report is not one more race (nor two unreadable reports one
    race): the count says what they are."""
    text = (DATA / "gcc-racy_counter.log").read_text()
    cut = text[: text.index("Previous")]
    log = tmp_path / "mixed.log"
    log.write_text(text + "\n" + cut.replace("Read", "Write"))
    data = json.loads(repro("parse", str(log), "--json").stdout)
    assert data["reports"] == 2 and len(data["races"]) == 1
    assert data["unreadable"] == {"incomplete": 1}
    table = repro("parse", str(log))
    assert "1 report(s) cannot say which race they are (1 incomplete)" in " ".join(
        table.stdout.split()
    )
    only = tmp_path / "only.log"
    only.write_text(cut)
    res = repro("parse", str(only))
    assert res.returncode == 1 and "1 TSAN report(s), none complete and readable" in res.stdout


def test_a_skeleton_says_which_other_races_its_target_would_count(tmp_path: Path) -> None:
    """Two races through the same top functions from different callers: distinct races,
    one suggested target. The skeleton says so, naming the other race's number."""
    text = (DATA / "gcc-racy_counter.log").read_text()
    other = text.replace("#1 worker ", "#1 other_worker ")
    log = tmp_path / "two.log"
    log.write_text(text + "\n" + other + "\n" + text)
    races = json.loads(repro("parse", str(log), "--json").stdout)["races"]
    assert len(races) == 2 and [r["count"] for r in races] == [2, 1]
    res = repro("parse", str(log), "--recipe-skeleton", "1")
    assert res.returncode == 0, res.stderr
    assert "# This target also matches race(s) 2 of the log" in res.stdout
    alone = tmp_path / "one.log"
    alone.write_text(text)
    assert "also matches" not in repro("parse", str(alone), "--recipe-skeleton", "1").stdout


def test_a_log_from_standard_input_or_a_pipe(tmp_path: Path) -> None:
    """`... | repro parse -` and `repro parse <(...)`: read once, skeleton included."""
    text = (DATA / "gcc-racy_counter.log").read_text()
    res = subprocess.run(
        [sys.executable, "-m", "repro", "parse", "-", "--recipe-skeleton", "1"],
        input=text, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "from standard input" in res.stdout and "increment_counter" in res.stdout
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "parse", str(fifo), "--json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    fifo.write_text(text)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["reports"] == 1
    res = repro("parse", str(tmp_path))
    assert res.returncode == 2 and "is a directory" in res.stderr
