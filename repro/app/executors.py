"""Where the stress loop's runs happen: the seam between the loop and its workers.

The loop decides how many runs to start, when to stop, and what to record; a
``Runner`` only starts runs by index and hands back what finished. The default is a
thread pool on this machine (the threads only wait on child processes); a Dask
cluster (``repro.app.cluster``) is the other. Keeping one loop with two runners means
limits, hit goals, Ctrl-C and the run log behave the same wherever the runs are.
"""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from repro.app.runner import (
    Cancelled,
    InFlight,
    Matcher,
    RunResult,
    RunSpec,
    log_folder_prefix,
    run_once,
)
from repro.errors import ReproError
from repro.runlog import RunLog
from repro.tsan.model import ParsedLog


@dataclass
class Finished:
    """One run that ended, one way or another.

    ``result`` is None for a run that was cancelled (never counted) or lost (its
    worker died and no other could finish it; ``lost`` says why). ``files`` holds
    the logs of a run made elsewhere (name to bytes, bounded by the runner), for the
    local side to keep or drop; a local run's logs are already in ``result.log_dir``.
    """

    index: int
    result: RunResult | None = None
    files: Mapping[str, bytes] | None = None
    worker: str | None = None
    lost: str | None = None


class RunnerGone(ReproError):
    """Where the runs happen is gone for good (a cluster's scheduler that went away).

    Its runs in flight will never come back, so waiting for them would wait forever:
    the loop stops as if interrupted, with every finished run kept, and says this.
    """


class Runner(Protocol):
    """Starts runs and reports them back; the loop owns every decision."""

    @property
    def slots(self) -> int:
        """How many runs may be in flight at once."""
        ...

    def submit(self, index: int) -> None: ...

    def pending(self) -> int: ...

    def wait(self, timeout: float | None) -> list[Finished]:
        """What finished: at least one run, unless ``timeout`` passed first.

        A run that raised (e.g. the reproducer cannot start) raises here, and
        ``RunnerGone`` when the runs in flight can no longer come back.
        """
        ...

    def cancel(self) -> None:
        """Stop what is in flight; those runs come back cancelled (or not at all)."""
        ...

    def drain(self) -> Iterator[Finished]:
        """After a cancel: the runs still pending, as they end; errors are skipped."""
        ...

    def close(self) -> None: ...


class ThreadRunner:
    """Runs on this machine: ``jobs`` threads, each waiting on one child process."""

    def __init__(self, spec: RunSpec, matcher: Matcher, runlog: RunLog, jobs: int) -> None:
        self.spec = spec
        self.matcher = matcher
        self.logs = runlog.dir.logs
        self.jobs = jobs
        self.inflight = InFlight()
        self.pool = cf.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="repro-run")
        self.futures: dict[cf.Future[tuple[RunResult, ParsedLog]], int] = {}

    @property
    def slots(self) -> int:
        return self.jobs

    def submit(self, index: int) -> None:
        fut = self.pool.submit(run_once, self.spec, index, self.logs, self.matcher, self.inflight)
        self.futures[fut] = index

    def pending(self) -> int:
        return len(self.futures)

    def _finish(self, fut: cf.Future[tuple[RunResult, ParsedLog]]) -> Finished:
        index = self.futures.pop(fut)
        try:
            result, _ = fut.result()
        except Cancelled:
            return Finished(index)
        return Finished(index, result)

    def wait(self, timeout: float | None) -> list[Finished]:
        done, _ = cf.wait(list(self.futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [self._finish(f) for f in done]

    def cancel(self) -> None:
        self.inflight.cancel()

    def drain(self) -> Iterator[Finished]:
        for fut in cf.as_completed(list(self.futures)):
            try:
                yield self._finish(fut)
            except Exception:
                continue

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def write_remote_logs(logs: Path, index: int, files: Mapping[str, bytes]) -> Path:
    """Keep the logs of a run made on another machine, as a local run keeps its own."""
    logs.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=log_folder_prefix(index), dir=logs))
    for name, data in files.items():
        (folder / Path(name).name).write_bytes(data)
    return folder
