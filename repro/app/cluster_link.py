"""The link to a Dask scheduler: reaching it, and not waiting on it for ever.

Dask's client retries, reconnects and waits without end in places where a user would
rather be told: a refused connection is retried for 30 s, a peer that never answers
holds the handshake for ever, a lost scheduler leaves futures unresolved, tasks wait
for workers that are all gone. Each of those is turned here into a clear ReproError
(``RunnerGone`` where runs were in flight, so that the loop keeps what finished).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from repro.app.executors import RunnerGone
from repro.errors import ReproError

# How long a plain TCP connection to the scheduler may take before it is called unreachable.
PROBE_TIMEOUT = 10.0
# How long runs wait on a cluster with no worker at all before repro stops (keeping them).
NO_WORKER_GRACE = float(os.environ.get("REPRO_NO_WORKER_GRACE", "60"))

_T = TypeVar("_T")


def connect(client_cls: Any, address: str) -> Any:
    """A client of the scheduler at ``address``, or a ReproError that says what is wrong.

    Dask retries a refused connection until its timeout, so "nothing listens there" (the
    scheduler not started, a wrong port) would take 30 s to say; a plain TCP connection
    says it at once. And what answers on a wrong port is seldom silent: an HTTP server
    (Dask's own dashboard, on 8787, among them) sends bytes that Dask reads as a message
    length, and it then fails on a gigabytes-long allocation (MemoryError), nothing like
    "not a scheduler". So every failure to connect is said as what it means.
    """
    import dask
    from dask.utils import parse_timedelta
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location) if scheme in ("tcp", "tls") else ("", 0)
    except ValueError as exc:
        raise ReproError(
            f"--cluster {address}: not a scheduler address ({exc}); "
            "give tcp://HOST:PORT, as `dask scheduler` prints it"
        ) from None
    if host:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
        except ConnectionRefusedError:
            raise ReproError(
                f"--cluster {address}: nothing listens at {host}:{port}; "
                "is `dask scheduler` running there, on that port?"
            ) from None
        except socket.gaierror as exc:
            raise ReproError(f"--cluster {address}: unknown host {host} ({exc})") from None
        except OSError as exc:  # a timeout (a firewall that drops), no route, ...
            raise ReproError(
                f"--cluster {address}: cannot reach {host}:{port}: {exc or 'no answer'} "
                f"(within {PROBE_TIMEOUT:.0f} s)"
            ) from None
    # Dask's own setting (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=10s), 30 s by default.
    wait = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")) or 30.0
    try:
        return _within(wait + 5.0, lambda: client_cls(address, timeout=wait))
    except _Late:
        raise ReproError(
            f"--cluster {address}: no Dask answer within {wait + 5.0:.0f} s: "
            "what listens there is not a Dask scheduler, or it is stuck"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ReproError(f"--cluster {address}: cannot reach the scheduler: {exc}") from None
    except MemoryError:
        raise ReproError(
            f"--cluster {address}: what answers there is not a Dask scheduler; "
            "is that the scheduler's port (8786 by default; 8787 is its dashboard)?"
        ) from None
    except Exception as exc:  # whatever else a peer or a configuration makes Dask raise
        raise ReproError(
            f"--cluster {address}: cannot connect: {type(exc).__name__}: {exc}"
        ) from None


def client_logs_to_file() -> Path | None:
    """Dask's client logs go to ``dask-client.log`` in the cache, not over the console.

    When the scheduler goes away the client logs every reconnect attempt and, when it
    gives up, tracebacks of its own cancelled tasks, between the live panel's lines;
    repro then says itself what happened and what to do, and the log stays readable
    in the file. Returns the file (None if the cache cannot take it: logs unchanged).
    """
    from repro.paths import cache_dir as cache_base

    top = logging.getLogger("distributed")
    try:
        path = cache_base() / "dask-client.log"
        if any(
            isinstance(h, logging.FileHandler) and h.baseFilename == str(path.absolute())
            for h in top.handlers
        ):
            return path  # a second cluster in this process (bisect's second stage)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except (ReproError, OSError):
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    # Dask sets up handlers on its own loggers and on tornado's, whose "application"
    # logger prints the tracebacks of the client's futures when the scheduler goes.
    roots = ("distributed", "tornado")
    names = [*roots] + [
        n for n in logging.root.manager.loggerDict if n.startswith(tuple(f"{r}." for r in roots))
    ]
    for name in names:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
    top.addHandler(handler)
    logging.getLogger("tornado").addHandler(handler)
    for name in names:
        if name not in roots:
            logging.getLogger(name).propagate = True  # to the file, through its root
    return path


class WorkerWatch:
    """RunnerGone once the cluster has had no worker for ``NO_WORKER_GRACE`` seconds.

    Tasks wait for a worker without end, and the workers can all be gone: killed, their
    machines down, or closed by Dask itself when they cannot load a task.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last_look = time.monotonic()
        self.since: float | None = None
        # The workers' addresses at the last answer (None: none yet).
        self.seen: frozenset[str] | None = None

    def check(self, lost: str) -> None:
        now = time.monotonic()
        if now - self.last_look < 2.0:
            return
        self.last_look = now
        if self.client.status != "running":
            return  # reconnecting: the scheduler's fate is _check_client's to judge
        try:
            # Bounded: a call to a scheduler that is going away may never be answered.
            workers = self.client.nthreads(callback_timeout=5)
        except Exception:  # no answer: nothing known about the workers, judge later
            return
        self.seen = frozenset(workers)
        if workers:
            self.since = None
            return
        if self.since is None:
            self.since = now
        elif now - self.since >= NO_WORKER_GRACE:
            raise RunnerGone(
                f"the cluster at {self.client.scheduler.address} has had no workers for "
                f"{NO_WORKER_GRACE:.0f} s (their logs say why; a worker without this repro "
                f"is closed by Dask at its first task); {lost}"
            )


class _Late(Exception):
    pass


def _within(seconds: float, make: Callable[[], _T]) -> _T:
    """``make()``, or _Late after ``seconds``.

    Dask's handshake has no deadline: a peer that accepts the connection and then says
    nothing (an HTTP server waiting for a request line, say) holds ``Client()`` forever,
    past its own timeout. The attempt goes on in a daemon thread, and is abandoned.
    """
    box: list[Any] = []

    def attempt() -> None:
        try:
            box.append((True, make()))
        except BaseException as exc:  # handed to the caller's thread as it is
            box.append((False, exc))

    thread = threading.Thread(target=attempt, name="repro-connect", daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        raise _Late
    ok, value = box[0]
    if not ok:
        raise value
    return cast(_T, value)
