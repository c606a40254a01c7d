"""What the cluster tests share: the demo's fix, the environment of the processes they
start, reading a run directory while it grows, and killing a worker while it runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ROOT

FIX_SUBJECT = "Publish the result before unlocking"
BIN = Path(sys.executable).parent
# Runs of 0.4 s, for tests that act while runs are in flight (the sleep first, so that a
# hit takes as long). Ten jobs, not the recipe's three: with three, the sleep before the
# racer showed the race in 1 run of 100 here (without it, in 14), so a bisect took minutes
# to calibrate and 24 runs often had no hit at all; with ten, in 50 of 60.
SLOW = "reproducer.command=sleep 0.4 && ./stress_test 10 100 1000"
# For a stress that must see the race in a few dozen runs: 30 runs at one in seven miss it
# in 1% of stresses, more on a loaded machine.
RACY = "reproducer.command=./stress_test 10 100 1000"


def stress_ended(returncode: int, text: str) -> bool:
    """A stress that ran its runs: exit 0 with a hit, or 1 with none (the demo's race shows
    in about one run in ten, so a short stress can miss it; what such a test checks is
    its runs, not the rate)."""
    return returncode == 0 or (
        returncode == 1 and re.search(r"^0 of \d+ runs hit the target", text, re.M) is not None
    )


def _env(**extra: str) -> dict[str, str]:
    # Worker processes import repro from this tree, like the repro under test.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "160", **extra}


def _events(run_dir: Path) -> list[dict[str, Any]]:
    """The events written so far; a last line still being written is left out (it can end
    in a `}` of a nested object before it is whole: CI once read one, under load)."""
    text = (run_dir / "events.jsonl").read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    return [json.loads(x) for x in lines]


def _runs(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir) if e["event"] == "run"]


def _only_dir(runs_dir: Path) -> Path:
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return run_dir


# --- a scheduler and workers as separate processes --------------------------------------


@dataclass
class Dask:
    address: str
    workers: list[subprocess.Popen[bytes]]
    caches: list[Path]
    scheduler: subprocess.Popen[bytes]


def _wait_workers(address: str, n: int, timeout: float = 60) -> list[str]:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)
        return sorted(client.nthreads())


def _wait_for_runs(
    runs_dir: Path, at_least: int, phase: str | None = None, seconds: float = 180
) -> None:
    """Until the one run directory under ``runs_dir`` has logged ``at_least`` runs (of
    ``phase``, such as a bisect's runs past calibration), or ``seconds`` went by."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dirs = list(runs_dir.glob("*/events.jsonl"))
        if dirs:
            runs = _runs(dirs[0].parent)
            if sum(phase is None or r.get("phase") == phase for r in runs) >= at_least:
                return
        time.sleep(0.05)


def _kill_while_it_runs(worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker while a reproducer runs on it: between two tasks a worker runs
    nothing, and a kill then would take no run with it."""
    wait_until = time.monotonic() + 30
    while not _running_reproducer(worker.pid) and time.monotonic() < wait_until:
        time.sleep(0.01)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


def _running_reproducer(root: int) -> bool:
    """Is a reproducer (the demo's `sleep` or `stress_test`) among root's descendants?"""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            pid = int(stat.parent.name)
            names[pid] = text[text.index("(") + 1 : text.rindex(")")]
            parent[pid] = int(text[text.rindex(")") + 2 :].split()[1])
    for pid, name in names.items():
        if name not in ("sleep", "stress_test"):
            continue
        p = pid
        while p in parent and p > 1:
            p = parent[p]
            if p == root:
                return True
    return False


@contextlib.contextmanager
def running_repro(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m repro ARGS` in a session of its own, its output in one pipe, for a test
    to act on while it runs; its whole group is killed on the way out, whatever the test
    did with it (a failed assertion included)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "repro", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def scheduler_address(sched_file: Path, timeout: float = 60) -> str:
    """The address a `dask scheduler --scheduler-file` wrote. The file appears before
    its JSON is in it: reading it as soon as it exists once read an empty file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(json.loads(sched_file.read_text())["address"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
