"""A tiny racy C program, compiled and run: the ground truth for what TSAN does here.

Reading versions and sysctls cannot tell whether a TSAN runtime starts, reports a race
or symbolizes it; only running one can, so the setarch probe and the doctor both do.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.host.environ import child_environ

RACE_MARK = "WARNING: ThreadSanitizer: data race"
PROBE_ATTEMPTS = 3
FATAL_MARKS = (
    "FATAL: ThreadSanitizer",
    "ThreadSanitizer: CHECK failed",
    "unexpected memory mapping",
)

RACY_C = r"""
#include <pthread.h>
#include <stdio.h>
static long counter;
static void *work(void *arg) {
    (void)arg;
    for (int i = 0; i < 10000; i++) counter++;
    return NULL;
}
int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("%ld\n", counter);
    return 0;
}
"""


@dataclass(frozen=True)
class TsanRun:
    """How a TSAN binary behaved: a race report, a start-up failure, or neither."""

    raced: bool
    fatal: bool
    output: str


def run_tsan_binary(
    binary: Path,
    prefix: Sequence[str] | None = None,
    *,
    tsan_options: str = "",
    attempts: int = PROBE_ATTEMPTS,
) -> TsanRun:
    """Run with exactly ``tsan_options`` (the caller's TSAN_OPTIONS would skew the probe).

    A run that neither races nor fails is tried again, up to ``attempts`` times: even this
    program goes unreported now and then (measured: 1 run in 1500 with gcc 12, under
    load), and one silent run must not make the doctor or the setarch probe conclude that
    TSAN cannot see races here.
    """
    run = _run_once(binary, prefix, tsan_options)
    for _ in range(attempts - 1):
        if run.raced or run.fatal:
            break
        run = _run_once(binary, prefix, tsan_options)
    return run


def _run_once(binary: Path, prefix: Sequence[str] | None, tsan_options: str) -> TsanRun:
    env = child_environ()
    env.pop("TSAN_OPTIONS", None)
    if tsan_options:
        env["TSAN_OPTIONS"] = tsan_options
    try:
        proc = subprocess.run(
            [*(prefix or []), str(binary)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return TsanRun(False, True, str(exc))
    out = proc.stdout + proc.stderr
    return TsanRun(RACE_MARK in out, any(m in out for m in FATAL_MARKS), out)


def compile_racy_c(compiler: str, workdir: Path) -> tuple[Path | None, str]:
    """(the binary, "") or (None, the compiler's complaint)."""
    src = workdir / "racy.c"
    src.write_text(RACY_C)
    exe = workdir / f"racy-{Path(compiler).name}"
    try:
        proc = subprocess.run(
            [compiler, "-fsanitize=thread", "-g", "-O1", "-pthread", str(src), "-o", str(exe)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()
    return exe, ""
