"""Stopping a build from another thread, its running command included.

A parallel bisect's lane leaves its commit when the other lanes' results have settled
it; if that commit is still building, the build is wasted time on the lane's workers
(measured in simulation: letting such builds finish cost all that leaving gained). The
build runs deep inside ``prepare`` in a worker's thread, so the stop travels as a
context variable: the build's commands (``BuildContext.run``) register with the stop in
force where they start, and ``BuildStop.stop`` kills their process groups.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

from repro.errors import ReproError


class BuildCancelled(ReproError):
    """The build was stopped on purpose: not a failure of the commit, never recorded."""

    record = False


class BuildStop:
    """One stop for a build: once stopped, its commands are killed and no new one starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self.stopped = False

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            procs = list(self._procs)
        for proc in procs:
            kill_group(proc)

    def started(self, proc: subprocess.Popen[str]) -> None:
        """A command of the build started (in its own process group)."""
        with self._lock:
            self._procs.add(proc)
            late = self.stopped
        if late:
            kill_group(proc)

    def ended(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)


_CURRENT: contextvars.ContextVar[BuildStop | None] = contextvars.ContextVar(
    "repro_build_stop", default=None
)


def current_stop() -> BuildStop | None:
    """The stop in force for builds started here, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def stoppable(stop: BuildStop) -> Iterator[BuildStop]:
    """Builds started inside this block stop when ``stop`` does."""
    token = _CURRENT.set(stop)
    try:
        yield stop
    finally:
        _CURRENT.reset(token)


def check_stop() -> None:
    """Raise ``BuildCancelled`` if the build in force was stopped: called between steps."""
    stop = _CURRENT.get()
    if stop is not None and stop.stopped:
        raise BuildCancelled("the build was stopped")


def kill_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's process group (a build's commands each start their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
