#!/usr/bin/env python3
"""The stress loop's own cost, against a plain shell loop over the same command.

Prints runs per second for: a shell `for` loop; `repro stress --jobs 1`; `repro stress
--jobs 2`. The reproducer is a tiny race-free TSAN program (a TSAN process start is the
floor of any real reproducer). Each configuration is measured in the same run, in
alternation, several times, and the median is reported, since these machines are noisy.

Usage: bench/bench_stress.py [--runs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "tests" / "programs" / "race_free_counter.c"


def shell_loop(binary: Path, runs: int, work: Path) -> float:
    # The same per-run work a careful script does: its own TSAN log per run.
    script = (
        f'for i in $(seq {runs}); do TSAN_OPTIONS="log_path={work}/log.$i" {binary} >/dev/null; '
        "done"
    )
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return runs / (time.perf_counter() - t0)


def repro_loop(recipe: Path, runs: int, jobs: int, work: Path) -> tuple[float, float]:
    out = work / f"summary-{jobs}.json"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "repro",
            "stress",
            str(recipe),
            "--runs",
            str(runs),
            "--jobs",
            str(jobs),
            "--runs-dir",
            str(work / "runs"),
            "--json-out",
            str(out),
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TERM": "dumb"},
    )
    wall = time.perf_counter() - t0
    data = json.loads(out.read_text())
    assert data["runs"] == runs, data
    return runs / float(data["elapsed"]), runs / wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        binary = work / "race_free"
        subprocess.run(
            ["gcc", "-fsanitize=thread", "-g", "-O1", "-o", str(binary), str(PROGRAM)],
            check=True,
        )
        recipe = work / "recipe.yaml"
        recipe.write_text(
            f"name: bench\nreproducer:\n  command: {binary}\n  timeout: 30\n"
            "target:\n  functions: [worker]\n"
        )
        shell, j1, j1w, j2, j2w = [], [], [], [], []
        for _ in range(args.rounds):
            shell.append(shell_loop(binary, args.runs, work))
            loop, wall = repro_loop(recipe, args.runs, 1, work)
            j1.append(loop)
            j1w.append(wall)
            loop, wall = repro_loop(recipe, args.runs, 2, work)
            j2.append(loop)
            j2w.append(wall)
        med = statistics.median
        print(f"reproducer: {PROGRAM.name} under TSAN, {args.runs} runs x {args.rounds} rounds")
        print(f"{'configuration':32} {'runs/s (median)':>16} {'vs shell':>9}")
        print(f"{'shell for-loop':32} {med(shell):16.1f} {1.0:9.3f}")
        print(f"{'repro stress -j1 (loop)':32} {med(j1):16.1f} {med(j1) / med(shell):9.3f}")
        print(
            f"{'repro stress -j1 (wall, startup)':32} {med(j1w):16.1f} {med(j1w) / med(shell):9.3f}"
        )
        print(f"{'repro stress -j2 (loop)':32} {med(j2):16.1f} {med(j2) / med(shell):9.3f}")
        print(
            f"{'repro stress -j2 (wall, startup)':32} {med(j2w):16.1f} {med(j2w) / med(shell):9.3f}"
        )
        print(f"speed-up -j2 over -j1 (loop): {med(j2) / med(j1):.2f}x  (goal >= 1.8x on 2 cores)")
        print(f"-j1 overhead vs shell loop: {100 * (1 - med(j1) / med(shell)):.1f}%  (goal <= 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
