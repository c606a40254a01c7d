"""Chaos: stress and bisect on the demo, interrupted at random moments by SIGINT, SIGTERM
and SIGKILL, resumed each time (issue 11). Every run index is recorded once, the totals
agree across console, JSON and report, nothing is left running, and the bisect names the
same culprit as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TEST_CONFIDENCE, repro

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

FIX_SUBJECT = "Publish the result before unlocking"
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_recipe(tmp_path_factory.mktemp("chaos"), confidence=TEST_CONFIDENCE)


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "repro", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},
    )


def _interrupt(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _left_running(run_dir: Path) -> list[int]:
    """Processes whose environment names this run directory (the reproducers' TSAN_OPTIONS)."""
    needle = str(run_dir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def _run_indices(run_dir: Path) -> list[int]:
    out: list[int] = []
    if not (run_dir / "events.jsonl").exists():
        return out
    for line in (run_dir / "events.jsonl").read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if ev.get("event") == "run":
                out.append(int(ev["index"]))
    return out


def _chaos(
    args: list[str], resume: list[str], rounds: int, rng: random.Random, runs_dir: Path
) -> Path:
    proc = _start(args)
    run_dir: Path | None = None
    deadline = time.monotonic() + 120  # the first interruption once there is a run directory
    while not list(runs_dir.glob("*/meta.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(rounds):
        time.sleep(rng.uniform(0.3, 2.5))
        _interrupt(proc, rng.choice(SIGNALS))
        if run_dir is None:
            dirs = [d for d in runs_dir.glob("*") if (d / "meta.json").exists()]
            if not dirs:  # killed before its run directory was written: start again
                for d in runs_dir.glob("*"):
                    shutil.rmtree(d)
                proc = _start(args)
                continue
            run_dir = dirs[0]
        indices = _run_indices(run_dir)
        assert len(indices) == len(set(indices)), "a run index recorded twice"
        proc = _start([*resume, str(run_dir)])
    proc.wait(timeout=600)
    assert run_dir is not None
    return run_dir


@pytest.mark.slow
def test_stress_survives_chaos(demo: Path, tmp_path: Path) -> None:
    rng = random.Random(20261201)
    runs_dir = tmp_path / "runs"
    run_dir = _chaos(
        ["stress", str(demo), "-n", "120", "-j", "2", "--runs-dir", str(runs_dir)],
        ["stress", "--resume"],
        10,
        rng,
        runs_dir,
    )
    out = tmp_path / "s.json"
    res = repro("stress", "--resume", str(run_dir), "--json-out", str(out))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    indices = _run_indices(run_dir)
    assert len(indices) == len(set(indices)) == 120
    data = json.loads(out.read_text())
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    for k in ("runs", "evidence_runs", "hits", "rate", "rate_ci95", "outcomes"):
        assert data[k] == doc["summary"][k], k
    assert data["runs"] == 120
    assert f"{data['hits']} of {data['evidence_runs']} runs hit the target race" in " ".join(
        res.stdout.split()
    )
    time.sleep(0.5)
    assert _left_running(run_dir) == []
    # The logs of runs a kill caught in flight are gone with them: each folder left is a
    # counted run's.
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    logged = {Path(e["log_dir"]).name for e in events if e.get("log_dir")}
    folders = {d.name for d in (run_dir / "logs").glob("run-*")}
    assert folders <= logged, sorted(folders - logged)


@pytest.mark.slow
def test_bisect_survives_chaos(demo: Path, tmp_path: Path) -> None:
    rng = random.Random(7)
    runs_dir = tmp_path / "runs"
    run_dir = _chaos(
        ["bisect", str(demo), "-j", "2", "--runs-dir", str(runs_dir)],
        ["bisect", "--resume"],
        10,
        rng,
        runs_dir,
    )
    out = tmp_path / "b.json"
    res = repro("bisect", "--resume", str(run_dir), "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT
    indices = _run_indices(run_dir)
    assert len(indices) == len(set(indices))
    assert data["runs"] == len(indices)
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    assert doc["bisect"]["runs"] == data["runs"]
    assert doc["bisect"]["culprit"]["id"] == data["culprit"]["id"]
    time.sleep(0.5)
    assert _left_running(run_dir) == []


def _wait_runs(runs_dir: Path, n: int) -> Path:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for d in runs_dir.glob("*"):
            if len(_run_indices(d)) >= n:
                return d
        time.sleep(0.05)
    pytest.fail(f"no {n} runs in {runs_dir}")


@pytest.mark.parametrize("command", ["bisect", "amplify", "stress"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_commands_exit_130(
    demo: Path, tmp_path: Path, command: str, sig: signal.Signals
) -> None:
    """The README's promise: interrupted, results kept, exit 130 (issue 11 item 6)."""
    runs_dir = tmp_path / "runs"
    extra = {
        "bisect": [],
        "amplify": ["--threads", "2,3", "-n", "100000"],
        "stress": ["-n", "100000"],
    }[command]
    jobs = ["--jobs", "1"] if command == "amplify" else ["-j", "1"]
    proc = _start([command, str(demo), *jobs, "--runs-dir", str(runs_dir), *extra])
    run_dir = _wait_runs(runs_dir, 3)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    assert len(_run_indices(run_dir)) >= 3
