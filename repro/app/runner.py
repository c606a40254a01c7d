"""Run the reproducer once under TSAN and say what happened.

Every run gets its own TSAN log directory through ``log_path`` so that parallel runs
never mix their reports, and its own process group so that a timeout kills the whole
tree (a reproducer is often a shell, a test runner and a child interpreter). The exit
code alone is never trusted: TSAN uses the same code (66) for "races found" and for
some start-up failures, so the outcome comes from parsing the logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.errors import ReproError
from repro.tsan import options as tsan_options
from repro.tsan.model import ParsedLog, Report
from repro.tsan.outcome import (
    Found,
    Matcher,
    Outcome,
    classify,
    is_target,
    parallel_threads_of,
)
from repro.tsan.parse import LogScanner, read_reports

if TYPE_CHECKING:
    from repro.runlog.store import RunDir

OUTPUT_TAIL = 4000
# A reproducer may print without bound; what is kept and parsed of one output or log
# file is its head and its tail (TSAN's reports and the exit reason are at the ends).
KEEP_OUTPUT_BYTES = 8 * 1024 * 1024
PGID_PREFIX = ".pgid-"
# How long the processes a reproducer started may outlive it (a child it did not wait
# for, racing after the parent exited) before they are killed and the run is read.
LINGER = 5.0
# How long the pty's last output may take to arrive once the run's group is gone.
PTY_DRAIN = 1.0

__all__ = ["Matcher", "Outcome", "classify", "is_target"]


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to start one run; identical for every run of a stress loop."""

    command: str
    cwd: Path
    env: Mapping[str, str]
    timeout: float
    tsan_options: Mapping[str, str] = field(default_factory=dict)
    prefix: Sequence[str] = ()  # e.g. ("setarch", "x86_64", "-R") or ("taskset", "-c", "0")
    # Options repro picks for this machine (e.g. external_symbolizer_path); the user's
    # TSAN_OPTIONS and the recipe's options both win over them.
    tsan_defaults: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False  # run on a pseudo-terminal (reproducers that misbehave only there)


@dataclass
class RunResult:
    index: int
    outcome: Outcome
    exit_code: int | None
    duration: float
    target_reports: int
    signatures: list[str]  # signature ids, one per report, in order
    fatal: list[str]
    output_tail: str
    log_dir: str | None = None
    started: float = 0.0
    detail: str | None = None
    found: tuple[Found, ...] = ()  # each report's signature and whether it is the target
    lingered: bool = False  # its children were still running LINGER s after it exited
    suppressed: dict[str, int] = field(default_factory=dict)  # reports TSAN hid, by line


def log_folder_prefix(index: int) -> str:
    """A run's folder is named by its number as every figure states it ("run 4",
    the timeline's runs 1-10): the index plus one. It was the bare index, so the
    first hit "run 4" kept its logs in run-000003-*."""
    return f"run-{index + 1:06d}-"


def merge_tsan_options(
    base_env: Mapping[str, str],
    recipe_options: Mapping[str, Any],
    log_prefix: Path,
    defaults: Mapping[str, str] | None = None,
) -> str:
    """Recipe options win over the user's TSAN_OPTIONS, which win over repro's defaults;
    log_path is always ours."""
    merged = tsan_options.merge(
        defaults, base_env.get("TSAN_OPTIONS"), recipe_options, {"log_path": log_prefix}
    )
    return tsan_options.to_string(merged)


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM first so a reproducer can flush its TSAN log, then SIGKILL."""
    sigs = (signal.SIGTERM, signal.SIGKILL) if grace > 0 else (signal.SIGKILL,)
    for sig in sigs:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGKILL:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return
            time.sleep(0.02)


class Cancelled(Exception):
    """The loop is stopping; the run in flight was killed and is not counted."""


class InFlight:
    """The process groups currently running, so that Ctrl-C can kill them at once.

    Workers block in waitpid (no polling: a poll interval would be the loop's main
    overhead on a fast reproducer), so cancellation has to come from outside.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.cancelled = threading.Event()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs[proc.pid] = proc
        if self.cancelled.is_set():
            _kill_group(proc, grace=0.0)

    def remove(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def cancel(self) -> None:
        self.cancelled.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill_group(proc, grace=0.0)


class Watchdog:
    """One thread that fires the timeouts of every run in flight.

    A timer thread per run costs a thread start and join each time, which shows on a
    reproducer that runs in milliseconds; deadlines in a heap cost almost nothing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, action: Callable[[], None]) -> int:
        with self._cond:
            self._next += 1
            ticket = self._next
            self._actions[ticket] = action
            heapq.heappush(self._heap, (deadline, ticket))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="repro-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return ticket

    def forget(self, ticket: int) -> None:
        with self._cond:
            self._actions.pop(ticket, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._actions:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(timeout=delay)
                    continue
                heapq.heappop(self._heap)
                action = self._actions.pop(ticket, None)
            if action is not None:
                action()


WATCHDOG = Watchdog()


_SHELL_CHARS = set("|&;<>()$`\\\"'*?[]#~=%{}\n")


def command_argv(command: str) -> list[str]:
    """Exec simple commands directly; an extra shell per run is measurable overhead."""
    if any(c in _SHELL_CHARS for c in command):
        return ["/bin/sh", "-c", command]
    parts = shlex.split(command)
    return parts if parts else ["/bin/sh", "-c", command]


def _cut_middle(path: Path, size: int, limit: int, keep: str = "") -> bytes:
    """``path``'s head and tail (``limit`` bytes in all) with a note of the cut, and
    ``keep`` (text from the cut part that must not be lost) inside the note; the file
    is rewritten so, and the kept bytes returned."""
    half = limit // 2
    with path.open("rb") as f:
        head = f.read(half)
        f.seek(size - half)
        tail = f.read(half)
    note = f"\n[repro: {size - 2 * half} bytes cut from the middle of this file]\n"
    if keep:
        note += (
            "[repro: the cut part held the target race's report; its first one follows]\n"
            f"{keep}\n[repro: end of the kept report]\n"
        )
    kept = head + note.encode() + tail
    with contextlib.suppress(OSError):
        path.write_bytes(kept)
    return kept


def _read_bounded(path: Path, limit: int = KEEP_OUTPUT_BYTES) -> str:
    """The text of ``path``; past ``limit`` bytes, its head and tail and a note of the cut.

    The file itself is cut the same way, so a reproducer that printed 200 MB leaves
    a bounded log in the run directory and a bounded string in memory.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    if size <= limit:
        return path.read_text(encoding="utf-8", errors="replace")
    return _cut_middle(path, size, limit).decode("utf-8", errors="replace")


def _scan_tsan_log(path: Path, scanner: LogScanner, raw_budget: list[int]) -> list[Report]:
    """Every report of one TSAN log file, read whole as a stream.

    A log is never parsed from its head and tail only: a run that reported thousands
    of other races wrote the target's report in the middle, and reading the ends
    counted that run a miss. Memory stays bounded instead by keeping the text
    (``raw``) of reports only up to ``raw_budget`` characters in all; signatures need
    only the stacks.
    """
    reports: list[Report] = []
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            for report in read_reports(f, scanner):
                if raw_budget[0] < len(report.raw):
                    report = dataclasses.replace(report, raw="")
                raw_budget[0] -= len(report.raw)
                reports.append(report)
    except OSError:
        pass
    return reports


def _bound_tsan_log(path: Path, reports: Sequence[Report], matcher: Matcher) -> None:
    """Cut a TSAN log past ``KEEP_OUTPUT_BYTES`` like any output, keeping the target's
    first report (the one the bug report quotes) if the cut part held it."""
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size <= KEEP_OUTPUT_BYTES:
        return
    half = KEEP_OUTPUT_BYTES // 2
    with path.open("rb") as f:
        head = f.read(half).decode("utf-8", errors="replace")
        f.seek(size - half)
        tail = f.read(half).decode("utf-8", errors="replace")
    keep = ""
    target = next((r for r in reports if is_target(r, matcher)), None)
    if target is not None:
        text = target.raw or _reread_report(path, matcher)
        if text not in head and text not in tail:
            keep = text
    _cut_middle(path, size, KEEP_OUTPUT_BYTES, keep)


def _reread_report(path: Path, matcher: Matcher) -> str:
    """The text of the first target report of ``path``, read again (its ``raw`` was
    dropped to bound memory)."""
    with (
        contextlib.suppress(OSError),
        path.open(encoding="utf-8", errors="replace", newline="") as f,
    ):
        for report in read_reports(f):
            if is_target(report, matcher):
                return report.raw
    return ""


def _register(work_dir: Path, pgid: int) -> Path:
    """Note a process group before waiting on it, so that a later repro can end it
    if this one is killed (SIGKILL leaves the reproducer running, reparented to init)."""
    marker = work_dir / f"{PGID_PREFIX}{pgid}"
    with contextlib.suppress(OSError):
        # surrogateescape: a directory whose name is not UTF-8 (a byte of another
        # locale) made this write raise, after the reproducer had started.
        marker.write_text(str(work_dir), encoding="utf-8", errors="surrogateescape")
    return marker


def reap_orphans(work_dir: Path) -> list[int]:
    """End the process groups that an earlier, killed repro left running here.

    A group is ended only if its leader's environment names this directory (its
    TSAN_OPTIONS log_path points inside it), so a recycled pid is never touched.
    Returns the groups ended.
    """
    ended: list[int] = []
    for marker in sorted(work_dir.glob(f"{PGID_PREFIX}*")):
        try:
            pgid = int(marker.name[len(PGID_PREFIX) :])
        except ValueError:
            continue
        if _group_belongs(pgid, work_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                ended.append(pgid)
        with contextlib.suppress(OSError):
            marker.unlink()
    return ended


def discard_unlogged(rundir: RunDir) -> int:
    """Remove the log folders of the runs a killed repro had in flight (after
    ``reap_orphans`` ended them): no event names them, so they count nowhere, and a
    reader of logs/ took them for runs. Returns how many were removed."""
    from repro.runlog.events import RunEvent

    logged = {
        Path(ev.log_dir).name for ev in rundir.events() if isinstance(ev, RunEvent) and ev.log_dir
    }
    gone = 0
    for folder in rundir.logs.glob("run-*"):
        if folder.is_dir() and folder.name not in logged:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone


def _group_belongs(pgid: int, work_dir: Path) -> bool:
    needle = str(work_dir).encode()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            if needle in (entry / "environ").read_bytes():
                return True
        except (OSError, ProcessLookupError):
            continue
    return False


def _start_on_pty(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], out: Any
) -> tuple[subprocess.Popen[bytes], threading.Thread]:
    """Start the reproducer with a pseudo-terminal as stdin, stdout and stderr.

    For reproducers that behave differently on a terminal (isatty, line buffering,
    a REPL); what they write is copied into ``out`` as it comes, so TSAN's reports
    are parsed as for any run. ``reproducer.tty: true`` in the recipe.
    """
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
    except OSError:
        os.close(master)
        raise
    finally:
        os.close(slave)

    def copy() -> None:
        try:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal is gone
                    break
                if not chunk:
                    break
                out.write(chunk)
            out.flush()
        except (OSError, ValueError):  # the run was given up and its file closed
            pass
        finally:
            os.close(master)

    copier = threading.Thread(target=copy, name="repro-pty", daemon=True)
    copier.start()
    return proc, copier


def run_once(
    spec: RunSpec,
    index: int,
    work_dir: Path,
    matcher: Matcher,
    inflight: InFlight | None = None,
) -> tuple[RunResult, ParsedLog]:
    """Run the reproducer once; the caller decides which logs to keep.

    Each attempt gets a folder of its own (never reused, even for the same index
    after a resume), so a reproducer left running by a killed repro cannot write
    into the logs of a later run.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=log_folder_prefix(index), dir=work_dir))
    env = dict(spec.env)
    env["TSAN_OPTIONS"] = merge_tsan_options(
        spec.env, spec.tsan_options, run_dir / "tsan", spec.tsan_defaults
    )
    out_path = run_dir / "output.txt"
    argv = [*spec.prefix, *command_argv(spec.command)]
    started = time.time()
    t0 = time.monotonic()
    timed_out = threading.Event()
    with out_path.open("wb") as out:
        try:
            if spec.tty:
                proc, copier = _start_on_pty(argv, spec.cwd, env, out)
            else:
                copier = None
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise ReproError(f"cannot start the reproducer `{argv[0]}`: {exc.strerror}") from None
        marker = _register(work_dir, proc.pid)
        if inflight is not None:
            inflight.add(proc)

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)

        ticket = WATCHDOG.watch(t0 + spec.timeout, on_timeout)
        try:
            proc.wait()
        finally:
            WATCHDOG.forget(ticket)
            if inflight is not None:
                inflight.remove(proc)
        # A reproducer's children may outlive it: they are part of the run (a race of a
        # child it did not wait for was killed before TSAN could report it, and the run
        # counted clean), up to LINGER seconds; then they must not leak into the next run.
        lingered = _wait_for_group(proc.pid, min(time.monotonic() + LINGER, t0 + spec.timeout))
        # A run killed at its timeout did not exit and leave them: its group was still
        # dying (sweep 14 read "exited with processes of its own still running" of it).
        lingered = lingered and not timed_out.is_set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            marker.unlink()
        if copier is not None:
            # The group is gone: what is left in the pty is read at once. A process that
            # left the group (setsid, a daemon) may hold the pty open for ever; it is no
            # part of the run, and every run waited 10 s for it.
            copier.join(timeout=PTY_DRAIN)
    if inflight is not None and inflight.cancelled.is_set():
        shutil.rmtree(run_dir, ignore_errors=True)
        raise Cancelled()
    duration = time.monotonic() - t0
    scanner = LogScanner()
    raw_budget = [KEEP_OUTPUT_BYTES]
    logs = sorted(run_dir.glob("tsan*"))
    per_log = [_scan_tsan_log(log, scanner, raw_budget) for log in logs]
    output = _read_bounded(out_path)
    # TSAN writes start-up failures to stderr before log_path takes effect, so the
    # program's own output is parsed too.
    from_output = list(scanner.reports(output.splitlines()))
    parsed = scanner.parsed([r for reports in per_log for r in reports] + from_output)
    for log, reports in zip(logs, per_log, strict=True):
        _bound_tsan_log(log, reports, matcher)
    verdict = classify(
        parsed,
        proc.returncode,
        timed_out.is_set(),
        matcher,
        output,
        parallel_threads_of(spec.command),
    )
    result = RunResult(
        index=index,
        outcome=verdict.outcome,
        exit_code=proc.returncode,
        duration=duration,
        target_reports=verdict.target_reports,
        signatures=list(verdict.signatures),
        fatal=list(parsed.fatal),
        output_tail=output[-OUTPUT_TAIL:],
        log_dir=str(run_dir),
        started=started,
        detail=verdict.detail or _pytest_detail(output),
        found=verdict.found,
        lingered=lingered,
        suppressed=dict(parsed.extra.get("suppressed") or {}),
    )
    return result, parsed


def _wait_for_group(pgid: int, deadline: float) -> bool:
    """Wait until no process of group ``pgid`` is left, or ``deadline``; True when some
    were still running then. One signal-0 probe when none are (the common case)."""
    delay = 0.005
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        if not _live_members(pgid):
            return False  # zombies only, which an init that does not reap keeps forever
        if time.monotonic() >= deadline:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _live_members(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is running (not a zombie)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _pytest_detail(output: str) -> str | None:
    """The test a pytest reproducer was in when TSAN reported (else None)."""
    from repro.tsan.pytest_attrib import run_detail

    return run_detail(output)
