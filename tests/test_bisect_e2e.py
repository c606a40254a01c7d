"""`repro bisect` end to end on git repositories the tests create (the demo's history)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TEST_CONFIDENCE, repro

from repro.report.fmt import floor_runs
from repro.tsan.outcome import Outcome

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

FIX_SUBJECT = "Publish the result before unlocking"
RACE_SUBJECT = "Publish results outside the lock"


@pytest.fixture()
def demo(tmp_path: Path) -> tuple[Path, Path]:
    recipe = make_demo_recipe(tmp_path, confidence=TEST_CONFIDENCE)
    return tmp_path / "ticketq", recipe


def subject_of(repo: Path, sha: str) -> str:
    return subprocess.run(
        ["git", "log", "-1", "--format=%s", sha],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_bisect_finds_the_fix(demo: tuple[Path, Path], tmp_path: Path) -> None:
    repo, recipe = demo
    out = tmp_path / "bisect.json"
    res = repro("bisect", str(recipe), "--runs-dir", str(tmp_path / "runs"), "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["direction"] == "fix"
    assert data["culprit"]["subject"] == FIX_SUBJECT
    assert subject_of(repo, data["culprit"]["sha"]) == FIX_SUBJECT
    assert data["confidence"] >= 0.99
    # A step is skipped exactly when it did not build (tests/test_bisect_range.py makes a
    # history where the bisect must meet such commits; the demo's may not).
    for s in data["steps"]:
        assert (s["verdict"] == "skipped") == (s["built"] is False), s
    assert data["builds"] >= 3 and data["runs"] > 0
    assert FIX_SUBJECT in res.stdout


def test_bisect_finds_the_regression(demo: tuple[Path, Path], tmp_path: Path) -> None:
    repo, recipe = demo
    out = tmp_path / "bisect.json"
    res = repro(
        "bisect",
        str(recipe),
        "--find",
        "regression",
        "--clean",
        "v1.0",
        "--racy",
        "v1.1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["direction"] == "regression"
    assert data["culprit"]["subject"] == RACE_SUBJECT
    # The answer rests on the commit before the culprit: the last clean one.
    at = data["information"]["at_answer"]
    assert at["role"] == "last clean commit"
    assert subject_of(repo, at["commit"]) == subject_of(repo, data["culprit"]["sha"] + "^")


def test_bisect_refuses_a_clean_end_that_races(demo: tuple[Path, Path], tmp_path: Path) -> None:
    _, recipe = demo
    # v1.2~2 is the commit just before the fix: still racy, so it is no clean end.
    res = repro(
        "bisect",
        str(recipe),
        "--racy",
        "v1.1",
        "--fixed",
        "v1.2~2",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "not a clean end" in res.stdout


def test_bisect_refuses_a_racy_end_that_does_not_reproduce(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    _, recipe = demo
    res = repro(
        "bisect",
        str(recipe),
        "--racy",
        "v1.0",
        "--fixed",
        "main",
        "--calibration-runs",
        "30",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert res.returncode == 1
    assert "did not reproduce the target race in 30 runs" in res.stdout


def test_resume_after_kill(demo: tuple[Path, Path], tmp_path: Path) -> None:
    repo, recipe = demo
    runs_dir = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "bisect", str(recipe), "--runs-dir", str(runs_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},
        start_new_session=True,
    )
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            dirs = list(runs_dir.glob("*")) if runs_dir.exists() else []
            if dirs and (dirs[0] / "events.jsonl").exists():
                lines = (dirs[0] / "events.jsonl").read_text().splitlines()
                events = [json.loads(x) for x in lines if x.endswith("}")]
                if sum(1 for e in events if e.get("phase") == "bisect") >= 3:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the bisect never reached its third bisect run")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (run_dir,) = runs_dir.iterdir()
    before = (run_dir / "events.jsonl").read_text().splitlines()
    # Runs under other TSAN_OPTIONS of the shell's would join the same rates: refused.
    other = repro("bisect", "--resume", str(run_dir), env={"TSAN_OPTIONS": "history_size=7"})
    said = " ".join((other.stdout + other.stderr).split())
    assert other.returncode == 2 and "variable TSAN_OPTIONS" in said, said
    assert (run_dir / "events.jsonl").read_text().splitlines() == before
    # The folder of a run the kill caught in flight (one more, whatever the kill caught).
    killed = run_dir / "logs" / "run-999999-inflight"
    (killed / "tsan.1").parent.mkdir(parents=True)
    (killed / "tsan.1").write_text("WARNING: ThreadSanitizer: data race (pid=1)\n")
    out = tmp_path / "bisect.json"
    res = repro("bisect", "--resume", str(run_dir), "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming" in res.stdout
    after = (run_dir / "events.jsonl").read_text().splitlines()
    # Nothing measured before the kill is lost or measured again.
    assert after[: len(before)] == before
    runs = [json.loads(x) for x in after if json.loads(x).get("event") == "run"]
    # What is left in logs/ is the runs' that count: the in-flight ones are gone.
    logged = {Path(r["log_dir"]).name for r in runs if r.get("log_dir")}
    folders = {d.name for d in (run_dir / "logs").glob("run-*")}
    assert not killed.exists() and folders <= logged, sorted(folders - logged)
    indexes = [r["index"] for r in runs]
    assert len(indexes) == len(set(indexes))
    calib_before = sum(1 for x in before if json.loads(x).get("phase") == "calibrate")
    calib_after = sum(1 for r in runs if r.get("phase") == "calibrate")
    assert calib_after == calib_before
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT
    assert subject_of(repo, data["culprit"]["sha"]) == FIX_SUBJECT


def test_plan_then_resume(demo: tuple[Path, Path], tmp_path: Path) -> None:
    """--plan says what the bisect will cost against the information bound, and stops;
    --resume spends it and states the runs used against the bound."""
    _, recipe = demo
    runs = tmp_path / "runs"
    res = repro("bisect", str(recipe), "--plan", "--runs-dir", str(runs), "-j", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    text = plan_text = " ".join(res.stdout.split())
    assert "plan: about" in text and "Fano's bound" in text
    # The racy end was built here: its build time is measured, not guessed (a plan took
    # a 1.8 s build as 3 min 11 s, "30 runs' worth, until one is measured").
    assert "building ticketq" in text and "until one is measured" not in text, text
    run_dir = next(runs.iterdir())
    # Calibrated one run at a time: probes two at a time would be weighed against a rate
    # that is not theirs. Without -j the resume keeps the bisect's own.
    res = repro("bisect", "--resume", str(run_dir), "-j", "2")
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "was run with -j 1" in text, text
    planned = json.loads((run_dir / "meta.json").read_text())["plan"]
    assert planned["runs"] > 0 and planned["bound_runs"] > 0
    # One bound at one rate, in the console and the report.
    assert (
        f"fewer than {floor_runs(planned['bound_runs'])} runs on average at rate "
        f"{planned['rate']:.1%}" in plan_text
    )
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["status"]["state"] == "planned", doc["status"]
    assert doc["bisect"]["information"]["bound_runs"] == planned["bound_runs"]
    # What the bisect began with stays: a --confidence given now would be ignored.
    res = repro("bisect", "--resume", str(run_dir), "--confidence", "0.6", "--racy", "v1.0")
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "--racy, --confidence cannot be given" in text, text
    out = tmp_path / "b.json"
    res = repro("bisect", "--resume", str(run_dir), "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT
    assert json.loads((run_dir / "meta.json").read_text())["jobs"] == 1
    info = data["information"]
    assert info["bisect_runs"] > 0 and info["bound_runs"] > 0
    # ratio from the unrounded bound; bound_runs is shown to 0.1
    assert info["ratio"] == pytest.approx(info["bisect_runs"] / info["bound_runs"], rel=0.02)
    assert "x the bound" in " ".join(res.stdout.split())
    # The runs at the first clean commit (the fix), counted from the event log apart.
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    at_fix = [
        e
        for e in events
        if e.get("event") == "run"
        and e.get("phase") == "bisect"
        and e.get("id") == data["culprit"]["id"]
        and Outcome(e["outcome"]).is_evidence
    ]
    at = info["at_answer"]
    assert at["commit"] == data["culprit"]["label"] and at["role"] == "first fixed commit"
    assert at["runs"] == len(at_fix) > 0
    assert 0 < at["floor_runs"] < info["bound_runs"] + at["runs"]
    assert f"{at['runs']} of them at {at['commit']}" in " ".join(res.stdout.split())
    md = repro("report", str(run_dir)).stdout
    assert "Runs against the bound" in md and f"{info['bisect_runs']} runs after calibration" in md
    assert f"{at['runs']} of them at {at['commit']} (the first fixed commit)" in " ".join(
        md.split()
    )


def test_a_calibration_with_no_hit_names_the_near_miss_early(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A target that names a file the race's frames lack (here the header; in a maturin
    wheel without debug info, every file) calibrated in silence to its run limit, while
    `repro stress` would have named the race that nearly matched. The calibration says
    it after its first runs, while it goes on."""
    _, recipe = demo
    res = repro(
        "bisect", str(recipe), "--plan", "--calibration-runs", "30",
        "--set", "target.files=[ticketq.h]",
        "--set", "reproducer.command=./stress_test 10 100 1000",
        "--runs-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    out = " ".join(res.stdout.split())
    assert res.returncode != 0, out
    early = out.find("near miss: race")
    assert early != -1, out
    assert "target.files names 'ticketq.h'" in out, out
    # said before the calibration ended, not only after it; so frequent a near miss
    # with no hit stops the calibration at its early look
    stop = out.find("the target never showed in the racy end's first 20 runs")
    assert early < stop and "the target is likely wrong" in out, out
    # said once: the end of the bisect printed the same near miss again below the stop
    assert out.count("target.files names 'ticketq.h'") == 1, out
    # ... and the report of that bisect says it too: a reader of the issue sees which
    # race nearly matched and the change to make, as the console said.
    (run_dir,) = (tmp_path / "runs").iterdir()
    md = repro("report", str(run_dir))
    assert md.returncode == 0, md.stdout + md.stderr
    body = " ".join(md.stdout.split())
    assert "was not seen in this run" in body, body
    assert "Races that nearly match it" in body and "ticketq.h" in body, body
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    (miss, *_) = doc["near_misses"]
    assert f"race {miss['signature']}" in out, out  # the console's race
    assert any("ticketq.h" in line for line in miss["lines"]), miss
    assert 0 < miss["runs"] <= miss["of_runs"] == 20, miss


def test_the_calibrations_progress_says_it_stops_at_its_hits(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    """The calibration's run limit is a cap: the live panel showed "runs 3 / 399" on a
    calibration that ended after 10 runs at its fifth hit."""
    import pexpect

    _, recipe = demo
    child = pexpect.spawn(
        sys.executable,
        [
            "-m", "repro", "bisect", str(recipe), "--plan",
            "--set", "reproducer.command=./stress_test 3 100 1000 && sleep 0.3",
            "--runs-dir", str(tmp_path / "runs"),
        ],
        env={**os.environ, "COLUMNS": "160"},
        encoding="utf-8",
        timeout=300,
    )  # fmt: skip
    child.expect(r"\d+ \(until 5 hits, at most \d+\)\s+\(\d+ running")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert not re.search(r"\d+ / \d+\s+\(\d+ running", child.before or "")


def test_a_resume_says_when_the_recipe_file_changed(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    """A resume runs the recipe as the run began with it (its copy), and says so when the
    file now reads otherwise; the bisect it suggests would be of another recipe, so it
    suggests none."""
    _, recipe = demo
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "2", "-j", "1", "--runs-dir", str(runs))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    run_dir = next(runs.iterdir())
    res = repro("stress", "--resume", str(run_dir), "--runs", "3", "-j", "1")
    assert "changed since this run began" not in res.stdout
    recipe.write_text(recipe.read_text().replace("tq_poll", "tq_size"))
    res = repro("stress", "--resume", str(run_dir), "--runs", "40", "-j", "1")
    text = " ".join(res.stdout.split())
    assert res.returncode in (0, 1), text
    assert (
        f"{recipe} changed since this run began; the resume runs the recipe as it was run" in text
    )
    hits = json.loads((run_dir / "summary.json").read_text())["hits"]
    assert hits > 0  # the demo's race shows in 40-55% of runs: 40 runs hit
    assert "--calibration-from" not in text
