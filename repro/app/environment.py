"""The machine a race was measured on, written down when a run starts.

A data race that shows on one machine and not on another is usually explained by
something in this snapshot (a different TSAN runtime, a kernel with more mmap
randomisation, fewer cores, other TSAN_OPTIONS). It is taken at the start of a run
and stored in the run directory, because by the time someone reads the report the
compiler may have been upgraded. Everything here may end up pasted into a public
issue, so values are passed through :func:`redact` before they are stored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repro.builds.patches import describe_patches
from repro.host.compilers import compiler_version, find_clang, rustc_info
from repro.host.environ import child_environ
from repro.host.setarch import mmap_rnd_bits
from repro.host.symbolizer import find_symbolizers
from repro.redact import REDACTED as REDACTED
from repro.redact import looks_secret as looks_secret
from repro.redact import redact as redact

if TYPE_CHECKING:
    from repro.recipe import LoadedRecipe

SCHEMA = 1

# The variables that change how a race is built or shows, by exact name or prefix.
_ENV_EXACT = (
    "PATH",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "TSAN_OPTIONS",
    "TSAN_SYMBOLIZER_PATH",
    "UNSAFE_PYO3_BUILD_FREE_THREADED",
    "UNSAFE_PYO3_SKIP_VERSION_CHECK",
)
_ENV_PREFIXES = ("PYTHON", "CARGO", "RUST", "PYO3", "REPRO_")


def relevant_env(
    environ: Mapping[str, str] | None = None, also: Collection[str] = ()
) -> dict[str, str]:
    """The variables that matter for a TSAN build or run, redacted, sorted by name.

    ``also``: names that matter whatever they are called, such as the ones a recipe
    sets for its reproducer (a knob of the reproducer's own changes the rate as surely
    as ``TSAN_OPTIONS`` does, and a record that left it out could not tell two such runs
    apart)."""
    env = child_environ() if environ is None else environ
    keep = {
        k: v
        for k, v in env.items()
        if k in _ENV_EXACT or k in also or k.startswith(_ENV_PREFIXES) or k.endswith("SAN_OPTIONS")
    }
    redacted: dict[str, str] = redact(keep)
    return dict(sorted(redacted.items()))


# --- probing the machine -----------------------------------------------------------------


def _run(argv: Sequence[str], timeout: float = 15.0) -> str | None:
    """stdout of a quick tool query, or None when the tool is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    return text.splitlines()[0].strip() or None


def _os_release() -> str | None:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    name = fields.get("PRETTY_NAME") or fields.get("NAME")
    return name.strip().strip('"') if name else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _package_of(path: str) -> str | None:
    """The distribution package (and version) that installed a file, if dpkg knows it."""
    out = _run(["dpkg", "-S", path])
    if not out:
        return None
    pkg = out.splitlines()[0].split(":", 1)[0].strip()
    if not pkg:
        return None
    version = _run(["dpkg-query", "-W", "-f=${Version}", pkg])
    return f"{pkg} {version}" if version else pkg


def _gcc_tsan(gcc: str) -> dict[str, Any] | None:
    name = _run([gcc, "-print-file-name=libtsan.so"])
    if not name or "/" not in name:
        return None
    real = os.path.realpath(name)
    if not os.path.exists(real):
        return None
    return {"runtime": "libtsan (gcc)", "path": real, "package": _package_of(real)}


def _clang_tsan(clang: str) -> dict[str, Any] | None:
    machine = platform.machine()
    for name in (f"libclang_rt.tsan-{machine}.a", "libclang_rt.tsan.a"):
        path = _run([clang, f"-print-file-name={name}"])
        if path and "/" in path and os.path.exists(path):
            break
    else:
        rt = _run([clang, "--print-runtime-dir"])
        path = None
        if rt:
            cand = Path(rt) / "libclang_rt.tsan.a"
            path = str(cand) if cand.exists() else None
    m = re.search(r"version (\d+\.\d+\.\d+)", compiler_version(clang) or "")
    return {
        "runtime": "compiler-rt (clang)",
        "llvm": m.group(1) if m else None,
        "path": os.path.realpath(path) if path else None,
        "package": _package_of(os.path.realpath(path)) if path else None,
    }


def _rust() -> dict[str, Any] | None:
    fields = rustc_info()
    if not fields:
        return None
    toolchain = _first_line(_run(["rustup", "show", "active-toolchain"]))
    return {
        "rustc": fields.get("rustc"),
        "release": fields.get("release"),
        "commit": fields.get("commit-hash"),
        "host": fields.get("host"),
        "llvm": fields.get("LLVM version"),
        "cargo": _first_line(_run(["cargo", "--version"])),
        "toolchain": toolchain,
    }


@functools.lru_cache(maxsize=4)
def _host(clang_hint: str | None) -> dict[str, Any]:
    """What does not change between runs of one process: asked once, it takes a second."""
    uname = platform.uname()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    gcc = "gcc" if shutil.which("gcc") else None
    clang = find_clang(clang_hint)
    compilers: dict[str, str | None] = {
        "cc": compiler_version("cc"),
        "gcc": compiler_version("gcc") if gcc else None,
        "clang": compiler_version(clang) if clang else None,
    }
    runtimes: dict[str, Any] = {}
    if gcc:
        runtimes["gcc"] = _gcc_tsan(gcc)
    if clang:
        runtimes["clang"] = _clang_tsan(clang)
    rust = _rust()
    if rust and rust.get("llvm"):
        runtimes["rust"] = {
            "runtime": "compiler-rt (linked into Rust binaries)",
            "llvm": rust["llvm"],
        }
    return {
        "os": {
            "system": uname.system,
            "distribution": _os_release(),
            "kernel": uname.release,
            "kernel_version": uname.version,
            "machine": uname.machine,
        },
        "cpu": {"count": os.cpu_count(), "usable": usable, "model": _cpu_model()},
        "compilers": {k: v for k, v in compilers.items() if v},
        "tsan_runtime": {k: v for k, v in runtimes.items() if v},
        "rust": rust,
        "git": _first_line(_run(["git", "--version"])),
        "host_python": platform.python_version(),
    }


# --- what the context tells -------------------------------------------------------------


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _python_section(py: Mapping[str, Any]) -> dict[str, Any]:
    source_id = str(py.get("source_id") or "")
    source = str(py.get("source") or "")
    if re.fullmatch(r"[0-9a-f]{40}", source_id):
        origin = "git"
    elif re.search(r"\.(tar\.xz|tgz|tar\.gz)$", source):
        origin = "tarball"
    else:
        origin = "executable"
    return {
        "version": py.get("version"),
        "origin": origin,
        "source": source or None,
        "commit": source_id if origin == "git" else None,
        "tarball_sha256": source_id if origin == "tarball" else None,
        "executable": str(py.get("python")) if origin == "executable" else None,
        "gil_disabled": py.get("gil_disabled"),
        "tsan": py.get("tsan"),
        "compiler": py.get("compiler"),
        "compiler_version": py.get("compiler_version"),
        "configure_args": list(py.get("configure_args") or []),
        "patches": describe_patches([str(p) for p in py.get("patches") or []]),
        "prefix": str(py.get("prefix")) if py.get("prefix") else None,
    }


def _extension_build(key: str | None) -> dict[str, Any]:
    """What the build cache recorded of the extension's build: its environment, and for a
    Python package its build backend (the report's plain script builds it the same way)."""
    if not key:
        return {"build_env": None}
    try:
        from repro.builds.cache import META_FILE
        from repro.paths import cache_dir

        meta = json.loads((cache_dir() / "builds" / key / META_FILE).read_text())
    except (OSError, ValueError, ImportError):
        return {"build_env": None}
    env = meta.get("env")
    out: dict[str, Any] = {
        "build_env": {str(k): str(v) for k, v in env.items()} if isinstance(env, Mapping) else None
    }
    if isinstance(meta.get("backend"), str):
        out["backend"] = meta["backend"]
    if isinstance(meta.get("seconds"), (int, float)):
        out["seconds"] = float(meta["seconds"])
    return out


def extension_build_seconds(info: Mapping[str, Any]) -> float | None:
    """How long the extension's build took when it was made (a cached one too), as the
    build cache recorded it; None where it did not."""
    ext = info.get("extension")
    if not isinstance(ext, Mapping):
        return None
    seconds = _extension_build(ext.get("key")).get("seconds")
    return seconds if isinstance(seconds, float) else None


def extension_modules(info: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The extension modules of the Python package a prepared run built (its wheel's, as
    ``context.prepare`` found them where it built); None for other extensions."""
    ext = info.get("extension")
    if not isinstance(ext, Mapping) or not isinstance(ext.get("modules"), list):
        return None
    return tuple(str(m) for m in ext["modules"])


def extension_backend(info: Mapping[str, Any]) -> str | None:
    """The build backend of the Python package a prepared run (``Prepared.info``) built,
    as its build cache recorded it; None for other extensions, or a build kept elsewhere."""
    ext = info.get("extension")
    if not isinstance(ext, Mapping):
        return None
    backend = _extension_build(ext.get("key")).get("backend")
    return backend if isinstance(backend, str) else None


def _symbolizer_section(chosen: Any) -> dict[str, Any]:
    """The llvm-symbolizers installed, and the one repro set for the run and why."""
    section: dict[str, Any] = {
        "installed": [{"llvm": s.major, "path": s.path} for s in find_symbolizers()]
    }
    if isinstance(chosen, Mapping):
        section["chosen"] = dict(chosen)
    return section


_PYTHON_WORD = re.compile(r"(?:^|/)python[0-9.]*t?$")


def interpreter_for(command: str, executable: str | None = None) -> str:
    """The interpreter a run uses when repro builds none: the recipe's
    ``python.executable``, else the python the command starts, else ``python3``
    (what ``{python}`` stands for without a ``python:`` section)."""
    if executable:
        return executable
    words = command.split()
    for word in words[:3]:
        if _PYTHON_WORD.search(word.strip("'\"")):
            return word.strip("'\"")
    return "python3"


def probe_interpreter(executable: str) -> dict[str, Any]:
    """What an existing interpreter is, as it says itself: path, version, free-threading
    (sysconfig's Py_GIL_DISABLED) and TSAN (``--with-thread-sanitizer`` in its
    CONFIG_ARGS, or the TSAN runtime in its process image).

    Without this a report of a run on the system Python says nothing about the Python
    at all, though a GIL build and a free-threaded one race differently.
    """
    from repro.builds.cache import BuildError
    from repro.builds.cpython import probe_python
    from repro.host.tsan_binary import links_runtime

    found = executable if "/" in executable else shutil.which(executable)
    record: dict[str, Any] = {"executable": executable, "path": found}
    if not found or not Path(found).exists():
        record["error"] = f"{executable} not found"
        return record
    try:
        info = probe_python(Path(found))
    except BuildError as exc:
        record["error"] = str(exc).splitlines()[0]
        return record
    libs = []
    if info.get("libdir") and info.get("ldlibrary"):
        libs.append(Path(str(info["libdir"])) / str(info["ldlibrary"]))
    config_args = str(info.get("config_args") or "")
    record.update(
        path=str(info.get("executable") or found),
        version=info.get("version"),
        gil_disabled=info.get("gil_disabled") == 1,
        tsan="--with-thread-sanitizer" in config_args or links_runtime(Path(found).resolve(), libs),
    )
    return record


def interpreter_record(python: Any, command: str, base_dir: Path) -> dict[str, Any] | None:
    """probe_interpreter for a run whose recipe builds no Python (``python`` is the
    recipe's PythonSpec or None); None when repro builds it and records the build."""
    if python is not None and not python.executable:
        return None
    exe = interpreter_for(command, python.executable if python is not None else None)
    if "/" in exe and not Path(exe).expanduser().is_absolute():
        exe = str(base_dir / exe)
    record = probe_interpreter(exe)
    if python is not None:
        record["source"] = "the recipe's python.executable"
    elif exe == "python3":
        record["source"] = "python3 on PATH (the recipe has no python: section)"
    else:
        record["source"] = "the reproducer's command (the recipe has no python: section)"
    return record


class InterpreterSoon:
    """interpreter_record for a recipe, in a thread started at once; call it for the
    record (the thread's error is raised there), ``wait`` to let it end.

    The probe is a few subprocesses (0.3 to 0.4 s); started before a Dask cluster
    opens, it overlaps with importing Dask, where after it added to every command's.
    The cluster waits for it (``wait``) before it forks its workers.
    """

    def __init__(self, loaded: LoadedRecipe) -> None:
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._probe, args=(loaded,), name="repro-interpreter-probe", daemon=True
        )
        self._thread.start()

    def _probe(self, loaded: LoadedRecipe) -> None:
        try:
            r = loaded.recipe
            self._box["record"] = interpreter_record(
                r.python, r.reproducer.command, loaded.base_dir
            )
        except BaseException as exc:  # said where the record is awaited
            self._box["error"] = exc

    def wait(self) -> None:
        self._thread.join()

    def __call__(self) -> dict[str, Any] | None:
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        record: dict[str, Any] | None = self._box["record"]
        return record


# Variables that change how a run behaves without naming a place on one machine: a
# remote worker with another value of one of them runs another experiment. PYTHON is
# the interpreter repro built, in each worker's own cache.
_PATH_VARIABLES = frozenset(
    {"PYTHON", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONPYCACHEPREFIX",
     "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONPLATLIBDIR", "PYTHON_HISTORY"}
)  # fmt: skip


def _behaves(name: str) -> bool:
    return (name.startswith("PYTHON") and name not in _PATH_VARIABLES) or name.endswith(
        "SAN_OPTIONS"
    )


def variable_differences(
    here: Mapping[str, str], there: Mapping[str, str], recipes: Collection[str] = ()
) -> list[str]:
    """``NAME (here X, there Y)`` for each run variable whose value differs between this
    process (``here``) and a worker's prepared run (``there``), leaving out those the
    recipe sets (both sides have the recipe's, up to its placeholders)."""
    out = []
    for name in _differing(here, there, recipes):
        a, b = here.get(name), there.get(name)
        out.append(f"{name} (here {'unset' if a is None else repr(a)}, "
                   f"there {'unset' if b is None else repr(b)})")  # fmt: skip
    return out


def _differing(
    a: Mapping[str, str], b: Mapping[str, str], leave_out: Collection[str] = ()
) -> list[str]:
    """The run variables (``_behaves``) whose values differ between ``a`` and ``b``."""
    names = (a.keys() | b.keys()) - set(leave_out)
    return [n for n in sorted(names) if _behaves(n) and a.get(n) != b.get(n)]


def worker_variables(
    recorded: Mapping[str, str], others: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str | None]]:
    """For each other worker (address -> its prepared run's ``env``), the run variables
    whose value differs from ``recorded`` (the worker whose environment the record
    states; None: unset there). A record of a cluster's runs states one worker's
    variables, and a stress rate pooled over workers that ran other experiments should
    say so, not hide it behind the first one's."""
    out: dict[str, dict[str, str | None]] = {}
    for worker, env in sorted(others.items()):
        diff = {name: env.get(name) for name in _differing(recorded, env)}
        if diff:
            out[worker] = diff
    return out


def this_process_variables() -> dict[str, Any]:
    """The ``env`` and ``tsan_options`` of a snapshot, read in this process."""
    env = child_environ()
    return {"env": relevant_env(env), "tsan_options": env.get("TSAN_OPTIONS")}


def run_variables(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``env`` and ``tsan_options`` of a snapshot from a prepared run's ``info``
    (``context.prepare``: the variables the reproducer starts from, taken where it runs,
    which on a cluster is a worker with an environment of its own), and ``worker_env``
    when other workers ran it with other run variables (``worker_variables``); None
    without one."""
    env = info.get("env")
    if not isinstance(env, Mapping):
        return None
    out: dict[str, Any] = {"env": dict(env), "tsan_options": env.get("TSAN_OPTIONS")}
    workers = info.get("worker_env")
    if isinstance(workers, Mapping) and workers:
        out["worker_env"] = {str(w): dict(d) for w, d in workers.items()}
    return out


def collect_environment(
    context: Mapping[str, Any] | None = None, interpreter: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Snapshot of the machine, plus what the prepared run (``Prepared.info``) built.

    Called at the start of a stress run or a bisect; ``context`` is None when nothing
    has been built yet (a bisect builds per commit and records each build itself).
    ``interpreter`` (probe_interpreter) is the Python that ran when repro built none.
    The result is redacted already: it is meant to be stored and published as is.
    """
    ctx = dict(context or {})
    py = ctx.get("python") if isinstance(ctx.get("python"), Mapping) else None
    clang_hint = str(py.get("compiler")) if py and py.get("compiler") else None
    snap: dict[str, Any] = {"schema": SCHEMA, **json.loads(json.dumps(_host(clang_hint)))}
    snap["vm_mmap_rnd_bits"] = mmap_rnd_bits()
    snap["symbolizer"] = _symbolizer_section(ctx.get("symbolizer"))
    snap.update(run_variables(ctx) or this_process_variables())
    if py is not None:
        snap["cpython"] = _python_section(py)
    elif interpreter is not None:
        snap["interpreter"] = dict(interpreter)
    ext = ctx.get("extension")
    if isinstance(ext, Mapping):
        snap["extension"] = {
            "repo": ext.get("repo"),
            "sha": ext.get("sha"),
            **_extension_build(ext.get("key")),
        }
    run: dict[str, Any] = {}
    for k in ("command", "cwd", "threads", "switch_interval", "prefix", "tsan_options"):
        if k in ctx:
            run[k] = ctx[k]
    if run:
        snap["run"] = run
    result: dict[str, Any] = redact(snap)
    return result
