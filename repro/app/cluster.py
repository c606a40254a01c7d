"""Runs and builds on a Dask cluster: many machines for one stress run or bisect.

The orchestrating repro stays where the user started it; it owns the run directory,
the limits and every decision. Workers only build and run: each task prepares the
recipe on its worker (``prepare``, memoised per worker process, in that worker's
cache) and runs the reproducer once as a subprocess exactly as ``repro stress``
does locally (same outcomes, timeouts, process groups), in a worker-local folder.
The task returns the result and the run's log files (bounded by the runner), and the
local side keeps what it would keep of a local run.

Why Dask's futures and not a home-made protocol: worker death, retries elsewhere,
placement and cancellation are what a scheduler is for. A task whose worker dies is
run again on another one (Dask's ``allowed-failures``); the future resolves once, so
a run index is recorded once whatever happened to its attempts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from repro.app.cluster_link import WorkerWatch, client_logs_to_file, connect
from repro.app.context import Overrides, Prepared, prepare
from repro.app.executors import Finished, RunnerGone
from repro.app.runner import Cancelled, InFlight, RunResult, RunSpec, run_once
from repro.builds.cache import BuildError
from repro.builds.stop import BuildCancelled, BuildStop, check_stop, stoppable
from repro.errors import ReproError
from repro.gitrepo import is_url
from repro.recipe import LoadedRecipe, load_recipe, repo_location
from repro.tsan.outcome import Matcher, Outcome

# How long a drain for cancelled runs waits.
DRAIN_SECONDS = 30.0
_KEEP_SESSIONS = 256


@dataclass(frozen=True)
class Chunking:
    """How many runs a task carries: enough to last ``seconds``, at most ``most``."""

    seconds: float
    most: int

    def size(self, run_seconds: float) -> int:
        if run_seconds <= 0:
            return self.most
        return max(1, min(self.most, int(self.seconds / run_seconds)))


# A task lasts about this long: several runs of a fast reproducer, one of a slow one. When
# a hit ends the loop (a bisect's probe, a calibration, --until-first), a hit wastes the
# rest of its chunk: short ones.
SHORT_CHUNKS = Chunking(0.25, 8)
# When only a run or time limit ends it, no run of a chunk is wasted, and each task costs
# the scheduler, this process and the worker about 12 ms of CPU (client submit, scheduler
# transitions, the result's gather). Measured on the demo's 400 runs, `--workers 2` on 2
# cores: 131-165 tasks with short chunks and the Python processes' CPU 4.1-5.0 s; 50-56
# tasks and 2.8-3.1 s with these (`-j 2`: 1.4-2.0 s); 1 s chunks (at most 32) gave 35-40
# tasks and 3.2-3.4 s, and would idle one worker for longer while the other ends the
# last chunk.
LONG_CHUNKS = Chunking(0.5, 32)
# Tasks kept in flight per cluster thread. With one, a worker that ends a chunk sits idle
# for a round trip (its result to this process, the next task back); with two the next
# chunk already waits on the worker. Measured (bench_cluster.py, 400 demo runs, 5 rounds,
# the median of the rounds' ratios to `-j 2`): the loop took +19% with one, +8% and +12%
# with two (two benches).
QUEUE_DEPTH = 2
# Dask settings for processes that share their cores with reproducers (for `dask worker`,
# the same as environment variables, docs/cluster.md). Dask's defaults wake every
# process 50 times a second (the event loop's health tick) and sample memory and CPU
# 10 and 2 times a second, for the dashboard and memory limits; a worker's memory is not
# where a reproducer's is (its subprocess). An idle LocalCluster of two workers took
# 10.6-13.9% of a core with the defaults, 1.4% with these (10 s, user + system time of the
# whole process tree); profiling samples every thread every 10 ms.
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "5s",
}


@dataclass(frozen=True)
class BuildRequest:
    """What a worker needs to build and describe one run: the recipe as run, and refs.

    The recipe travels as text; its relative paths mean what they meant beside the
    original file (``recipe_path``), so that path, and every path the recipe names,
    must exist on the workers (a shared filesystem, or the same checkout everywhere).
    """

    recipe_text: str
    recipe_path: str
    sets: tuple[str, ...]
    overrides: Overrides
    ext_ref: str | None = None
    python_ref: str | None = None
    python_version: str | None = None
    cache_dir: str | None = None  # --shared-cache: one cache every worker sees

    @classmethod
    def of(
        cls,
        loaded: LoadedRecipe,
        overrides: Overrides,
        *,
        ext_ref: str | None = None,
        python_ref: str | None = None,
        python_version: str | None = None,
        cache_dir: Path | None = None,
    ) -> BuildRequest:
        repo = overrides.extension_repo
        if repo and not is_url(repo):
            # --repo is relative to where repro was started, not to a worker's cwd.
            repo = repo_location(repo, Path.cwd())
            overrides = dataclasses.replace(overrides, extension_repo=repo)
        return cls(
            recipe_text=loaded.text,
            recipe_path=str(loaded.path),
            sets=tuple(loaded.sets),
            overrides=overrides,
            ext_ref=ext_ref,
            python_ref=python_ref,
            python_version=python_version,
            cache_dir=str(cache_dir.absolute()) if cache_dir is not None else None,
        )


# --- the worker side -------------------------------------------------------------------

_T = TypeVar("_T")
# Held by a build for as long as it runs (one build at a time in a worker process).
_LOCK = threading.Lock()
_PREPARED: dict[BuildRequest, Prepared] = {}
# The others are not under _LOCK: a stop or a cancel must get through while a build
# runs. ``Client.run`` calls them in the worker's event loop, which a wait for _LOCK
# blocked, and the caller with it: a lane that ended waited for another lane's build.
_SESSIONS_LOCK = threading.Lock()
_SESSIONS: dict[str, InFlight] = {}
_STOPS_LOCK = threading.Lock()
_BUILD_STOPS: dict[str, BuildStop] = {}


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return "local"


def _work_dir() -> Path:
    try:
        from distributed import get_worker

        base = Path(get_worker().local_directory)
    except ValueError:
        base = Path(tempfile.gettempdir())
    return base / "repro-runs"


def prepare_here(req: BuildRequest) -> Prepared:
    """Build (or find) what the request names on this worker, once per process."""
    with _LOCK:
        known = _PREPARED.get(req)
        if known is not None:
            return known
        with tempfile.TemporaryDirectory(prefix="repro-recipe-") as tmp:
            path = Path(tmp) / "recipe.yaml"
            path.write_text(req.recipe_text, encoding="utf-8")
            loaded = load_recipe(path, req.sets, located_at=req.recipe_path)
        old = os.environ.get("REPRO_CACHE_DIR")
        if req.cache_dir:
            os.environ["REPRO_CACHE_DIR"] = req.cache_dir
        try:
            prepared = prepare(
                loaded,
                req.overrides,
                ext_ref=req.ext_ref,
                python_ref=req.python_ref,
                python_version=req.python_version,
            )
        finally:
            if req.cache_dir:
                if old is None:
                    os.environ.pop("REPRO_CACHE_DIR", None)
                else:
                    os.environ["REPRO_CACHE_DIR"] = old
        _PREPARED[req] = prepared
        return prepared


@dataclass
class PrepareReply:
    """A worker's answer to a build request (a Prepared without its build objects)."""

    worker: str
    spec: RunSpec | None = None
    matcher: Matcher | None = None
    info: dict[str, Any] = field(default_factory=dict)
    ext_sha: str | None = None
    error: str | None = None
    build_failed: bool = False
    log: str | None = None
    stopped: bool = False


def _kept(table: dict[str, _T], lock: threading.Lock, key: str, make: Callable[[], _T]) -> _T:
    """``table[key]``, made on first use; the oldest entries go past ``_KEEP_SESSIONS``
    (a worker lives long, and a cancel may come for a key it never saw)."""
    with lock:
        value = table.get(key)
        if value is None:
            value = table[key] = make()
            while len(table) > _KEEP_SESSIONS:
                del table[next(iter(table))]
        return value


def _build_stop(build_id: str) -> BuildStop:
    return _kept(_BUILD_STOPS, _STOPS_LOCK, build_id, BuildStop)


def _sigint_passed_over(signum: int, frame: object) -> None:
    """Ctrl-C reaches a LocalCluster's workers with repro's process group; repro ends them."""


def sigint_not_ignored() -> None:
    """In a LocalCluster's worker (on its main thread, where Dask runs worker setups):
    SIGINT is caught by a handler that does nothing.

    The first workers start with it ignored. Still passed over, but a caught signal is
    at its default after ``exec``, where an ignored one stays ignored: every reproducer
    the worker started ran with Ctrl-C ignored, which none does locally (a Python
    reproducer then has no KeyboardInterrupt, and a race in signal handling is another
    race). A worker Dask starts again later has asyncio's handler, which would end it at
    Ctrl-C before repro does; it gets the same."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _sigint_passed_over)


def stop_build(build_id: str) -> None:
    """Run on workers by ``Client.run``: stop that build now (or before it starts)."""
    _build_stop(build_id).stop()


def prepare_task(req: BuildRequest, build_id: str | None = None) -> PrepareReply:
    """Dask task: build on this worker; a build that fails is an answer, not a crash.

    ``build_id`` lets the caller stop the build (``stop_build``), as a lane does that
    leaves a probe the other lanes settled."""
    worker = _worker_address()
    stop = _build_stop(build_id) if build_id is not None else BuildStop()
    try:
        with stoppable(stop):
            check_stop()
            p = prepare_here(req)
    except BuildCancelled:
        return PrepareReply(worker, error="stopped", stopped=True)
    except BuildError as exc:
        log = exc.log
        return PrepareReply(
            worker, error=str(exc), build_failed=True, log=str(log) if log else None
        )
    except ReproError as exc:
        return PrepareReply(worker, error=str(exc))
    return PrepareReply(worker, p.spec, p.matcher, dict(p.info), p.ext_sha)


def _session(sid: str) -> InFlight:
    return _kept(_SESSIONS, _SESSIONS_LOCK, sid, InFlight)


def cancel_session(sid: str) -> None:
    """Run on every worker by ``Client.run``: kill this session's reproducers now."""
    _session(sid).cancel()


# The parsed log stays on the worker: the result already carries each report's signature
# and target flag, and the kept logs travel as files.
# A run cancelled on purpose comes back as (None, None, worker), not as an exception:
# a task that raises is logged by its worker as "Compute Failed" with a traceback, on the
# user's console, whenever the cancel reaches the worker before the future's release.
RemoteRun = tuple[RunResult | None, dict[str, bytes] | None, str]


def run_task(sid: str, req: BuildRequest, index: int) -> RemoteRun:
    """Dask task: one run on this worker, its logs returned and its folder removed."""
    prepared = prepare_here(req)
    try:
        result, _ = run_once(prepared.spec, index, _work_dir(), prepared.matcher, _session(sid))
    except Cancelled:
        return None, None, _worker_address()
    files: dict[str, bytes] | None = None
    folder = Path(result.log_dir) if result.log_dir else None
    if folder is not None:
        # A clean run without reports is never kept: its logs need not travel.
        if result.signatures or result.outcome is not Outcome.CLEAN:
            files = {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}
        shutil.rmtree(folder, ignore_errors=True)
    result.log_dir = None
    return result, files, _worker_address()


def run_chunk(sid: str, req: BuildRequest, indices: tuple[int, ...]) -> list[RemoteRun]:
    """Dask task: several runs one after the other (``DaskRunner`` sizes the chunks).

    A task per run costs the scheduler a round trip and the workers' Python time, which
    on a reproducer of a few milliseconds is most of its cost. Once the session is
    cancelled, the runs not started come back cancelled at once, and the runs that
    finished still come back: the task itself is never cancelled.
    """
    out: list[RemoteRun] = []
    session = _session(sid)
    for index in indices:
        if session.cancelled.is_set():
            out.append((None, None, _worker_address()))
        else:
            out.append(run_task(sid, req, index))
    return out


# --- the local side --------------------------------------------------------------------


@dataclass
class ClusterPrepared(Prepared):
    """A build that lives on workers: the request to remake it and who holds it."""

    request: BuildRequest | None = None
    holders: tuple[str, ...] = ()


class DaskRunner:
    """The stress loop's runs as Dask tasks (see ``repro.app.executors.Runner``).

    Runs travel in chunks: one task runs up to ``chunk`` of them on one worker, so that
    a task lasts about ``chunking.seconds`` (runs of a few seconds go one a task, the
    demo's 20 ms runs several). The chunk size follows the runs' measured durations. The
    loop still sees single runs: ``slots`` counts the runs the chunks in flight hold,
    ``QUEUE_DEPTH`` chunks for each of the ``threads`` that run them.
    """

    def __init__(
        self,
        client: Any,
        prepared: ClusterPrepared,
        slots: int,
        chunking: Chunking = SHORT_CHUNKS,
    ) -> None:
        from distributed import as_completed

        assert prepared.request is not None
        self.client = client
        self.request = prepared.request
        self.holders = list(prepared.holders)
        self.session = uuid.uuid4().hex
        self.threads = max(1, slots)
        self._tasks = QUEUE_DEPTH * self.threads
        self.chunking = chunking
        self.chunk = 1
        self.tasks = 0  # submitted (sent again too), for the run's record
        self._mean: float | None = None  # seconds a run, smoothed
        self._buffer: list[int] = []  # submitted, not yet in a task
        self.index: dict[str, tuple[int, ...]] = {}
        self.futures: dict[str, Any] = {}
        self.done = as_completed([], loop=client.loop, with_results=True, raise_errors=False)
        self.address = str(client.scheduler.address)
        self._watch = WorkerWatch(client)

    @property
    def slots(self) -> int:
        # Room for a whole chunk per free task, on top of what is in flight: the loop tops
        # up to this, so the runs it adds fill whole tasks. Counted as ``_tasks * chunk``,
        # a chunk size that moved between two top-ups left a remainder that the next wait
        # sent as a task of its own: 99-165 tasks for 400 demo runs instead of about 50.
        free = max(0, self._tasks - len(self.index))
        return sum(len(v) for v in self.index.values()) + free * self.chunk

    def submit(self, index: int) -> None:
        self._buffer.append(index)
        if len(self._buffer) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        indices = tuple(self._buffer)
        self._buffer = []
        self._send(indices)

    def _send(self, indices: tuple[int, ...]) -> None:
        # Runs go to the workers that hold the build, and only to them while one is left
        # (``_free_if_holders_gone``). Dask's work stealing moves a task that is merely
        # allowed elsewhere to any idle worker: a lane's calibration ran on the other
        # lane's worker, in 1 CI run of many, and there it would build the racy end first.
        try:
            fut = self.client.submit(
                run_chunk,
                self.session,
                self.request,
                indices,
                pure=False,
                workers=self.holders or None,
                key=f"repro-run-{self.session[:8]}-{self.tasks}",  # a chunk sent again: a new key
            )
        except Exception:
            if self.client.status != "running":  # closed: ClosedClientError
                raise RunnerGone(self._lost()) from None
            raise
        self.tasks += 1
        self.index[fut.key] = indices
        self.futures[fut.key] = fut
        self.done.add(fut)

    def pending(self) -> int:
        return len(self._buffer) + sum(len(v) for v in self.index.values())

    def _learn(self, seconds: float) -> None:
        self._mean = seconds if self._mean is None else 0.8 * self._mean + 0.2 * seconds
        self.chunk = self.chunking.size(self._mean)

    def _free_if_holders_gone(self) -> None:
        """Once no worker that holds the build is left, let any worker take the runs.

        Another worker then builds first. The chunks waiting for a holder are sent again
        without one: they cannot be running, as no holder is there to run them.
        """
        seen = self._watch.seen
        if not self.holders or not seen or not seen.isdisjoint(self.holders):
            return  # no workers at all is WorkerWatch's to judge
        self.holders = []
        waiting = [key for key, fut in self.futures.items() if not fut.done()]
        for key in waiting:
            indices = self.index.pop(key)
            fut = self.futures.pop(key)
            with contextlib.suppress(Exception):
                self.client.cancel([fut])
            self._send(indices)

    def _finish(self, fut: Any, res: Any) -> list[Finished]:
        indices = self.index.pop(fut.key, None)
        if indices is None:
            return []  # sent again to other workers (``_free_if_holders_gone``)
        self.futures.pop(fut.key, None)
        if fut.status == "cancelled":
            return [Finished(i) for i in indices]
        if fut.status == "error":
            from distributed.scheduler import KilledWorker

            exc = res[1] if isinstance(res, tuple) else res
            if isinstance(exc, KilledWorker):
                return [Finished(i, lost="its workers died while running it") for i in indices]
            if isinstance(exc, BaseException):
                raise exc
            raise ReproError(f"runs {indices} failed on the cluster: {exc!r}")
        out: list[Finished] = []
        for index, (result, files, worker) in zip(indices, res, strict=True):
            if result is None:
                out.append(Finished(index))  # cancelled: never counted
            else:
                self._learn(result.duration)
                out.append(Finished(index, result, files, worker))
        return out

    def wait(self, timeout: float | None) -> list[Finished]:
        self._flush()  # a part chunk waits for nobody
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self.done.thread_condition
        while not self.done.has_ready():
            # Not under ``cond``: the watch asks the scheduler, through the event loop, and
            # the event loop takes ``cond`` to say that a task finished. A task that ended
            # during that call held both sides until the call's timeout: 5 s without a run
            # started, in 1 of 20 `--workers 2` stresses of 400 short runs here.
            self._check_client()
            self._watch.check(f"{self.pending()} run(s) in flight were not counted")
            self._free_if_holders_gone()
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                break
            with cond:
                if not self.done.has_ready():
                    cond.wait(left)
        out: list[Finished] = []
        for f, r in self.done.next_batch(block=False):
            out.extend(self._finish(f, r))
        return out

    def _check_client(self) -> None:
        """RunnerGone once the client gave up on its scheduler.

        While the scheduler is away the client tries to reconnect (for Dask's connect
        timeout); when that fails it closes, and the futures in flight are never
        resolved: without this, the wait above would go on for ever.
        """
        if self.client.status in ("closing", "closed"):
            raise RunnerGone(self._lost())

    def _lost(self) -> str:
        return (
            f"lost the Dask scheduler at {self.address} (it stopped, or the network to it "
            f"failed); {self.pending()} run(s) in flight were not counted"
        )

    def cancel(self) -> None:
        # Runs not yet in a task never start; the tasks are not cancelled but told to
        # stop (their runs not started come back cancelled, those that finished come
        # back counted): a cancelled future would lose the finished runs of its chunk.
        self._flush()
        # A worker that is gone has nothing left to kill.
        with contextlib.suppress(Exception):
            self.client.run(cancel_session, self.session)

    def drain(self) -> Iterator[Finished]:
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.index and time.monotonic() < deadline:
            yield from self.wait(max(0.05, deadline - time.monotonic()))

    def close(self) -> None:
        live = [f for f in self.futures.values() if not f.done()]
        if live and self.client.status == "running":
            with contextlib.suppress(Exception):  # the scheduler may be going as we close
                self.client.cancel(live)
        self.index.clear()
        self.futures.clear()


def start_method() -> str:
    """How the LocalCluster's first workers start: ``fork`` when this process runs no
    thread but its main one, else Dask's default, ``spawn``.

    A spawned worker is a new interpreter that imports distributed and repro again:
    about 1 s of CPU each, on the cores the reproducers need. A forked one is a copy of
    this process with all that imported. Measured on 2 cores, a LocalCluster of two
    workers, medians of alternating rounds: started in 0.35 s with spawn, 0.09 s with
    fork; its first task (repro imported on the worker) 0.25 s against 0.02 s; closed
    in 0.14-0.22 s against 0.02 s.

    Only with no other thread: a fork copies a thread's held locks and, while a
    thread starts a subprocess, that subprocess's pipe ends (its reader would then wait
    on the worker). Only the first workers: Dask reads the method each time it starts
    one, and a worker it restarts after a death (runs in flight, threads busy) is
    spawned. Only on Linux: macOS cannot fork a process that has used its frameworks.
    """
    if not sys.platform.startswith("linux"):
        return "spawn"
    return "fork" if threading.active_count() == 1 else "spawn"


class Cluster:
    """A Dask client, and the LocalCluster behind it when repro started one."""

    def __init__(self, client: Any, local: Any = None, shared_cache: Path | None = None) -> None:
        self.client = client
        self.local = local
        self.shared_cache = shared_cache
        self._notes: list[str] = []
        self._said: set[str] = set()
        self._notes_lock = threading.Lock()  # a bisect's lanes build at once

    def tell(self, console: Any) -> None:
        """Say what the user should know about the last builds' workers, once each."""
        from rich.markup import escape

        with self._notes_lock:
            notes, self._notes = self._notes, []
        for note in notes:
            console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)

    def _compare_variables(self, recipes: Collection[str], replies: Sequence[PrepareReply]) -> None:
        """A remote worker's reproducers start from its environment, not this one: say
        where a variable that changes a run differs (a LocalCluster's are this one's).
        ``recipes``: the variables the recipe sets, the same everywhere."""
        if self.local is not None:
            return
        from repro.app.environment import relevant_env, variable_differences

        here = relevant_env()
        for r in replies:
            there = (r.info or {}).get("env")
            if not isinstance(there, dict):
                continue
            for d in variable_differences(here, there, recipes):
                key = f"{r.worker} {d}"
                with self._notes_lock:
                    if key in self._said:
                        continue
                    self._said.add(key)
                    self._notes.append(
                        f"worker {r.worker}: {d}: its runs use its own value; set the "
                        "variable in the recipe's reproducer.env to run with one everywhere"
                    )

    @classmethod
    def open(
        cls,
        workers: int | None,
        address: str | None,
        shared_cache: Path | None = None,
        settle: Callable[[], object] | None = None,
    ) -> Cluster:
        """``settle``: waits for this process's own threads to end their work (the
        interpreter probe) so that the workers can be forked (``start_method``)."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ReproError(
                "--workers and --cluster need Dask: pip install 'repro[cluster]'"
            ) from None
        if workers is not None and address is not None:
            raise ReproError("give --workers N (a cluster on this machine) or --cluster ADDRESS")
        if shared_cache is not None:
            try:
                shared_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ReproError(
                    f"--shared-cache {shared_cache}: cannot make it: {exc.strerror or exc}"
                ) from None
        if address is not None:
            from repro.app.worker_check import check_workers

            client_logs_to_file()
            client = connect(Client, address)
            try:
                check_workers(client)
            except BaseException:
                client.close()
                raise
            return cls(client, None, shared_cache)
        # Ctrl-C in a terminal reaches the whole process group: the worker processes
        # must leave it to this process, which cancels the runs and stops them in
        # order. They are started with SIGINT ignored, which they inherit (and then
        # catch it instead: ``sigint_not_ignored``); and with SIGTERM at its default,
        # not repro's handler (a forked worker keeps handlers).
        import dask

        # A worker samples its threads every 10 ms to draw profiles; on a machine whose
        # cores the reproducers need, that sampling slows every run.
        dask.config.set(QUIET_WORKERS)
        if settle is not None:
            settle()
        method = start_method()
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        old_term = signal.signal(signal.SIGTERM, signal.SIG_DFL) if main else None
        try:
            with dask.config.set({"distributed.worker.multiprocessing-method": method}):
                local = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    # Not None: that still takes port 8787, and a Python warning reaches
                    # the console when another Dask holds it. Any free port, said nowhere.
                    dashboard_address=":0",
                    # The workers' own logs never reach the console: they are repro's
                    # processes, and repro says itself what went wrong. At ERROR, a
                    # worker whose heartbeat met the scheduler closing at Ctrl-C printed
                    # a traceback under "interrupted" (seen once in a fresh-clone run).
                    silence_logs=logging.CRITICAL,
                )
        finally:
            if main:
                signal.signal(signal.SIGINT, old)
                signal.signal(signal.SIGTERM, old_term)
        # This process's (the scheduler's, the nannies') go to the log file, as with
        # --cluster. After the LocalCluster: it sets the level of every stream handler
        # of Dask's logger, a file's included, for as long as it lives.
        client_logs_to_file()
        client = Client(local)
        # Now, and on every worker Dask starts later, before any task reaches it.
        client.register_worker_callbacks(sigint_not_ignored)
        return cls(client, local, shared_cache)

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def workers(self) -> dict[str, int]:
        """Worker address to its threads.

        RunnerGone when the scheduler is gone: asked between two probes (how many lanes),
        a lost scheduler was an internal error (CommClosedError) instead of the resume line.
        """
        try:
            return {str(k): int(v) for k, v in self.client.nthreads().items()}
        except OSError:  # distributed's CommClosedError is one
            raise RunnerGone(
                f"lost the Dask scheduler at {self.client.scheduler.address} (it stopped, "
                "or the network to it failed)"
            ) from None

    def threads(self) -> int:
        """How many runs the cluster takes at once (at least one)."""
        return max(1, sum(self.workers().values()))

    def describe(self) -> dict[str, Any]:
        workers = self.workers()
        return {
            "scheduler": str(self.client.scheduler.address),
            "workers": len(workers),
            "threads": sum(workers.values()),
            "local": self.local is not None,
            "shared_cache": str(self.shared_cache) if self.shared_cache else None,
        }

    def shares(self, lanes: int) -> list[tuple[str, ...]]:
        """The workers of each of ``lanes`` parallel probes (``split_workers``)."""
        return split_workers(list(self.workers()), lanes)

    def prepare(
        self,
        req: BuildRequest,
        workers: Sequence[str] | None = None,
        stop: threading.Event | None = None,
        recipes: Collection[str] = (),
    ) -> ClusterPrepared:
        """Build on every worker at once (or on ``workers``); the runs then go to those
        that succeeded.

        While a commit builds nothing can run, so building it everywhere in parallel
        costs no wall-clock time and lets every worker run it (with a shared cache,
        one worker builds and the others find it there). A parallel bisect's lanes
        each build on their own workers instead, so that their builds overlap.
        ``stop`` set while it builds stops the build on the workers (``BuildCancelled``).
        """
        targets = list(workers) if workers else list(self.workers())
        if not targets:
            addr = self.client.scheduler.address
            raise ReproError(
                f"the scheduler at {addr} has no workers: start them on the machines that "
                f"are to run, with `dask worker {addr}` (docs/cluster.md)"
            )
        build_id = uuid.uuid4().hex

        def submit(worker: str | None) -> Any:
            # Held to its worker (strict): merely allowed elsewhere, Dask's work stealing
            # gives a build queued behind a run that is ending to an idle worker, which
            # then builds twice while the first never holds the build.
            return self.client.submit(
                prepare_task, req, build_id, workers=[worker] if worker else None, pure=False
            )

        futs = [submit(w) for w in targets]
        asked: list[str | None] = list(targets)  # None: sent again to any worker
        watch = WorkerWatch(self.client)
        stopping = False
        # Woken by the last build's end, not by polling: a build found in the cache
        # takes milliseconds, and a 0.2 s poll made each one cost 0.2 to 0.6 s.
        all_done = _all_done(futs)
        while not all_done.wait(0.2) and self.client.status == "running":
            if stop is not None and not stopping and stop.is_set():
                stopping = True
                with contextlib.suppress(Exception):  # a worker gone has nothing to stop
                    self.client.run(stop_build, build_id)
            watch.check("nothing was built")
            if _send_again_where_gone(futs, asked, watch.seen, submit, self.client):
                all_done = _all_done(futs)
        try:
            replies: Sequence[PrepareReply] = self.client.gather(futs)
        except Exception as exc:
            if self.client.status != "running":
                raise RunnerGone(
                    f"lost the Dask scheduler at {self.client.scheduler.address} while "
                    "building (it stopped, or the network to it failed)"
                ) from None
            raise ReproError(f"building on the cluster failed: {exc}") from exc
        if any(r.stopped for r in replies):
            raise BuildCancelled("the build was stopped")
        good = [r for r in replies if r.error is None]
        self._compare_variables(recipes, good)
        if not good:
            first = replies[0]
            where = f"on worker {first.worker}: {first.error}"
            if first.build_failed:
                raise BuildError(where, log=Path(first.log) if first.log else None)
            raise ReproError(where)
        best = good[0]
        assert best.spec is not None and best.matcher is not None
        return ClusterPrepared(
            spec=best.spec,
            matcher=best.matcher,
            ext_sha=best.ext_sha,
            info=_with_worker_variables(best, good[1:]),
            request=req,
            holders=tuple(dict.fromkeys(r.worker for r in good)),
        )

    def runner(self, prepared: ClusterPrepared, chunking: Chunking = SHORT_CHUNKS) -> DaskRunner:
        """Runs on every worker (``holders`` here). Held to the holders only when some
        worker lacks the build (it failed there): when all hold it, a worker that joins
        later takes runs too, and builds first."""
        workers = self.workers()
        if set(prepared.holders) >= set(workers):
            prepared = dataclasses.replace(prepared, holders=())
        return DaskRunner(self.client, prepared, max(1, sum(workers.values())), chunking)

    def prepare_local(
        self,
        loaded: LoadedRecipe,
        overrides: Overrides,
        *,
        ext_ref: str | None = None,
        python_ref: str | None = None,
        python_version: str | None = None,
        workers: Sequence[str] | None = None,
        stop: threading.Event | None = None,
    ) -> ClusterPrepared:
        """``prepare`` with ``context.prepare``'s arguments, on the workers."""
        return self.prepare(
            BuildRequest.of(
                loaded,
                overrides,
                ext_ref=ext_ref,
                python_ref=python_ref,
                python_version=python_version,
                cache_dir=self.shared_cache,
            ),
            workers,
            stop,
            loaded.recipe.variables(),
        )


def _with_worker_variables(best: PrepareReply, others: Sequence[PrepareReply]) -> dict[str, Any]:
    """``best``'s ``info``, which the run record states, and where the other workers'
    run variables differ from it (``worker_variables``): their runs count in one rate."""
    from repro.app.environment import worker_variables

    info = best.info
    env = info.get("env")
    if not isinstance(env, dict):
        return info
    theirs = {
        r.worker: r.info["env"]
        for r in others
        if r.worker != best.worker and isinstance(r.info.get("env"), dict)
    }
    differ = worker_variables(env, theirs)
    return {**info, "worker_env": differ} if differ else info


def _send_again_where_gone(
    futs: list[Any],
    asked: list[str | None],
    seen: frozenset[str] | None,
    submit: Callable[[str | None], Any],
    client: Any,
) -> bool:
    """Builds still waiting for a worker that has left go to any worker; True if any."""
    if not seen:
        return False  # no workers at all is WorkerWatch's to judge
    moved = False
    for i, (fut, worker) in enumerate(zip(futs, asked, strict=True)):
        if worker is not None and worker not in seen and not fut.done():
            with contextlib.suppress(Exception):
                client.cancel([fut])
            futs[i] = submit(None)
            asked[i] = None
            moved = True
    return moved


def _all_done(futures: Sequence[Any]) -> threading.Event:
    """An event set once every one of ``futures`` has ended (in any state)."""
    event = threading.Event()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            left[0] -= 1
            if left[0] <= 0:
                event.set()

    if not futures:
        event.set()
    for fut in futures:
        fut.add_done_callback(one_done)
    return event


def split_workers(workers: Sequence[str], lanes: int) -> list[tuple[str, ...]]:
    """Share the workers out among ``lanes`` parallel probes, disjoint while there are
    enough (worker ``i`` to lane ``i % lanes``); with fewer workers than lanes, lanes
    share one (its threads run several probes)."""
    if not workers or lanes < 1:
        return [tuple(workers)] * max(lanes, 0)
    if len(workers) >= lanes:
        return [tuple(workers[i::lanes]) for i in range(lanes)]
    return [(workers[i % len(workers)],) for i in range(lanes)]


def open_cluster(
    workers: int | None,
    address: str | None,
    shared_cache: Path | None,
    settle: Callable[[], object] | None = None,
) -> Cluster | None:
    """The cluster the options ask for; None (run locally) when they ask for none."""
    if workers is None and address is None:
        if shared_cache is not None:
            raise ReproError("--shared-cache is for a cluster: give --workers N or --cluster")
        return None
    return Cluster.open(workers, address, shared_cache, settle)
