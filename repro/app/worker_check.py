"""Does every worker of a cluster run this very repro?

A worker runs tasks that name repro's functions and carry its dataclasses. A worker
without repro, or with another version of its code, cannot unpickle them, and Dask's
answer to that is to close the worker: the runs then wait for a worker that never comes.
Different code that does unpickle is worse: runs counted by other rules. So before any
task, each worker reports which repro it has: its version and a digest of its source,
computed by a probe that travels by value (it names nothing of repro's, so it reaches
even a worker that has none), and compared with the same probe run here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from repro.errors import ReproError

# Sent as source so that pickling takes it by value: a function of an importable module
# would travel as a reference to repro, which a worker without repro cannot load.
_PROBE = """
def probe():
    import hashlib, importlib, pathlib, sys
    py = sys.version.split()[0]
    try:
        mod = importlib.import_module("repro")
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "python": py}
    root = pathlib.Path(mod.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\\0" + path.read_bytes())
    return {"version": mod.__version__, "digest": h.hexdigest()[:12], "python": py}
"""


def make_probe() -> Callable[[], dict[str, Any]]:
    """The probe, as a function of a module that exists nowhere (so: by value)."""
    namespace: dict[str, Any] = {"__name__": "repro_worker_probe"}
    exec(compile(_PROBE, "<repro worker probe>", "exec"), namespace)
    probe: Callable[[], dict[str, Any]] = namespace["probe"]
    return probe


def problems(here: Mapping[str, Any], workers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What is wrong with each worker, against this machine's probe; empty when none."""
    out = []
    for address, got in sorted(workers.items()):
        if "error" in got:
            out.append(f"{address}: cannot import repro ({got['error']})")
        elif (got.get("version"), got.get("digest")) != (here["version"], here["digest"]):
            out.append(
                f"{address}: repro {got.get('version')} (code {got.get('digest')}), "
                f"here {here['version']} (code {here['digest']})"
            )
    return out


def check_workers(client: Any) -> None:
    """ReproError naming every worker that does not run this repro, and what to do."""
    probe = make_probe()
    here = probe()
    workers = client.run(probe)
    bad = problems(here, workers)
    if bad:
        raise ReproError(
            "these Dask workers do not run the repro you are running, and would fail "
            "its tasks: " + "; ".join(bad) + ". Install the same repro on every worker "
            "(the same checkout or `pip install 'repro[cluster]'` of the same version; "
            "docs/cluster.md, 'What each worker needs')"
        )
