"""The stress loop on real TSAN programs, through the real command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pexpect
import pytest
from conftest import repro
from tsan_helpers import PROGRAMS, compile_c, cycle_script, with_history


def recipe(tmp_path: Path, command: str, functions: list[str], timeout: float = 30) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(
        "name: t\n"
        f"reproducer:\n  command: {json.dumps(command)}\n  timeout: {timeout}\n"
        f"target:\n  functions: {json.dumps(functions)}\n"
    )
    return p


def stress(tmp_path: Path, r: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "summary.json"
    res = repro(
        "stress", str(r), "--runs-dir", str(tmp_path / "runs"), "--json-out", str(out), *args
    )
    assert "Traceback" not in res.stderr, res.stderr
    data = json.loads(out.read_text()) if out.exists() else {}
    return res.returncode, data, res.stdout + res.stderr


def test_flaky_race_is_reproduced_and_named(tmp_path: Path, tsan_bin: Path) -> None:
    r = recipe(tmp_path, str(tsan_bin / "flaky_race"), ["publish", "poll_result"])
    code, data, out = stress(tmp_path, r, "--runs", "60", "--jobs", "2")
    assert code == 0, out
    assert data["runs"] == 60
    assert 0 < data["hits"] <= 60
    assert data["rate"] == data["hits"] / 60
    lo, hi = data["rate_ci95"]
    assert lo <= data["rate"] <= hi
    targets = [s for s in data["signatures"] if s["target"]]
    assert targets, data["signatures"]
    frames = [f for side in targets[0]["top_frames"] for f in side]
    assert "publish" in frames and "poll_result" in frames
    assert data["outcomes"]["target"] == data["hits"]
    assert sum(data["outcomes"].values()) == 60
    # Logs of the runs that hit are kept.
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    assert any((run_dir / "logs").glob("run-*/tsan*"))


def test_race_free_program_gives_no_hit_in_100_runs(tmp_path: Path, tsan_bin: Path) -> None:
    r = recipe(tmp_path, str(tsan_bin / "race_free_counter"), ["worker"])
    code, data, out = stress(tmp_path, r, "--runs", "100", "--jobs", "2")
    assert code == 1, out
    assert data["hits"] == 0
    assert data["outcomes"]["clean"] == 100
    assert data["signatures"] == []


def test_other_races_are_counted_apart(tmp_path: Path, tsan_bin: Path) -> None:
    r = recipe(tmp_path, str(tsan_bin / "noise_only"), ["target_writer"])
    code, data, _ = stress(tmp_path, r, "--runs", "10")
    assert code == 1
    assert data["hits"] == 0
    assert data["outcomes"]["other"] == 10
    (sig,) = data["signatures"]
    assert not sig["target"]
    assert "noise_writer" in sig["top_frames"][0]

    r = recipe(tmp_path, str(tsan_bin / "two_races"), ["target_writer"])
    code, data, _ = stress(tmp_path, r, "--runs", "10")
    assert code == 0
    assert data["hits"] == 10
    kinds = {s["target"]: s for s in data["signatures"]}
    assert set(kinds) == {True, False}
    assert "noise_writer" in kinds[False]["top_frames"][0]


def test_until_first_stops_at_the_first_hit(tmp_path: Path, tsan_bin: Path) -> None:
    r = recipe(tmp_path, str(tsan_bin / "flaky_race"), ["publish", "poll_result"])
    code, data, _ = stress(tmp_path, r, "--until-first", "--jobs", "1", "--time", "2m")
    assert code == 0
    assert data["hits"] == 1
    assert data["first_hit_run"] == data["runs"]
    assert data["time_to_first_hit"] is not None


def test_the_first_hits_run_number_names_its_logs_and_its_place_in_the_timeline(
    tmp_path: Path, tsan_bin: Path
) -> None:
    """Under -j 2 runs finish out of order; "run N" is one run everywhere."""
    r = recipe(tmp_path, str(tsan_bin / "flaky_race"), ["publish", "poll_result"])
    code, data, out = stress(tmp_path, r, "--runs", "40", "--jobs", "2")
    assert code == 0, out
    n = data["first_hit_run"]
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    (folder,) = (run_dir / "logs").glob(f"run-{n:06d}-*")
    assert "publish" in "".join(p.read_text() for p in folder.glob("tsan*"))
    assert f"(run {n})" in " ".join(out.split())
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["summary"]["first_hit_run"] == n
    (bucket,) = [b for b in doc["timeline"] if b["first"] <= n <= b["last"]]
    assert bucket["outcomes"]["target"] >= 1
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    first = next(e for e in events if e.get("event") == "run" and e["outcome"] == "target")
    assert first["index"] + 1 == n


def test_a_report_missing_one_stack_is_not_counted_as_one_more_race(tmp_path: Path) -> None:
    """One race, whose earlier access TSAN restores in every other run only (its
    history is cut to nothing in the others): "? | read_shared" is that race again."""
    from tsan_helpers import PROGRAMS, compile_c

    prog = compile_c(PROGRAMS / "lost_history.c", tmp_path / "prog")
    wrapper = tmp_path / "run.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"n=$(cat {tmp_path}/count 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/count\n"
        "if [ $((n % 2)) = 1 ]; then h=0; else h=7; fi\n"
        f'TSAN_OPTIONS="$TSAN_OPTIONS history_size=$h" exec {prog}\n'
    )
    wrapper.chmod(0o755)
    r = recipe(tmp_path, str(wrapper), ["not_in_this_program"])
    code, data, out = stress(tmp_path, r, "--runs", "4", "--jobs", "1")
    assert code == 1, out
    sides = sorted(tuple(map(bool, s["top_frames"])) for s in data["signatures"])
    assert sides == [(False, True), (True, True)], data["signatures"]  # both shapes seen
    assert data["other_races"] == {"runs": 4, "distinct": 1}
    assert "other races: 1 distinct race, in 4 runs" in " ".join(out.split())
    run_dir = Path(out.split("run directory: ")[1].split()[0])
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["summary"]["other_races"]["distinct"] == 1


def test_a_resume_continues_the_same_experiment(tmp_path: Path, tsan_bin: Path) -> None:
    """A resume may raise the limits, nothing that changes the rate (a --ref would mix
    two commits' runs into one rate; -j another parallelism); one of a finished
    --until-first has nothing left to run (it ran until interrupted)."""
    r = recipe(tmp_path, str(tsan_bin / "flaky_race"), ["publish", "poll_result"])
    code, data, _ = stress(tmp_path, r, "--until-first", "--jobs", "1")
    assert code == 0 and data["hits"] == 1
    run_dir = Path(data["run_dir"])
    res = repro("stress", "--resume", str(run_dir), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["runs"] == data["runs"] and again["hits"] == 1
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["jobs"] == 1  # a resume without -j keeps the run's own
    for extra, said in (
        (["--ref", "main"], "--ref cannot be given"),
        (["--timeout", "1", "--threads", "2"], "--threads, --timeout cannot be given"),
        ([str(r)], "a recipe file cannot be given"),
        (["-j", "2"], "was run with -j 1"),
    ):
        res = repro("stress", "--resume", str(run_dir), "--runs", "50", *extra)
        text = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2 and said in text and "Traceback" not in text, text
    assert json.loads((run_dir / "summary.json").read_text())["runs"] == data["runs"]
    # --until-first given now asks for a new hit: it stops at one, well before --runs.
    res = repro("stress", "--resume", str(run_dir), "--until-first", "--runs", "2000",
                timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["hits"] == 2 and after["runs"] < data["runs"] + 2000


def test_hang_is_a_timeout_and_is_killed(tmp_path: Path) -> None:
    r = recipe(tmp_path, "sleep 30; echo never", ["x"], timeout=0.5)
    t0 = time.monotonic()
    code, data, _ = stress(tmp_path, r, "--runs", "2", "--jobs", "2")
    assert time.monotonic() - t0 < 20
    assert code == 1
    assert data["outcomes"]["timeout"] == 2


def test_crash_is_its_own_outcome(tmp_path: Path) -> None:
    r = recipe(tmp_path, "kill -SEGV $$", ["x"])
    code, data, _ = stress(tmp_path, r, "--runs", "3")
    assert code == 1
    assert data["outcomes"]["crash"] == 3


def test_a_segfault_caught_by_tsan_is_a_crash_not_a_miss(tmp_path: Path) -> None:
    # TSAN's handler catches the SIGSEGV and exits 66, as a run that only reported other
    # races does: sweep 15 counted such runs as misses, in the rate.
    prog = compile_c(PROGRAMS / "segv_after_race.c", tmp_path / "segv_after_race")
    r = recipe(tmp_path, str(prog), ["not_in_this_program"])
    code, data, out = stress(tmp_path, r, "--runs", "2", "--jobs", "1")
    assert code == 1
    assert data["outcomes"].get("crash") == 2 and not data["outcomes"].get("other"), data
    assert data["hits"] == 0 and data["rate"] in (None, 0.0), data
    said = " ".join(out.split())
    assert "SEGV caught by TSAN x2" in said and "2 of 2 runs are not in the rate" in said, out


def test_tsan_startup_failure_is_not_a_race(tmp_path: Path) -> None:
    # What an old TSAN runtime prints on a kernel with too many mmap random bits; it
    # also exits 66, the "races found" code.
    script = tmp_path / "fake_fatal.sh"
    script.write_text(
        "#!/bin/sh\necho 'FATAL: ThreadSanitizer: unexpected memory mapping "
        "0x7f0000000000-0x7f0000001000' >&2\nexit 66\n"
    )
    script.chmod(0o755)
    r = recipe(tmp_path, str(script), ["x"])
    code, data, out = stress(tmp_path, r, "--runs", "3")
    assert code == 1
    assert data["outcomes"]["tsan-failure"] == 3
    assert data["hits"] == 0
    assert "mmap_rnd_bits" in out


def test_missing_reproducer_is_a_clear_error(tmp_path: Path) -> None:
    r = recipe(tmp_path, "./does-not-exist --flag", ["x"])
    code, _, out = stress(tmp_path, r, "--runs", "3")
    assert code == 2
    assert "does-not-exist" in out
    assert "Traceback" not in out


def test_time_limit(tmp_path: Path) -> None:
    r = recipe(tmp_path, "sleep 0.2", ["x"])
    t0 = time.monotonic()
    code, data, _ = stress(tmp_path, r, "--time", "2s", "--jobs", "2")
    took = time.monotonic() - t0
    assert code == 1
    assert 4 <= data["runs"] <= 20
    assert took < 15


def test_ctrl_c_keeps_results_and_resume_continues(tmp_path: Path) -> None:
    r = recipe(tmp_path, "sleep 0.1", ["x"])
    runs_dir = tmp_path / "runs"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "repro", "stress", str(r), "--runs", "100000", "--runs-dir", str(runs_dir)],
        env={**os.environ, "COLUMNS": "160"},
        encoding="utf-8",
        timeout=60,
    )
    child.expect("stress t")  # the live display is up
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list(runs_dir.glob("*/events.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130  # interrupted: the README's promise
    out = child.before or ""
    assert "interrupted" in out
    (run_dir,) = runs_dir.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    first = summary["runs"]
    assert first >= 5
    events = (run_dir / "events.jsonl").read_text().splitlines()
    assert len(events) == first

    res = repro("stress", "--resume", str(run_dir), "--runs", str(first + 5))
    assert res.returncode == 1, res.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["runs"] == first + 5
    assert summary["interrupted"] is False
    indexes = [json.loads(e)["index"] for e in (run_dir / "events.jsonl").read_text().splitlines()]
    assert len(indexes) == len(set(indexes)) == first + 5


def test_rust_race_under_stress(tmp_path: Path) -> None:
    """Rust TSAN on the stable toolchain: std is not instrumented, so match by signature."""
    from tsan_helpers import PROGRAMS, compile_rust, have

    if not have("rustc"):
        import pytest

        pytest.skip("rustc is not installed")
    binary = compile_rust(PROGRAMS / "racy.rs", tmp_path / "racy_rs")
    r = recipe(tmp_path, str(binary), ["racy::store_value", "racy::load_value"])
    code, data, out = stress(tmp_path, r, "--runs", "5", "--jobs", "2")
    assert code == 0, out
    assert data["hits"] == 5
    targets = [s for s in data["signatures"] if s["target"]]
    frames = {f for side in targets[0]["top_frames"] for f in side}
    assert {"racy::store_value", "racy::load_value"} <= frames


def test_amplify_measures_each_knob(tmp_path: Path, tsan_bin: Path) -> None:
    r = recipe(tmp_path, str(tsan_bin / "flaky_race"), ["publish", "poll_result"])
    res = repro(
        "amplify",
        str(r),
        "--runs",
        "12",
        "--jobs",
        "1,2",
        "--taskset",
        "0",
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert res.returncode in (0, 1), res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run_dir / "summary.json").read_text())["settings"]
    assert [row["setting"] for row in rows] == ["recipe as is", "jobs=1", "jobs=2", "taskset=0"]
    assert all(row["runs"] == 12 for row in rows)
    assert all(0 <= row["hits"] <= 12 for row in rows)
    assert "hits/min" in res.stdout
    bad = repro("amplify", str(r))
    assert bad.returncode == 2
    assert "give at least one knob" in bad.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["stress", "--time", "999999999d"], "give at most 365d"),
        (["amplify", "--runs", "2", "--jobs", "0"], "--jobs 0: give 1 or more"),
        (["amplify", "--runs", "2", "--threads", "0,2"], "error: --threads: "),
    ],
)
def test_out_of_range_values_are_usage_errors(tmp_path: Path, args: list[str], said: str) -> None:
    """Not an internal error (an overflow in a timer, a pool of no workers)."""
    r = recipe(tmp_path, "true", ["x"])
    res = repro(args[0], str(r), *args[1:], "--runs-dir", str(tmp_path / "runs"))
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and said in text and "internal error" not in text, text


def test_a_report_says_when_the_run_record_is_gone(tmp_path: Path) -> None:
    """A run directory whose events.jsonl was lost: the report's figures start from
    nothing, and it says why instead of reading as a run that never ran."""
    r = recipe(tmp_path, "true", ["x"])
    _, data, _ = stress(tmp_path, r, "--runs", "2", "-j", "1")
    run_dir = Path(data["run_dir"])
    (run_dir / "events.jsonl").unlink()
    res = repro("report", str(run_dir))
    text = " ".join(res.stderr.split())
    assert res.returncode == 0 and "events.jsonl: missing, though" in text, text
    res = repro("report", str(run_dir / "summary.json"))
    assert res.returncode == 2 and "a file, not a run directory" in res.stderr


def test_a_second_interrupt_does_not_cut_the_closing_writes(tmp_path: Path) -> None:
    """Ctrl-C twice in quick succession (or `timeout`, which signals repro and its
    group): the record, the summary, --json-out and the resume hint are all written."""
    import signal
    import subprocess

    r = recipe(tmp_path, "sleep 0.3", ["x"])
    out = tmp_path / "s.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "stress", str(r), "--runs", "400", "-j", "1",
         "--runs-dir", str(tmp_path / "runs"), "--json-out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list((tmp_path / "runs").glob("*/events.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted: resume with" in text, text
    data = json.loads(out.read_text())
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["runs"] == data["runs"] >= 3
    assert json.loads((run_dir / "meta.json").read_text())["interrupted"] is True
    # The resume writes the run's --json-out again: it said "interrupted" after the
    # resume had finished.
    more = data["runs"] + 2
    res = repro("stress", "--resume", str(run_dir), "--runs", str(more))
    assert res.returncode == 1, res.stdout + res.stderr
    again = json.loads(out.read_text())
    assert again["runs"] == more and again["interrupted"] is False


def test_an_interrupt_during_setup_says_so_and_leaves_no_run_directory(tmp_path: Path) -> None:
    """Ctrl-C before any run (a slow setup step, a build) used to end repro with exit
    130 and not a word."""
    import signal
    import subprocess

    r = tmp_path / "r.yaml"
    r.write_text(
        "name: slowsetup\n"
        f"reproducer: {{command: 'true', setup: ['touch {tmp_path}/began; sleep 60']}}\n"
        "target: {functions: [x]}\n"
    )
    env = {**os.environ, "REPRO_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", "stress", str(r), "--runs", "3",
         "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "began").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err, out + err
    assert not list((tmp_path / "runs").glob("*")), "a run directory with no runs was left"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_stops_the_runs_instead_of_counting_crashes(tmp_path: Path, jobs: str) -> None:
    """A run whose output cannot be written fails ("crash"); on a full disk every run
    would, and each was counted. The first such run stops the stress, uncounted; so does
    a run that was in flight beside it (CI counted one as a crash)."""
    import subprocess

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(tiny)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (tiny / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 300 * 1024))
        r = recipe(tmp_path, "head -c 2000000 /dev/zero", ["x"])
        res = repro("stress", str(r), "--runs", "20", "-j", jobs, "--runs-dir", str(tiny / "runs"))
        text = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2, text
        # Said either way: the stop, or the record's own write that the full disk refused.
        assert "the disk is full" in text or "meta.json: No space left on device" in text, text
        (run_dir,) = (tiny / "runs").iterdir()
        events = run_dir / "events.jsonl"
        counted = events.read_text().splitlines() if events.exists() else []
        assert not any('"crash"' in e for e in counted), counted
    finally:
        subprocess.run(["umount", str(tiny)])


def test_a_stress_that_cannot_start_leaves_no_run_directory(tmp_path: Path) -> None:
    """A reproducer that does not exist is said before any run; the directory made for
    the runs would only be a husk that report and --resume refuse."""
    r = recipe(tmp_path, "./no-such-program", ["x"])
    res = repro("stress", str(r), "--runs", "2", "--runs-dir", str(tmp_path / "runs"))
    assert res.returncode == 2 and "no-such-program" in res.stderr, res.stderr
    assert not any((tmp_path / "runs").iterdir())


def test_setup_steps_say_what_runs_and_where_the_log_is(tmp_path: Path) -> None:
    r = recipe(tmp_path, "true", ["x"])
    r.write_text(r.read_text().replace("  timeout:", "  setup: ['echo preparing']\n  timeout:"))
    res = repro("stress", str(r), "--runs", "1", "--runs-dir", str(tmp_path / "runs"))
    text = " ".join(res.stdout.split())
    assert res.returncode == 1, text
    assert "setup 1/1: echo preparing (log: " in text and "setup.log)" in text, text


def test_a_setup_step_that_hangs_is_killed_with_what_it_started(tmp_path: Path) -> None:
    r = recipe(tmp_path, "true", ["x"])
    step = f"sleep 300 & echo $! > {tmp_path}/pid; wait"
    r.write_text(
        r.read_text().replace(
            "  timeout:", f"  setup: [{json.dumps(step)}]\n  setup_timeout: 2\n  timeout:"
        )
    )
    t0 = time.monotonic()
    res = repro("stress", str(r), "--runs", "1", "--runs-dir", str(tmp_path / "runs"))
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, text
    assert time.monotonic() - t0 < 60
    assert "reproducer.setup.0 failed (killed after 2 s, reproducer.setup_timeout)" in text, text
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the setup's sleep {pid} outlived it")


def test_a_run_that_lost_its_report_to_a_full_disk_is_not_counted_clean(
    tmp_path: Path,
) -> None:
    """On a nearly full disk a run's output took the last bytes, TSAN could not write
    its report, and a reproducer that exits 0 (a wrapper, a test runner that keeps its
    own status) was counted clean: evidence, to a bisect, that the race was gone."""
    import subprocess

    program = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "racy")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(tiny)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        (tiny / "filler").write_bytes(b"\0" * (4 * 1024 * 1024 - 200 * 1024))
        r = recipe(tmp_path, f"head -c 400000 /dev/zero; {program}; exit 0", ["increment_counter"])
        res = repro("stress", str(r), "--runs", "5", "-j", "1", "--runs-dir", str(tiny / "runs"))
        text = " ".join((res.stdout + res.stderr).split())
        assert res.returncode == 2, text
        assert "the disk is full" in text or "No space left on device" in text, text
        assert "clean 5" not in text and "0 of 5 runs" not in text, text
        for events in (tiny / "runs").glob("*/events.jsonl"):
            assert '"clean"' not in events.read_text(), events.read_text()
    finally:
        subprocess.run(["umount", str(tiny)])


def test_a_closed_terminal_keeps_what_was_measured(tmp_path: Path) -> None:
    """A dropped ssh session or a closed terminal window (SIGHUP) ended repro at once:
    no summary, a meta.json that said the run was still going, no word of a resume.
    Now it stops as on Ctrl-C and writes everything it can."""
    r = recipe(tmp_path, "sleep 0.2", ["x"])
    runs = tmp_path / "runs"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "repro", "stress", str(r), "--runs", "400", "-j", "1", "--runs-dir", str(runs)],
        env={**os.environ, "COLUMNS": "120"},
        timeout=60,
    )
    # Generous: on a loaded machine (CI beside a cargo build) the start took over 60 s.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        logs = list(runs.glob("*/events.jsonl"))
        if logs and len(logs[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no 3 runs in 180 s; repro printed: {child.before!r}")
    child.close(force=False)  # the terminal goes away: the kernel sends SIGHUP
    deadline = time.monotonic() + 60
    (run_dir,) = runs.iterdir()
    summary = run_dir / "summary.json"
    while not summary.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    data = json.loads(summary.read_text())
    assert data["interrupted"] is True and data["runs"] >= 3, data
    assert json.loads((run_dir / "meta.json").read_text())["interrupted"] is True
    res = repro("stress", "--resume", str(run_dir), "--runs", str(data["runs"] + 1))
    assert res.returncode == 1, res.stdout + res.stderr


def test_amplify_counts_a_setting_s_rate_over_the_runs_that_count(tmp_path: Path) -> None:
    """Sweep 14: the table read "4/10 | 44.4%": the rate left out the runs that could not
    count (incomplete reports) and the hits/runs column did not."""
    lost = compile_c(PROGRAMS / "lost_history.c", tmp_path / "lost")
    script = cycle_script(tmp_path / "cycle.sh", [with_history(7, lost), with_history(0, lost)])
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: t\n"
        f"reproducer: {{command: {json.dumps(str(script))}, timeout: 30}}\n"
        "target: {functions: [read_shared, write_shared]}\n"
    )
    res = repro(
        "amplify", str(r), "--runs", "4", "--jobs", "1", "--runs-dir", str(tmp_path / "runs")
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run_dir / "summary.json").read_text())["settings"]
    said = " ".join(res.stdout.split())
    for x in rows:  # every other run incomplete, whatever run the setting starts at
        assert x["hits"] == x["evidence_runs"] and 0 < x["evidence_runs"] < x["runs"] == 4, rows
        shown = f"{x['hits']}/{x['evidence_runs']} (+{4 - x['evidence_runs']} not counted)"
        assert shown in said, res.stdout
    assert "100.0%" in said, res.stdout
