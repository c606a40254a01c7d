#!/usr/bin/env python3
"""`repro parse` on large logs: peak memory and time, against reading the file alone.

Generates logs of the asked sizes by repeating the small stored gcc reports of
tests/data/tsan (a data race, a use-after-free, a lock-order inversion, ...) with a
new pid, new addresses and new thread ids each time, as a CI log of many processes
looks. Each measurement is a fresh process, and its peak RSS is the one the kernel
reports for it (os.wait4, the same counter as resource.getrusage's ru_maxrss):

- read only: `for line in file: pass`, the floor for any parser;
- parse_log(text): the whole text read and parsed at once (what `repro parse` did);
- repro parse --json: the command as a user runs it (streaming).

Usage: bench/bench_parse.py [--sizes 10,100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "tsan"
SOURCES = [
    "gcc-racy_counter.log",
    "gcc-half_locked.log",
    "gcc-use_after_free.log",
    "gcc-lock_order.log",
    "gcc-atomic_plain.log",
]

_ADDR = re.compile(r"0x[0-9a-f]{8,}")
_PID = re.compile(r"pid=\d+")
_TID = re.compile(r"tid=\d+")


def make_log(path: Path, megabytes: int, seed: int = 1) -> int:
    """Write a log of about `megabytes` MB; returns the number of reports written."""
    rng = random.Random(seed)
    templates = [(DATA / name).read_text() for name in SOURCES]
    target = megabytes * 1_000_000
    written = 0
    reports = 0
    with path.open("w") as out:
        while written < target:
            text = templates[reports % len(templates)]
            pid = rng.randrange(1000, 4_000_000)
            text = _PID.sub(f"pid={pid}", text)
            text = _TID.sub(lambda _m: f"tid={rng.randrange(1000, 4_000_000)}", text)
            text = _ADDR.sub(lambda _m: f"0x{rng.randrange(1 << 44, 1 << 47):x}", text)
            out.write(text)
            written += len(text)
            reports += text.count("WARNING: ThreadSanitizer:")
    return reports


READ_ONLY = """
import sys
n = 0
with open(sys.argv[1], encoding="utf-8", errors="replace", newline="") as f:
    for line in f:
        n += 1
"""

WHOLE_TEXT = """
import sys
from repro.tsan.parse import parse_log
from repro.tsan.signature import group_by_signature
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
groups = group_by_signature(parse_log(text).reports)
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"},
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100", help="log sizes in MB, comma-separated")
    ap.add_argument("--keep", type=Path, help="write the logs here instead of a temp dir")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        rows = []
        for mb in sizes:
            log = where / f"tsan-{mb}mb.log"
            reports = make_log(log, mb)
            size = log.stat().st_size / 1e6
            checks = {
                "read only": [py, "-c", READ_ONLY, str(log)],
                "parse_log(text)": [py, "-c", WHOLE_TEXT, str(log)],
                "repro parse --json": [py, "-m", "repro", "parse", str(log), "--json"],
            }
            for label, argv in checks.items():
                seconds, rss = measure(argv)
                rows.append((f"{size:.0f} MB", reports, label, seconds, rss))
                print(
                    f"{size:6.0f} MB {reports:8d} reports  {label:20s} "
                    f"{seconds:7.1f} s  peak RSS {rss:7.1f} MB",
                    flush=True,
                )
        out = [
            {"log": r[0], "reports": r[1], "what": r[2], "seconds": r[3], "peak_rss_mb": r[4]}
            for r in rows
        ]
        print(json.dumps(out))


if __name__ == "__main__":
    main()
