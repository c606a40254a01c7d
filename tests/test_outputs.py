"""Where repro writes: faults of the user's files are exit 2 with the path, never "a bug".

Output paths are checked before any build or run, and a write that still fails at
the end keeps the answer on the screen and names the run directory. Read-only and
full file systems are real mounts in a private mount namespace (``unshare -m``).
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_CONFIDENCE, repro

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

FIX_SUBJECT = "Publish the result before unlocking"


def _recipe(tmp_path: Path, tsan_bin: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    data = {
        "name": "outputs",
        "reproducer": {"command": str(tsan_bin / "flaky_race"), "timeout": 30},
        "target": {"functions": ["publish", "poll_result"]},
    }
    path.write_text(json.dumps(data))
    return path


def _user_error(res: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback, no "bug"."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "bug in repro" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_runs_dir_that_is_a_file_is_a_user_error(tmp_path: Path, tsan_bin: Path) -> None:
    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("")
    for runs_dir in (not_a_dir, not_a_dir / "sub"):
        res = repro(
            "stress", str(_recipe(tmp_path, tsan_bin)), "-n", "1", "--runs-dir", str(runs_dir)
        )
        _user_error(res, str(runs_dir))


def test_cache_dir_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("")
    res = repro("builds", "list", env={"REPRO_CACHE_DIR": str(not_a_dir)})
    _user_error(res, f"REPRO_CACHE_DIR={not_a_dir}", "not a directory")


def _in_mount_namespace(
    tmp_path: Path, options: str, script: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with a fresh tmpfs (``options``) mounted on tmp_path/mnt, privately."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o {options} tmpfs {mnt}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.strip()}")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o {options} tmpfs {mnt} && {script}"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_read_only_runs_dir_is_a_user_error(tmp_path: Path, tsan_bin: Path) -> None:
    recipe = _recipe(tmp_path, tsan_bin)
    runs = tmp_path / "mnt" / "runs"
    res = _in_mount_namespace(
        tmp_path,
        "ro,size=64k",
        f"{sys.executable} -m repro stress {recipe} -n 1 --runs-dir {runs}",
    )
    _user_error(res, str(runs), "Read-only file system")


def test_full_disk_is_a_user_error(tmp_path: Path, tsan_bin: Path) -> None:
    """The disk fills up after the checks: the last-resort mapping still says what and where."""
    recipe = _recipe(tmp_path, tsan_bin)
    mnt = tmp_path / "mnt"
    res = _in_mount_namespace(
        tmp_path,
        "size=64k",
        f"dd if=/dev/zero of={mnt}/fill bs=4k count=64 2>/dev/null;"
        f"{sys.executable} -m repro stress {recipe} -n 1 --runs-dir {mnt}/runs",
    )
    _user_error(res, str(mnt / "runs"), "No space left on device")


def test_environment_fault_is_only_for_the_users_files() -> None:
    from repro.app.outputs import environment_fault

    assert environment_fault(PermissionError(errno.EACCES, "Permission denied", "/x/y")) == (
        "/x/y: Permission denied"
    )
    assert environment_fault(OSError(errno.ENOSPC, "No space left on device")) is not None
    assert environment_fault(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    assert environment_fault(OSError(errno.EIO, "I/O error", "/x")) is None
    assert environment_fault(ValueError("x")) is None


def test_json_out_directory_is_refused_before_any_run(tmp_path: Path, tsan_bin: Path) -> None:
    runs = tmp_path / "runs"
    res = repro(
        "stress", str(_recipe(tmp_path, tsan_bin)), "-n", "50", "--runs-dir", str(runs),
        "--json-out", str(tmp_path),
    )  # fmt: skip
    _user_error(res, "--json-out", str(tmp_path), "is a directory")
    assert not runs.exists() or not any(runs.iterdir())  # no run was started


@pytest.fixture()
def demo(tmp_path: Path) -> Path:
    return make_demo_recipe(tmp_path, confidence=TEST_CONFIDENCE)


def test_bisect_report_under_proc_is_refused_before_any_build(demo: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    res = repro("bisect", str(demo), "--runs-dir", str(runs), "--report", "/proc/x.md")
    _user_error(res, "--report /proc/x.md")
    assert not runs.exists() or not any(runs.iterdir())


def test_bisect_prints_its_culprit_when_json_out_fails_at_the_end(
    demo: Path, tmp_path: Path
) -> None:
    """The reproducer turns the --json-out path into a directory after the checks."""
    out = tmp_path / "result.json"
    res = repro(
        "bisect", str(demo), "--runs-dir", str(tmp_path / "runs"), "--json-out", str(out),
        "--set", f"reproducer.command=mkdir -p {out} && exec ./stress_test 3 100 1000",
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "first fixed commit:" in res.stdout and FIX_SUBJECT in res.stdout, res.stdout
    assert "bug in repro" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert f"--json-out {out}: cannot write: Is a directory" in res.stderr, res.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(run_dir) in res.stderr
    assert json.loads((run_dir / "summary.json").read_text())["culprit"]["subject"] == FIX_SUBJECT


def test_output_checks_leave_nothing_behind(tmp_path: Path) -> None:
    from repro.app.outputs import check_outputs

    check_outputs(
        json_out=tmp_path / "a" / "out.json",
        report=tmp_path / "b" / "c" / "r.md",
        runs_dir=tmp_path / "d" / "runs",
    )
    assert list(tmp_path.iterdir()) == []
