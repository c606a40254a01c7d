"""One fold, one set of figures: the console, --json-out, summary.json and the three
report formats state the same runs, hits, rate and interval (issue 10).

A real stress run whose reproducer cycles through every outcome (target, other, clean,
crash, timeout, incomplete, unsymbolized, no test run) with real TSAN programs, and a real bisect
of the demo's history.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, repro
from tsan_helpers import PROGRAMS, compile_c, cycle_script, with_history

from repro.report.fmt import pct

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

CYCLE = """#!/bin/sh
# Each run takes the next behaviour, in order (one run at a time: -j 1).
n=$(cat "$0.count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$0.count"
case $((n % 9)) in
  0) TSAN_OPTIONS="$TSAN_OPTIONS history_size=7" exec {lost} ;;
  1) exec {other} ;;
  2) exit 0 ;;
  3) echo 'setting up'; echo 'fixture.db: no such file' >&2; exit 3 ;;
  4) exec sleep 30 ;;
  5) TSAN_OPTIONS="$TSAN_OPTIONS history_size=0" exec {lost} ;;
  6) TSAN_OPTIONS="$TSAN_OPTIONS symbolize=0" exec {lost} ;;
  7) printf 'running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 2 filtered out\n' ;;
  8) echo 'repro: pkg was imported from /w/src/pkg/__init__.py,' \
       'not from the package repro built (/w/site)' >&2 ;;
esac
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mixed")
    lost = compile_c(PROGRAMS / "lost_history.c", root / "lost")
    other = compile_c(PROGRAMS / "racy_counter.c", root / "other")
    script = root / "cycle.sh"
    script.write_text(CYCLE.format(lost=lost, other=other))
    script.chmod(0o755)
    recipe = root / "r.yaml"
    recipe.write_text(
        "name: mixed\n"
        f"reproducer: {{command: {json.dumps(str(script))}, timeout: 2}}\n"
        "target: {functions: [read_shared, write_shared]}\n"
    )
    runs_dir = root / "runs"
    out = root / "s.json"
    md = root / "r.md"
    res = repro(
        "stress",
        str(recipe),
        "-n",
        "18",
        "-j",
        "1",
        "--keep-going",
        "--runs-dir",
        str(runs_dir),
        "--json-out",
        str(out),
        "--report",
        str(md),
    )
    run_dir = next(runs_dir.iterdir())
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    html = repro("report", str(run_dir), "--format", "html").stdout
    return {
        "res": res,
        "json_out": json.loads(out.read_text()),
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "doc": doc,
        "md": md.read_text(),
        "html": html,
        "run_dir": run_dir,
    }


def test_every_outcome_is_counted_once(mixed: dict[str, Any]) -> None:
    res = mixed["res"]
    assert res.returncode == 0, res.stdout + res.stderr
    o = mixed["json_out"]["outcomes"]
    assert o == {
        "target": 2,
        "other": 2,
        "clean": 2,
        "crash": 2,
        "timeout": 2,
        "tsan-failure": 0,
        "unsymbolized": 2,
        "gil-enabled": 0,
        "incomplete": 2,
        "no-test": 2,
        "source-tree": 2,
    }


def test_failed_runs_say_how_they_ended(mixed: dict[str, Any]) -> None:
    """A crash is told by its exit status and a timeout by the knob to raise, with where
    the output is: "crash 2" alone left the user to find out why."""
    s = mixed["summary"]
    assert s["failed"] == {"crash: exit 3": 2, "timeout": 2}
    assert s["failed_log"] and (mixed["run_dir"] / s["failed_log"]).is_dir()
    text = " ".join(mixed["res"].stdout.split())
    assert "the reproducer failed (exit 3 x2) without a report of the target" in text, text
    assert "2 runs did not end in time" in text and "raise reproducer.timeout" in text
    assert f"the first crashed or timed-out run's log: {s['failed_log']}" in text
    # ... and what it last printed, which is what the log would have been opened for
    assert "its output ends: fixture.db: no such file" in text, text


def test_all_outputs_state_the_same_figures(mixed: dict[str, Any]) -> None:
    j, s, d = mixed["json_out"], mixed["summary"], mixed["doc"]["summary"]
    keys = ("runs", "evidence_runs", "hits", "rate", "rate_ci95", "outcomes")
    for k in keys:
        assert j[k] == s[k] == d[k], k
    # 2 hits over the 6 runs that could show the race (target, other, clean).
    assert (j["hits"], j["evidence_runs"], j["runs"]) == (2, 6, 18)
    lo, hi = j["rate_ci95"]
    console = f"2 of 6 runs hit the target race: rate {j['rate']:.1%} (95% CI {lo:.1%} to {hi:.1%})"
    assert console in re.sub(r"\s+", " ", mixed["res"].stdout)
    stated = f"{pct(j['rate'])} (95% CI {pct(lo)} to {pct(hi)}), 2 of 6 runs"
    assert stated in mixed["md"]
    assert stated in mixed["html"]
    assert "12 more could not show the race" in mixed["md"]


@pytest.fixture(scope="module")
def bisect(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bisect")
    recipe = make_demo_recipe(root)
    out = root / "b.json"
    res = repro("bisect", str(recipe), "--runs-dir", str(root / "runs"), "--json-out", str(out))
    run_dir = next((root / "runs").iterdir())
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    return {"res": res, "json_out": json.loads(out.read_text()), "doc": doc, "run_dir": run_dir}


def test_bisect_steps_agree_everywhere(bisect: dict[str, Any]) -> None:
    res, j, doc = bisect["res"], bisect["json_out"], bisect["doc"]
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((bisect["run_dir"] / "summary.json").read_text())
    assert summary == j
    fields = ("pos", "id", "runs", "hits", "other_races", "failed_runs", "invalid_runs", "verdict")
    ours = [{k: st[k] for k in fields} for st in j["steps"]]
    theirs = [{k: st[k] for k in fields} for st in doc["bisect"]["steps"]]
    assert ours == theirs
    assert doc["bisect"]["runs"] == j["runs"] and doc["bisect"]["builds"] == j["builds"]
    assert sum(st["all_runs"] for st in j["steps"]) == j["runs"]
    # The console's step table shows each tested commit's runs and hits as the JSON does.
    for st in j["steps"]:
        if st["built"]:
            assert re.search(rf"{st['label']}.*\b{st['runs']}\b.*\b{st['hits']}\b", res.stdout)


def test_a_race_with_a_lost_stack_is_one_race_everywhere(tmp_path: Path) -> None:
    """Another race seen whole and with one stack lost ("? | f") is one race: the
    console said "4 distinct" beside a table of 7 rows and a report of "Other races
    (7)", with nothing to tell the 3 rows with a lost stack apart."""
    target = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "target")
    lost = compile_c(PROGRAMS / "lost_history.c", tmp_path / "lost")
    script = cycle_script(
        tmp_path / "cycle.sh", [f"exec {target}", with_history(7, lost), with_history(0, lost)]
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: lost\n"
        f"reproducer: {{command: {json.dumps(str(script))}, timeout: 30}}\n"
        "target: {functions: [increment_counter]}\n"
    )
    runs_dir = tmp_path / "runs"
    res = repro("stress", str(recipe), "-n", "6", "-j", "1", "--runs-dir", str(runs_dir))
    said = " ".join(res.stdout.split())
    assert res.returncode == 0, res.stdout + res.stderr
    assert "other races: 1 distinct race, in 4 runs" in said, said
    summary = json.loads((next(runs_dir.iterdir()) / "summary.json").read_text())
    others = [s for s in summary["signatures"] if not s["target"]]
    assert len(others) == 2, others
    whole = next(s for s in others if all(s["top_frames"]))
    part = next(s for s in others if not all(s["top_frames"]))
    assert part["same_race_as"] == whole["id"] and whole["same_race_as"] is None
    note = f"one stack lost: race {whole['id']}"
    assert note in said, said
    run_dir = next(runs_dir.iterdir())
    md = repro("report", str(run_dir), "--format", "markdown").stdout
    assert "## Other races (1)" in md, md
    assert "1 row of this table is another race of it with one stack" in " ".join(md.split())
    # the lost side shows as "?", as on the console (it showed one side as the race)
    assert note in md and ("| ? \\| read_shared" in md or "read_shared <- second \\| ? |" in md)
    html = repro("report", str(run_dir), "--format", "html").stdout
    assert "Other races (1)" in html and note in html
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["other_races_distinct"] == summary["other_races"]["distinct"] == 1
    assert doc["other_races_total"] == 2


def test_a_near_miss_with_a_lost_stack_gives_way_to_its_whole_race(tmp_path: Path) -> None:
    """Sweep 13: the near-miss advice named a race seen with one stack lost ("? | f"),
    whose suggested target can name one side only, although the same race was seen
    whole; the whole one is the race to advise on."""
    lost = compile_c(PROGRAMS / "lost_history.c", tmp_path / "lost")
    script = cycle_script(
        tmp_path / "cycle.sh", [with_history(7, lost), with_history(0, lost), with_history(0, lost)]
    )
    recipe = tmp_path / "r.yaml"
    # The surviving side's function, in a file the race is not in: both rows miss the
    # target by the file alone, and the one with a lost stack is seen in more runs.
    recipe.write_text(
        "name: lost\n"
        f"reproducer: {{command: {json.dumps(str(script))}, timeout: 30}}\n"
        "target: {functions: [read_shared], files: [elsewhere.c]}\n"
    )
    runs_dir = tmp_path / "runs"
    res = repro("stress", str(recipe), "-n", "3", "-j", "1", "--runs-dir", str(runs_dir))
    said = " ".join(res.stdout.split())
    assert res.returncode == 1, res.stdout + res.stderr
    summary = json.loads((next(runs_dir.iterdir()) / "summary.json").read_text())
    whole = next(s for s in summary["signatures"] if all(s["top_frames"]))
    part = next(s for s in summary["signatures"] if not all(s["top_frames"]))
    assert part["runs"] == 2 and whole["runs"] == 1, summary["signatures"]
    assert f"race {whole['id']} has read_shared; write_shared" in said, said
    assert f"race {part['id']}" not in said, said
