"""The environment that repro's builds and reproducers start from: this process's,
without what Dask wrote into it.

A Dask nanny writes its ``distributed.nanny.pre-spawn-environ`` into ``os.environ``
before it starts a worker process (by default ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` = 1 and ``MALLOC_TRIM_THRESHOLD_``), and pins
``PYTHONHASHSEED`` (6640) so that hashes agree across workers. The worker inherits all
of it, and so does everything the worker starts; with a LocalCluster the nanny lives
in repro's own process, so repro's ``os.environ`` has them too. A reproducer would then
run with one BLAS thread and a fixed hash seed on a cluster and with neither locally:
another program, whose race may show at another rate or not at all.

Dask marks the process that spawns workers with ``__DASK_PARENT_PID``. On Linux
``/proc/PID/environ`` is that process's environment as it was started, before the
nanny wrote anything, so each variable Dask may have written gets its value back from
there, or is removed if it was not set. Where that file cannot be read, a variable is
removed only if it still holds the value Dask would have written. Variables the user
gave Dask for its workers (``distributed.nanny.environ``, ``dask worker``'s own
environment) are theirs and stay.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

# Dask's own marker: the pid of the process whose nanny(s) spawn the workers.
PARENT_PID = "__DASK_PARENT_PID"
# Pinned by every nanny unless already set to something other than "0".
HASH_SEED = "PYTHONHASHSEED"
DASK_HASH_SEED = "6640"


def without_dask(
    environ: Mapping[str, str],
    written: Mapping[str, str],
    launched: Mapping[str, str] | None,
) -> dict[str, str]:
    """``environ`` with each variable in ``written`` (what Dask writes, name to value) put
    back as it was in ``launched`` (the environment the spawning process started with),
    or, without ``launched``, dropped where it still holds Dask's value."""
    env = dict(environ)
    for key in (*written, PARENT_PID):
        if key not in env:
            continue
        if launched is not None:
            if key in launched:
                env[key] = launched[key]
            else:
                del env[key]
        elif key == PARENT_PID or env[key] == written.get(key):
            del env[key]
    return env


def parse_proc_environ(data: bytes) -> dict[str, str]:
    """The NUL-separated ``KEY=VALUE`` entries of ``/proc/PID/environ``."""
    env: dict[str, str] = {}
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def _launched(pid: str) -> dict[str, str] | None:
    if not pid.isdigit():
        return None
    try:
        return parse_proc_environ(Path(f"/proc/{pid}/environ").read_bytes())
    except OSError:
        return None


def _written_by_dask() -> dict[str, str]:
    """What a nanny writes, from Dask's configuration in this process (Dask is already
    imported wherever ``__DASK_PARENT_PID`` is set)."""
    import dask

    written = {
        str(k): str(v)
        for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}).items()
        if v is not None
    }
    written.setdefault(HASH_SEED, DASK_HASH_SEED)
    return written


def child_environ() -> dict[str, str]:
    """The environment to start builds and reproducers with: ``os.environ`` as the user
    set it, whether or not this process is (or hosts) a Dask worker's nanny."""
    pid = os.environ.get(PARENT_PID)
    if pid is None:
        return dict(os.environ)
    return without_dask(os.environ, _written_by_dask(), _launched(pid))


# The variables that point git at one repository whatever the directory it runs in
# (`git rev-parse --local-env-vars`, less the configuration ones). Set by a git hook or
# an IDE's terminal, GIT_DIR sent every question about the user's source and repro's
# mirror to that other repository: "unknown ref 'HEAD' ... was the repository made
# again?" of a repository that was fine.
GIT_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_PREFIX",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
)


def forget_git_location(environ: MutableMapping[str, str]) -> list[str]:
    """Drop ``GIT_LOCATION_VARS`` from ``environ`` (repro's own, at start: its git
    work and the builds in its worktrees must each find their own repository, as git
    does for a submodule); the names dropped."""
    dropped = [k for k in GIT_LOCATION_VARS if k in environ]
    for k in dropped:
        del environ[k]
    return dropped
