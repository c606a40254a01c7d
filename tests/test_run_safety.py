"""Hostile and faulty conditions around a run directory (issue 11, items 2, 3, 11, 12, 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import repro
from tsan_helpers import PROGRAMS, compile_c


def _recipe(tmp_path: Path, command: str, timeout: float = 30) -> Path:
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: t\n"
        f"reproducer: {{command: {json.dumps(command)}, timeout: {timeout}}}\n"
        "target: {functions: [read_shared, write_shared]}\n"
    )
    return r


def _clean_stress(tmp_path: Path, runs: int) -> Path:
    """The run directory of a stress of ``runs`` runs that never race (exit 1)."""
    r = _recipe(tmp_path, "true")
    runs_dir = tmp_path / "runs"
    res = repro("stress", str(r), "-n", str(runs), "-j", "1", "--runs-dir", str(runs_dir))
    assert res.returncode == 1, res.stdout + res.stderr
    return next(runs_dir.iterdir())


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "repro", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},
        start_new_session=True,
    )


def _runs(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == "run"]


def _wait(run_dir_parent: Path, n: int) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for d in run_dir_parent.glob("*"):
            if (d / "events.jsonl").exists() and len(_runs(d)) >= n:
                return d
        time.sleep(0.05)
    pytest.fail(f"no {n} runs under {run_dir_parent}")


def test_second_process_on_a_run_directory_is_refused(tmp_path: Path) -> None:
    r = _recipe(tmp_path, "sleep 0.05")
    runs = tmp_path / "runs"
    first = _start("stress", str(r), "--runs", "100000", "-j", "1", "--runs-dir", str(runs))
    try:
        run_dir = _wait(runs, 3)
        second = repro("stress", "--resume", str(run_dir), "-n", "10")
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another repro process is using this run directory" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
    before = len(_runs(run_dir))
    res = repro("stress", "--resume", str(run_dir), "-n", str(before + 4))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    indices = [e["index"] for e in _runs(run_dir)]
    assert len(indices) == len(set(indices)) == before + 4


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lost") / "lost_history"
    return compile_c(PROGRAMS / "lost_history.c", out)


def test_reproducer_left_by_a_killed_repro_is_ended_and_never_counted(
    tmp_path: Path, lost: Path
) -> None:
    """kill -9 leaves the reproducer running; its late report must not become a hit of
    the resumed run that reuses its index, and the resume ends it."""
    marker = tmp_path / "orphan-reported"
    script = tmp_path / "run.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{tmp_path}/started" ]; then\n'
        f'  touch "{tmp_path}/started"; sleep 4; touch "{marker}"\n'
        f'  TSAN_OPTIONS="$TSAN_OPTIONS history_size=7" exec {lost}\n'
        "fi\n"
        "sleep 6\n"
    )
    script.chmod(0o755)
    r = _recipe(tmp_path, str(script))
    runs = tmp_path / "runs"
    proc = _start("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(runs))
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)  # repro only: its reproducer lives on
    proc.wait(timeout=30)
    run_dir = next(runs.iterdir())
    out = tmp_path / "s.json"
    res = repro("stress", "--resume", str(run_dir), "--json-out", str(out))
    assert "ended 1 reproducer" in res.stdout, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["hits"] == 0 and data["runs"] == 1, data["outcomes"]
    assert not marker.exists()  # the orphan was ended before it could report


def test_damaged_run_directories_are_named_not_crashed_on(tmp_path: Path) -> None:
    run_dir = _clean_stress(tmp_path, 3)
    events = run_dir / "events.jsonl"
    lines = events.read_bytes().splitlines(keepends=True)
    events.write_bytes(lines[0] + b"\xff\xfe not utf-8\n" + b"".join(lines[1:]))
    res = repro("report", str(run_dir), "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["summary"]["runs"] == 3
    assert any("events.jsonl:2" in p and "UTF-8" in p for p in doc["problems"])
    (run_dir / "meta.json").write_text("[1, 2]")
    for args in (("report", str(run_dir)), ("stress", "--resume", str(run_dir))):
        res = repro(*args)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "meta.json" in res.stderr and "not a JSON object" in res.stderr


def test_repeated_runs_and_unknown_event_types_are_named(tmp_path: Path) -> None:
    run_dir = _clean_stress(tmp_path, 3)
    events = run_dir / "events.jsonl"
    first_run = next(line for line in events.read_text().splitlines() if '"event":"run"' in line)
    with events.open("a") as f:
        f.write(first_run + "\n")
        f.write(json.dumps({"event": "probe-v9", "x": 1}) + "\n")
    res = repro("report", str(run_dir), "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["summary"]["runs"] == 3
    problems = "\n".join(doc["problems"])
    assert "counted once" in problems and "events.jsonl:" in problems
    assert "'probe-v9' (1)" in problems


def test_a_resume_after_a_torn_last_line_loses_no_run(tmp_path: Path) -> None:
    """A kill mid-write leaves the last event without its newline; the resume's first
    event ran on from it, and the two made one unreadable line: a run lost, and the
    report stated another rate than the console."""
    run_dir = _clean_stress(tmp_path, 4)
    events = run_dir / "events.jsonl"
    data = events.read_bytes()
    events.write_bytes(data[: len(data) - len(data.splitlines()[-1]) // 2 - 1])
    report = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert any("cut short" in p for p in report["problems"]), report["problems"]
    res = repro("stress", "--resume", str(run_dir), "-n", "6")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cut short by a kill" in " ".join((res.stdout + res.stderr).split())
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert summary["runs"] == report["summary"]["runs"] == 6
    assert all(line.startswith(b'{"') for line in events.read_bytes().splitlines())
    assert not [p for p in report["problems"] if "not JSON" in p], report["problems"]


def test_versions_that_cannot_be_had_fail_before_any_run(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for v in ("3.13.5", "3.13.15"):
        (mirror / f"Python-{v}.tar.xz").write_bytes(b"")
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: v\n"
        f"python: {{version: '3.13.5', source: {json.dumps(str(mirror))}}}\n"
        "reproducer: {command: '{python} -c pass'}\n"
        "target: {functions: [bytes_hash]}\n"
    )
    t0 = time.monotonic()
    res = repro(
        "bisect", str(r), "--versions", "3.13.5..3.13.15", "--runs-dir", str(tmp_path / "runs")
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert time.monotonic() - t0 < 30
    err = " ".join(res.stderr.split())
    assert "9 of 11 releases cannot be had" in err and "3.13.6" in err and "3.13.14" in err
    assert not list((tmp_path / "runs").glob("*"))  # nothing started
    # A source that is a file of another release: refused up front too.
    r.write_text(
        r.read_text().replace(
            json.dumps(str(mirror)), json.dumps(str(mirror / "Python-3.13.5.tar.xz"))
        )
    )
    res = repro(
        "bisect", str(r), "--versions", "3.13.5,3.13.15", "--runs-dir", str(tmp_path / "runs")
    )
    assert res.returncode == 2 and "is CPython 3.13.5" in " ".join(res.stderr.split())


def test_huge_output_is_kept_bounded(tmp_path: Path) -> None:
    r = _recipe(tmp_path, "head -c 60000000 /dev/zero | tr '\\\\0' x; echo; exit 3")
    runs = tmp_path / "runs"
    res = repro("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(runs))
    assert res.returncode == 1, res.stdout + res.stderr
    outputs = list(runs.glob("*/logs/*/output.txt"))
    assert outputs, "the crash's log is kept"
    size = outputs[0].stat().st_size
    assert size < 9_000_000
    assert b"bytes cut from the middle of this file" in outputs[0].read_bytes()


def test_a_reproducer_built_without_tsan_is_named(tmp_path: Path) -> None:
    """A Rust crate built without `sanitize: rust` ran clean in every run: evidence, to
    a bisect, that the race was gone. The program is judged before the runs."""
    src = PROGRAMS / "lost_history.c"
    plain = tmp_path / "plain"
    subprocess.run(["gcc", "-O1", "-o", str(plain), str(src), "-pthread"], check=True)
    instrumented = compile_c(src, tmp_path / "instrumented")
    for program, warned in ((plain, True), (instrumented, False)):
        r = _recipe(tmp_path, str(program))
        res = repro("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(tmp_path / "runs"))
        said = " ".join((res.stdout + res.stderr).split())
        assert ("has no TSAN in it" in said) is warned, said


def test_an_unterminated_tail_longer_than_any_event_is_not_cut(tmp_path: Path) -> None:
    """The mend looks back 1 MiB for the last newline; with none there it cut the log to
    nothing, every run with it. No event is that long: the tail is ended, not cut, and
    the runs after it are read."""
    run_dir = _clean_stress(tmp_path, 3)
    events = run_dir / "events.jsonl"
    with events.open("ab") as f:
        f.write(b"x" * (3 << 19))  # 1.5 MiB, no newline
    res = repro("stress", "--resume", str(run_dir), "-n", "4")
    assert res.returncode == 1, res.stdout + res.stderr
    assert json.loads((run_dir / "summary.json").read_text())["runs"] == 4
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["summary"]["runs"] == 4
    assert any("not JSON" in p for p in doc["problems"]), doc["problems"]


def test_a_target_report_in_the_middle_of_a_huge_log_is_counted(tmp_path: Path) -> None:
    """A run that reported thousands of other races wrote the target's report in the
    middle of a 24 MB log; the log was parsed from its first and last 4 MB, and the
    run counted as a miss ("other races"). The log is read whole, and the file kept
    (cut to its ends) still holds the target's report, which the bug report quotes."""
    program = compile_c(PROGRAMS / "many_races.c", tmp_path / "many_races")
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: t\n"
        f"reproducer: {{command: {json.dumps(str(program) + ' 100')}, timeout: 120}}\n"
        "target: {functions: [write_shared]}\n"
        "tsan: {options: {suppress_equal_stacks: 0, suppress_equal_addresses: 0}}\n"
    )
    runs = tmp_path / "runs"
    out = tmp_path / "s.json"
    res = repro(
        "stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(runs), "--json-out", str(out)
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["hits"] == 1, data["outcomes"]
    logs = list(runs.glob("*/logs/*/tsan*"))
    assert len(logs) == 1
    kept = logs[0].read_bytes()
    assert len(kept) < 9_000_000  # cut, as any output
    assert b"bytes cut from the middle of this file" in kept
    assert b"write_shared" in kept  # the target's report survived the cut
    report = repro("report", str(next(runs.iterdir())))
    assert report.returncode == 0, report.stderr
    assert "write_shared" in report.stdout


def test_a_resume_under_other_tsan_options_is_refused(tmp_path: Path) -> None:
    """`TSAN_OPTIONS=report_bugs=0`-like changes are refused before a stress starts;
    a resume took the shell's TSAN_OPTIONS as they were then, and added runs made
    under other options (history_size, which decides whether the target's stack can
    be restored) to the runs recorded, as one rate."""
    program = compile_c(PROGRAMS / "lost_history.c", tmp_path / "lost")
    run_dir = tmp_path / "runs"
    r = _recipe(tmp_path, str(program))
    env = {k: v for k, v in os.environ.items() if k != "TSAN_OPTIONS"}
    first = repro("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(run_dir), env=env)
    assert first.returncode in (0, 1), first.stdout + first.stderr
    (rd,) = run_dir.iterdir()
    res = repro(
        "stress", "--resume", str(rd), "-n", "2", env={**env, "TSAN_OPTIONS": "history_size=7"}
    )
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said
    assert "TSAN_OPTIONS" in said and "history_size=7" in said, said
    assert "start a new stress" in said, said
    runs = [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in runs if e.get("event") == "run") == 1  # nothing added
    # The same environment resumes as before.
    again = repro("stress", "--resume", str(rd), "-n", "2", env=env)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    runs = [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()]
    assert sum(1 for e in runs if e.get("event") == "run") == 2


def test_a_race_of_a_child_the_reproducer_did_not_wait_for_is_counted(tmp_path: Path) -> None:
    """A reproducer that starts the racy program in the background and exits: its
    process group was killed the moment it exited, before TSAN in the child could
    report, and every run counted clean. The child is part of the run for a few
    seconds; one that outlives that is killed, and the end says so."""
    program = compile_c(PROGRAMS / "lost_history.c", tmp_path / "racy")
    r = _recipe(tmp_path, f"({program} &) ; exit 0")
    out = tmp_path / "s.json"
    res = repro("stress", str(r), "-n", "2", "-j", "1", "--runs-dir", str(tmp_path / "runs"),
                "--json-out", str(out))  # fmt: skip
    data = json.loads(out.read_text())
    assert data["hits"] == 2, res.stdout + res.stderr
    assert data["lingered"] == 0
    # A child that outlives the grace: killed, counted as what was seen, and said.
    r = _recipe(tmp_path, "(sleep 30 &) ; exit 0")
    t0 = time.monotonic()
    res = repro("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(tmp_path / "runs2"),
                "--json-out", str(out))  # fmt: skip
    assert time.monotonic() - t0 < 25
    data = json.loads(out.read_text())
    assert data["lingered"] == 1, res.stdout + res.stderr
    said = " ".join(res.stdout.split())
    assert "processes of its own still running" in said
    assert "1 run left processes running at exit" in said  # the live panel says it too
    # A run killed at its timeout left nothing behind by exiting: no such note (sweep 14
    # had it for 3 of 4 runs of a reproducer with no children).
    # The shell dies at the timeout's SIGTERM; its child, slow to go, is SIGKILLed.
    slow = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(5)"
    r = _recipe(tmp_path, f"{sys.executable} -c '{slow}'; true", timeout=0.3)
    res = repro("stress", str(r), "-n", "3", "-j", "1", "--runs-dir", str(tmp_path / "runs3"),
                "--json-out", str(out))  # fmt: skip
    data = json.loads(out.read_text())
    assert data["outcomes"].get("timeout") == 3 and data["lingered"] == 0, res.stdout
    assert "still running" not in " ".join(res.stdout.split())
