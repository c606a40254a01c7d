"""Run the reproducer once under TSAN and say what happened.

Every run gets its own TSAN log directory through ``log_path`` so that parallel runs
never mix their reports, and its own process group so that a timeout kills the whole
tree (a reproducer is often a shell, a test runner and a child interpreter). The exit
code alone is never trusted: TSAN uses the same code (66) for "races found" and for
some start-up failures, so the outcome comes from parsing the logs.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.tsan.model import ParsedLog, Report
from repro.tsan.parse import parse_log
from repro.tsan.signature import TargetRule, matches, signature_of

OUTPUT_TAIL = 4000


class Outcome(StrEnum):
    TARGET = "target"
    OTHER = "other"
    CLEAN = "clean"
    CRASH = "crash"
    TIMEOUT = "timeout"
    TSAN_FAILURE = "tsan-failure"


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


@dataclass(frozen=True)
class Matcher:
    rule: TargetRule
    depth: int = 3
    drop: tuple[str, ...] = ()


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

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "duration": round(self.duration, 4),
            "target_reports": self.target_reports,
            "signatures": self.signatures,
            "fatal": self.fatal,
            "log_dir": self.log_dir,
            "started": round(self.started, 3),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunResult:
        return cls(
            index=int(d["index"]),
            outcome=Outcome(d["outcome"]),
            exit_code=d.get("exit_code"),
            duration=float(d.get("duration", 0.0)),
            target_reports=int(d.get("target_reports", 0)),
            signatures=list(d.get("signatures", [])),
            fatal=list(d.get("fatal", [])),
            output_tail="",
            log_dir=d.get("log_dir"),
            started=float(d.get("started", 0.0)),
        )


def tsan_options_string(options: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        return str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in options.items())


def merge_tsan_options(
    base_env: Mapping[str, str],
    recipe_options: Mapping[str, Any],
    log_prefix: Path,
    defaults: Mapping[str, str] | None = None,
) -> str:
    """Recipe options win over the user's TSAN_OPTIONS, which win over repro's defaults;
    log_path is always ours."""
    opts: dict[str, str] = dict(defaults or {})
    for item in base_env.get("TSAN_OPTIONS", "").replace(":", " ").split():
        if "=" in item:
            k, v = item.split("=", 1)
            opts[k] = v
    for k, v in recipe_options.items():
        opts[k] = tsan_options_string({k: v}).split("=", 1)[1]
    opts["log_path"] = str(log_prefix)
    return tsan_options_string(opts)


def classify(
    parsed: ParsedLog, exit_code: int | None, timed_out: bool, matcher: Matcher
) -> tuple[Outcome, int, list[str]]:
    """Pure: the outcome of one run from what it printed and how it ended."""
    sigs: list[str] = []
    target = 0
    for report in parsed.reports:
        sigs.append(signature_of(report, depth=matcher.depth, drop=_drop(matcher)).id)
        if is_target(report, matcher):
            target += 1
    if target:
        outcome = Outcome.TARGET
    elif parsed.fatal:
        outcome = Outcome.TSAN_FAILURE
    elif timed_out:
        outcome = Outcome.TIMEOUT
    elif parsed.reports:
        outcome = Outcome.OTHER
    elif exit_code not in (0, None):
        outcome = Outcome.CRASH
    else:
        outcome = Outcome.CLEAN
    return outcome, target, sigs


def _drop(matcher: Matcher) -> tuple[str, ...]:
    from repro.tsan.signature import DEFAULT_DROP

    return tuple(DEFAULT_DROP) + tuple(matcher.drop)


def is_target(report: Report, matcher: Matcher) -> bool:
    return matches(report, matcher.rule, drop=_drop(matcher))


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


def run_once(
    spec: RunSpec,
    index: int,
    work_dir: Path,
    matcher: Matcher,
    inflight: InFlight | None = None,
) -> tuple[RunResult, ParsedLog]:
    """Run the reproducer once; the caller decides which logs to keep."""
    run_dir = work_dir / f"run-{index:06d}"
    # Left over from a run in flight when an earlier process was killed: never counted,
    # and its logs must not be read as this run's.
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
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
        # A reproducer's children may outlive it; they must not leak into the next run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if inflight is not None and inflight.cancelled.is_set():
        shutil.rmtree(run_dir, ignore_errors=True)
        raise Cancelled()
    duration = time.monotonic() - t0
    texts = [
        log.read_text(encoding="utf-8", errors="replace") for log in sorted(run_dir.glob("tsan*"))
    ]
    output = out_path.read_text(encoding="utf-8", errors="replace")
    # TSAN writes start-up failures to stderr before log_path takes effect, so the
    # program's own output is parsed too.
    texts.append(output)
    parsed = parse_log("\n".join(texts))
    outcome, target, sigs = classify(parsed, proc.returncode, timed_out.is_set(), matcher)
    result = RunResult(
        index=index,
        outcome=outcome,
        exit_code=proc.returncode,
        duration=duration,
        target_reports=target,
        signatures=sigs,
        fatal=list(parsed.fatal),
        output_tail=output[-OUTPUT_TAIL:],
        log_dir=str(run_dir),
        started=started,
    )
    return result, parsed
