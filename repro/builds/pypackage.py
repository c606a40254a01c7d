"""A Python package under test: its wheel built with TSAN, installed for the Python under test.

The TSAN interpreter runs Python code about ten times slower: under it `python -m
venv` (ensurepip) took minutes here, and importing setuptools alone over 30 s. So
the TSAN interpreter runs no installer at all. Its environment is made once per
Python build (``venv --without-pip``), and everything that goes into it is fetched
and unpacked by the host's pip, asked for wheels of the target's tags (``cp313t``).
A setuptools package is built by the host interpreter with the target's sysconfig
data (``_PYTHON_SYSCONFIGDATA_NAME``, the cross-build hook CPython has), so it
compiles against the target's headers and gets its extension suffix; other
backends run under the target interpreter with their requirements on PYTHONPATH.
Each commit's wheel is unpacked into a directory of its own, put first on
PYTHONPATH at run time, so commits never overwrite each other in the environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from repro.builds.cache import BuildCache, BuildContext, BuildError, cache_key, would_build
from repro.builds.cpython import PythonBuild
from repro.builds.extension import (
    CARGO_DEBUG_ENV,
    TSAN_CFLAGS,
    TSAN_LDFLAGS,
    TSAN_RUSTFLAGS,
    ExtensionBuild,
    range_env,
    run_build_commands,
    rustc_info,
    with_recipe_env,
)
from repro.builds.progress import BuildProgress, NullProgress, ensure_reported
from repro.builds.requirements import MARKER_PROBE, applicable, host_environment, names
from repro.gitrepo import GitRepo
from repro.host.compilers import cxx_for
from repro.host.environ import child_environ
from repro.host.setarch import setarch_prefix
from repro.host.tsan_binary import module_instrumented
from repro.recipe import ExtensionSpec
from repro.text import truncate

STANDALONE = Path(__file__).resolve().parent.parent / "standalone"
FRONTEND = STANDALONE / "repro_pep517_wheel.py"
PYTEST_TOOLS = ("pytest", "pytest-run-parallel")

# build-backend -> (name shown, who runs the backend). Any other backend (an in-tree
# one that wraps setuptools, hatchling with a build hook) gets the C flags in the
# environment, and its modules must then show TSAN's symbols (check_instrumented) as
# every build's must.
BACKENDS: dict[str, tuple[str, str]] = {
    "setuptools.build_meta": ("setuptools", "host"),
    "setuptools.build_meta:__legacy__": ("setuptools", "host"),
    "mesonpy": ("meson-python", "target"),
    "scikit_build_core.build": ("scikit-build-core", "target"),
    "maturin": ("maturin", "target"),
}
LEGACY_REQUIRES = ("setuptools>=40.8.0",)


@dataclass(frozen=True)
class Backend:
    """What pyproject.toml (or its absence) says about building the package."""

    module: str
    name: str
    runner: str  # "host" or "target": which interpreter runs the backend
    requires: tuple[str, ...]


def find_backend(worktree: Path, where: str) -> Backend:
    """The package's build backend; BuildError naming the commit if it has none."""
    pyproject = worktree / "pyproject.toml"
    data: dict[str, Any] = {}
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BuildError(f"{where}: pyproject.toml is not valid TOML: {exc}") from None
    elif not (worktree / "setup.py").is_file():
        raise BuildError(
            f"{where}: no pyproject.toml or setup.py at the top of the tree: not a Python "
            "package (extension.kind: python-package needs one)"
        )
    system = data.get("build-system") or {}
    module = str(system.get("build-backend") or "setuptools.build_meta:__legacy__")
    requires = tuple(str(r) for r in system.get("requires", LEGACY_REQUIRES))
    # An unknown backend that needs setuptools wraps it, as aio-libs' in-tree ones do,
    # and is cross-built by the host as setuptools is: under the TSAN interpreter,
    # importing setuptools alone took over 30 s, twice a commit.
    other = (module, "host" if "setuptools" in names(requires) else "target")
    name, runner = BACKENDS.get(module) or other
    return Backend(module, name, runner, requires + tools_needed(name, requires))


def backend_name(pyproject: str | None) -> str | None:
    """The backend a pyproject.toml's text names, as BACKENDS names it (None: none we
    know, or not TOML): read before any build, where find_backend needs a worktree."""
    try:
        data = tomllib.loads(pyproject or "")
    except tomllib.TOMLDecodeError:
        return None
    module = str((data.get("build-system") or {}).get("build-backend") or "")
    known = BACKENDS.get(module)
    return known[0] if known else None


def tools_needed(backend: str, requires: Sequence[str]) -> tuple[str, ...]:
    """Build tools a backend asks for only through get_requires_for_build_wheel.

    meson-python and scikit-build-core add ninja (and cmake) when the machine has
    none; repro's frontend installs the static requirements only, so it adds them.
    """
    wanted = {"meson-python": ("ninja",), "scikit-build-core": ("cmake", "ninja")}
    named = " ".join(requires).lower()
    return tuple(t for t in wanted.get(backend, ()) if shutil.which(t) is None and t not in named)


# -Cstrip=none last: RUSTFLAGS follow maturin's own rustc arguments, and a package's
# `[tool.maturin] strip = true` (cramjam's) left no symbol to name a frame.
MATURIN_RUSTFLAGS = TSAN_RUSTFLAGS + " -g -Cstrip=none"


def tsan_settings(
    backend: str,
    *,
    compiler: str | None,
    rust_target: str | None,
    config_settings: Mapping[str, str | tuple[str, ...]],
) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, PEP 517 config settings) that make ``backend`` build with TSAN and -g.

    The one place this is said: repro's builds and the report's plain script (which runs
    ``pip install .`` with the same settings) both ask here. A backend repro does not know
    gets the C flags, which setuptools, meson and CMake all read from the environment.
    """
    env: dict[str, str] = {}
    settings: dict[str, Any] = {}
    theirs = dict(config_settings)
    if compiler:
        env.update(CC=compiler, CXX=cxx_for(compiler))
    if backend == "meson-python":
        # The recipe's setup-args come after repro's (meson-python reads a string as one
        # argument): set alone, they replaced the sanitizer's.
        own = theirs.pop("setup-args", ())
        settings["setup-args"] = [
            "-Db_sanitize=thread",
            "-Db_lundef=false",
            "-Ddebug=true",
            *([own] if isinstance(own, str) else own),
        ]
    elif backend == "maturin":
        env.update(RUSTC_BOOTSTRAP="1", RUSTFLAGS=MATURIN_RUSTFLAGS, **CARGO_DEBUG_ENV)
        if rust_target:
            settings["build-args"] = _maturin_build_args(theirs, rust_target)
    else:
        env.update(CFLAGS=TSAN_CFLAGS, CXXFLAGS=TSAN_CFLAGS, LDFLAGS=TSAN_LDFLAGS)
        if backend == "scikit-build-core":
            settings["cmake.build-type"] = "RelWithDebInfo"
    for k, v in theirs.items():
        settings[k] = list(v) if isinstance(v, tuple) else v
    return env, settings


def _maturin_build_args(theirs: dict[str, str | tuple[str, ...]], rust_target: str) -> str:
    """maturin's build arguments: the recipe's (taken out of ``theirs``), after an
    explicit ``--target`` unless they name one. Given alone they replaced it, and
    RUSTFLAGS' sanitizer then reached the proc-macros (``undefined symbol:
    __tsan_func_entry``). maturin reads ``maturin.build-args`` before ``build-args``, a
    string split as a shell would and a list as its arguments."""
    first = theirs.pop("maturin.build-args", None)
    second = theirs.pop("build-args", None)
    given = first if first is not None else second
    args = shlex.split(given) if isinstance(given, str) else list(given or ())
    if not any(a == "--target" or a.startswith("--target=") for a in args):
        args = ["--target", rust_target, *args]
    return shlex.join(args)


def backend_flags(
    backend: Backend, python: PythonBuild, spec: ExtensionSpec
) -> tuple[dict[str, str], dict[str, Any]]:
    """:func:`tsan_settings` for this machine (maturin needs rustc's host triple)."""
    target = None
    if backend.name == "maturin":
        info = rustc_info()
        if info is None:
            raise BuildError("a maturin package needs rustc and cargo; see `repro doctor`")
        target = info[0]
    return tsan_settings(
        backend.name,
        compiler=python.compiler,
        rust_target=target,
        config_settings=spec.config_settings,
    )


# --- the host's pip, asked for the target's wheels ------------------------------------


def host_pip(
    ctx: BuildContext, target: Path, requirements: Sequence[str], tags: Sequence[str], what: str
) -> None:
    """Install ``requirements`` into the directory ``target`` with this interpreter's pip.

    With ``tags`` (the target's): wheels only, of those tags, for the other interpreter.
    pip keeps its own download cache, so a second environment downloads nothing.
    """
    if not requirements:
        target.mkdir(parents=True, exist_ok=True)
        return
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    cmd += ["--no-compile", "--no-warn-script-location", "--target", str(target), *tags]
    try:
        ctx.run([*cmd, *requirements], cwd=ctx.scratch, step=what, timeout=1800)
    except BuildError as exc:
        if not exc.record:
            # pip was killed (a Ctrl-C that ended its process group, the timeout): that
            # says nothing of the requirements, and recorded it blocked every later run
            # ("pip could not install numpy") until --retry-failed.
            raise
        failed = _pip_failed_on(exc.tail)
        wanted = failed or ", ".join(requirements)
        raise BuildError(
            f"{what}: pip could not install {wanted}"
            + (" as wheels for the Python under test" if tags else "")
            + f"; log: {exc.log}",
            log=exc.log,
            tail=exc.tail,
        ) from None


_PIP_NOT_FOUND = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the "
    r"requirement) (?P<req>\S+)"
)


def _pip_failed_on(tail: Sequence[str]) -> str | None:
    """The requirement pip says it could not find (of several asked), or None."""
    for line in reversed(tail):
        m = _PIP_NOT_FOUND.search(line)
        if m:
            return m.group("req")
    return None


def target_tags(info: Mapping[str, Any]) -> list[str]:
    """pip options that describe the target interpreter (wheels only)."""
    version = str(info["version"])
    abi = "cp" + version.replace(".", "") + str(info["abiflags"])
    arch = str(info["platform"]).split("-", 1)[-1].replace("-", "_")
    plats = [f"linux_{arch}", f"manylinux2014_{arch}", f"manylinux2010_{arch}"]
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    minor = int(glibc.split(".")[1]) if glibc and glibc.startswith("glibc 2.") else 17
    plats += [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
    tags = ["--only-binary=:all:", "--implementation", "cp", "--python-version", version]
    tags += ["--abi", abi, "--abi", "none"]
    for p in plats:
        tags += ["--platform", p]
    return tags


# --- the environment, once per Python build -------------------------------------------

_PROBE = (
    "import json, sys, sysconfig\n" + MARKER_PROBE + "name = sysconfig._get_sysconfigdata_name()\n"
    "mod = __import__(name)\n"
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], 'abiflags': sys.abiflags,\n"
    "  'sysconfigdata': name, 'sysconfigdata_file': mod.__file__, 'markers': markers,\n"
    "  'purelib': sysconfig.get_paths()['purelib'], 'platform': sysconfig.get_platform()}))\n"
)


@dataclass(frozen=True)
class PyEnv:
    """The environment of the Python under test that packages are installed for."""

    python: Path
    site: Path
    host_sysconfig: Path  # holds the target's _sysconfigdata module, for the host
    info: dict[str, Any]
    key: str

    def markers(self) -> dict[str, str]:
        """Its marker environment (asked again of an environment made before the probe
        said it)."""
        known = self.info.get("markers")
        return dict(known) if known else dict(_probe(self.python)["markers"])


def runner_markers(backend: Backend, env: PyEnv) -> dict[str, str]:
    """The marker environment of the interpreter that runs ``backend``, which imports its
    build requirements."""
    return host_environment() if backend.runner == "host" else env.markers()


def ensure_env(
    python: PythonBuild,
    requirements: Sequence[str],
    cache: BuildCache,
    progress: BuildProgress,
) -> PyEnv:
    key = cache_key(
        {
            "kind": "pyenv",
            "python": python.key,
            "requirements": sorted(requirements),
            "bytecode": 1,
        }
    )
    dest = cache.path(key)
    what = f"environment of {python.python.name} {python.version} (+ {len(requirements)} reqs)"

    def build(ctx: BuildContext) -> dict[str, Any]:
        progress.begin(what, key)
        progress.phase("install", "venv --without-pip")
        ctx.run(
            [*setarch_prefix(), str(python.python), "-m", "venv", "--without-pip", "venv"],
            cwd=dest,
            env=_clean_env(),
            step="python -m venv",
            timeout=900,
        )
        info = _probe(dest / "venv" / "bin" / "python")
        (dest / "sysconfig").mkdir()
        shutil.copy2(info["sysconfigdata_file"], dest / "sysconfig")
        progress.phase("install", ", ".join(requirements)[:60])
        wanted = applicable(requirements, info["markers"])
        host_pip(ctx, Path(info["purelib"]), wanted, target_tags(info), "requirements")
        progress.phase("compile", "bytecode, once")
        ctx.run(
            [
                *setarch_prefix(),
                str(dest / "venv" / "bin" / "python"),
                "-c",
                _WARM,
                info["purelib"],
                *_warm_imports(requirements),
            ],
            cwd=dest,
            env=_clean_env(),
            step="byte-compiling the environment",
            timeout=1800,
        )
        return {"pyenv": info}

    meta = {"kind": "pyenv", "what": what, "python": python.key, "requirements": list(requirements)}
    _ensure(cache, key, meta, build, progress, what)
    record = json.loads((dest / "repro-build.json").read_text())
    info = record["pyenv"]
    venv_python = dest / "venv" / "bin" / "python"
    return PyEnv(venv_python, Path(info["purelib"]), dest / "sysconfig", info, key)


# Bytecode written once, with the interpreter under test: a TSAN interpreter compiles
# slowly (importing pytest took 11-15 s a run here without .pyc files, 3.2 s with them),
# and with PYTHONDONTWRITEBYTECODE set, as on many CI machines, no run would ever write
# them. The site-packages are compiled whole; importing the test tools compiles the parts
# of the standard library they use.
_WARM = (
    "import compileall, importlib, sys\n"
    "compileall.compile_dir(sys.argv[1], quiet=1, workers=0)\n"
    "for name in sys.argv[2:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except Exception:\n"
    "        pass\n"
)


def _warm_imports(requirements: Sequence[str]) -> list[str]:
    names = []
    for req in requirements:
        m = re.match(r"[A-Za-z0-9_.\-]+", req.strip())
        if m:
            names.append(m.group(0).replace("-", "_").lower())
    return names


# The TSAN options of installing into the TSAN interpreter's environment: pip, its
# build-isolation children and the build backends run on that interpreter, and a race
# TSAN reports inside CPython at their exit makes them exit 66, which pip takes for a
# failed step.
INSTALL_TSAN_OPTIONS = "report_bugs=0"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in child_environ().items() if not k.startswith(("PYTHON", "_PYTHON"))}
    env["TSAN_OPTIONS"] = INSTALL_TSAN_OPTIONS
    return env


def _probe(python: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [*setarch_prefix(), str(python), "-c", _PROBE],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BuildError(f"{python} does not run (exit {proc.returncode}): {proc.stderr[-800:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def _ensure(
    cache: BuildCache,
    key: str,
    meta: Mapping[str, Any],
    build: Any,
    progress: BuildProgress,
    what: str,
) -> None:
    if cache.lookup(key) is not None and cache.lost_file(key) is None:
        return
    ensure_reported(cache, key, meta, build, progress, what)


def host_scripts(bindir: Path, out: Path) -> str:
    """``bindir``'s Python console scripts, copied into ``out`` to run under this interpreter.

    pip --target writes the interpreter that ran it into each script's first line,
    and the cached directory outlives it: after a new clone or a new venv, the
    scripts say "not found" (meson-python: `meson executable "meson" not found`).
    The host runs them, as before, rather than the target: under TSAN the target
    interpreter made meson's configure step about 7 times slower (7 s against 50 s
    for a one-file module).
    """
    out.mkdir(parents=True, exist_ok=True)
    if bindir.is_dir():
        for script in bindir.iterdir():
            if not script.is_file():
                continue
            with script.open("rb") as fh:
                first = fh.readline()
            if not first.startswith(b"#!") or b"python" not in first:
                continue
            copy = out / script.name
            copy.write_bytes(
                b"#!" + sys.executable.encode() + b"\n" + script.read_bytes()[len(first) :]
            )
            copy.chmod(0o755)
    return str(out)


def ensure_build_deps(
    env: PyEnv, backend: Backend, cache: BuildCache, progress: BuildProgress
) -> Path:
    """The backend's requirements in a directory of their own, for whoever runs the backend.

    Keyed by the requirement list, so every commit of a bisect that asks for the same
    (the usual case) shares one directory and nothing is downloaded again.
    """
    host = backend.runner == "host"
    key = cache_key(
        {
            "kind": "build-deps",
            "requires": sorted(backend.requires),
            "for": f"host {sys.version}" if host else env.key,
        }
    )
    what = f"build requirements ({', '.join(backend.requires)[:50]})"

    def build(ctx: BuildContext) -> None:
        progress.begin(what, key)
        progress.phase("install", "pip (host)")
        tags = [] if host else target_tags(env.info)
        wanted = applicable(backend.requires, runner_markers(backend, env))
        host_pip(ctx, ctx.dest / "site", wanted, tags, "build requirements")

    meta = {"kind": "build-deps", "what": what, "requires": list(backend.requires)}
    _ensure(cache, key, meta, build, progress, what)
    return cache.path(key) / "site"


# --- one commit ------------------------------------------------------------------------


# What built_package_env sets: they follow from the build (whose key a resume compares)
# and name repro's own helpers, so a record made before them is the same experiment.
BUILT_PACKAGE_VARIABLES = frozenset({"REPRO_BUILT_SITE", "REPRO_BUILT_PACKAGES", "PYTEST_PLUGINS"})


def built_package_env(site: Path, modules: Sequence[str]) -> dict[str, str]:
    """What the helpers in repro/standalone read to keep a run on the built wheel:
    the sitecustomize that says at exit when a package holding an extension module
    was imported from elsewhere (the checkout's source tree; a namespace package is
    elsewhere only when none of its parts is in the site), and the pytest plugin
    that imports a test path's packages from the site first."""
    # The packages that hold an extension module: where a pure-Python fallback lives.
    parents = sorted({m.rsplit(".", 1)[0] for m in modules if "." in m})
    env = {"REPRO_BUILT_SITE": str(site), "PYTEST_PLUGINS": "repro_site_first"}
    if parents:
        env["REPRO_BUILT_PACKAGES"] = ",".join(parents)
    return env


def unpack_wheel(wheel: Path, site: Path) -> None:
    """Install a wheel by unpacking it (no scripts: the reproducer runs `{python} -m`)."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    for data in site.glob("*.data"):
        for sub in ("purelib", "platlib"):
            part = data / sub
            if part.is_dir():
                for item in part.iterdir():
                    shutil.move(str(item), str(site / item.name))
        shutil.rmtree(data)


def extension_modules(site: Path) -> list[tuple[str, Path]]:
    """(dotted module name, file) of every compiled module the wheel installed."""
    out = []
    for so in sorted(site.rglob("*.so")):
        rel = so.relative_to(site)
        if any(part.endswith((".libs", ".dist-info")) for part in rel.parts[:-1]):
            continue  # vendored shared libraries (auditwheel), not modules
        name = rel.name.split(".", 1)[0]
        out.append((".".join([*rel.parts[:-1], name]), so))
    return out


def check_instrumented(modules: Sequence[tuple[str, Path]], site: Path, backend: Backend) -> None:
    for name, so in modules:
        if not module_instrumented(so):
            how = {
                "setuptools": "CFLAGS/LDFLAGS (does setup.py overwrite them?)",
                "meson-python": "-Db_sanitize=thread",
                "maturin": "RUSTFLAGS",
            }.get(backend.name, "CFLAGS/LDFLAGS")
            raise BuildError(
                f"extension module {name} ({so.relative_to(site)}) was built without TSAN: "
                f"no __tsan_ symbols (nm -D); the {backend.name} build did not take {how}"
            )


def runtime_hint(error: str) -> str:
    """Why a module built with TSAN can fail to load: two TSAN runtimes, one process."""
    if "undefined symbol: __tsan_" in error:
        return (
            " (the module was built for LLVM's TSAN runtime and this Python has gcc's: with "
            "Rust/maturin or clang, build the Python with `compiler: clang`)"
        )
    if "static TLS block" in error and "tsan" in error:
        # g++ (a CXX=g++ in extension.env) beside a clang TSAN Python: the module
        # pulls in gcc's libtsan, which cannot load into a process running LLVM's.
        return (
            " (the module links a second TSAN runtime: its C or C++ was compiled by another "
            "compiler than the Python's; drop CC/CXX from extension.env, or build the "
            "Python with that compiler's family (`compiler:`))"
        )
    return ""


_GIL_CHECK = (
    "import importlib, json, sys\n"
    "names = json.loads(sys.argv[1]); culprit = None\n"
    "for n in names:\n"
    "    importlib.import_module(n)\n"
    "    if culprit is None and sys._is_gil_enabled(): culprit = n\n"
    "print('REPRO-GIL:' + json.dumps(culprit))\n"
)


def gil_check(
    env: PyEnv, site: Path, names: Sequence[str], extra_env: Mapping[str, str]
) -> str | None:
    """The first module whose import turns the GIL back on, or None.

    A BuildError if the package does not import: its tests could not run either.
    """
    run_env = _clean_env()
    run_env.update(extra_env)
    run_env["PYTHONPATH"] = str(site)
    proc = subprocess.run(
        [*setarch_prefix(), str(env.python), "-P", "-c", _GIL_CHECK, json.dumps(list(names))],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=site,
        timeout=600,
        check=False,
    )
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPRO-GIL:")]
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BuildError(f"the built package does not import: {last}{runtime_hint(last)}")
    culprit: str | None = json.loads(found[-1].split(":", 1)[1])
    return culprit


@dataclass(frozen=True)
class PackageBuild(ExtensionBuild):
    """An ExtensionBuild whose `env` runs the environment's interpreter with the package."""

    python: Path = Path()
    backend: str = ""
    gil_module: str | None = None
    # The wheel's extension modules: none where an optional C extension failed to
    # build and the package fell back to pure Python, which shows no native race.
    modules: tuple[str, ...] = ()


_MISSING_SOURCE = re.compile(r"([\w./+-]+\.(?:c|cc|cpp|cxx|h|hpp|pyx)): No such file or directory")


def missing_source_hint(tail: Sequence[str], worktree: Path) -> str | None:
    """What to do when the backend wants a source file the checkout does not hold: one
    that a package's own Makefile generates and keeps out of git (msgpack's C file, made
    by Cython), which the recipe's `build` commands can make first."""
    for line in tail:
        m = _MISSING_SOURCE.search(line)
        if m is None or (worktree / m.group(1)).exists():
            continue
        missing = Path(m.group(1))
        made_from = [
            p.name
            for p in sorted(worktree.joinpath(missing.parent).glob(f"{missing.stem}.*"))
            if p.name != missing.name
        ]
        source = f"; {', '.join(made_from)} is there" if made_from else ""
        return (
            f"{missing} is not in the checkout: a generated file{source}? Make it with "
            "extension.build, whose commands run in the checkout before the backend "
            "(e.g. cython, or the package's own make target)"
        )
    return None


def _runner(
    backend: Backend, env: PyEnv, deps: Path, run_env: Mapping[str, str], scratch: Path
) -> tuple[list[str], dict[str, str]]:
    """(the frontend's command, its environment) for whoever runs ``backend``, with the
    build requirements in ``deps``."""
    out = dict(run_env)
    if backend.runner == "host":
        out["_PYTHON_SYSCONFIGDATA_NAME"] = str(env.info["sysconfigdata"])
        out["PYTHONPATH"] = os.pathsep.join([str(env.host_sysconfig), str(deps)])
        return [sys.executable, "-S", str(FRONTEND)], out
    out["PYTHONPATH"] = str(deps)
    scripts = host_scripts(deps / "bin", scratch / "bin")
    out["PATH"] = os.pathsep.join([scripts, str(deps / "bin"), out.get("PATH", "")])
    return [*setarch_prefix(), str(env.python), str(FRONTEND)], out


def dynamic_requires(
    ctx: BuildContext,
    argv: Sequence[str],
    run_env: Mapping[str, str],
    worktree: Path,
    settings: Mapping[str, Any],
    backend: Backend,
    env: PyEnv,
) -> list[str]:
    """What the backend asks for beyond pyproject.toml's ``requires`` and does not have.

    PEP 517's ``get_requires_for_build_wheel``: aio-libs' in-tree backends (frozenlist,
    yarl) add Cython there, and without it their build fell back to pure Python.
    """
    said: list[str] = []
    ctx.run(
        [*argv, "--requires", json.dumps(dict(settings))],
        cwd=worktree,
        env=run_env,
        step=f"{backend.name} get_requires_for_build_wheel",
        on_line=said.append,
        timeout=600,
    )
    found = [ln for ln in said if ln.startswith("REPRO-REQUIRES:")]
    wanted = json.loads(found[-1].split(":", 1)[1]) if found else []
    have = names(backend.requires)
    return [r for r in applicable(wanted, runner_markers(backend, env)) if not names([r]) & have]


def ensure_python_package(
    spec: ExtensionSpec,
    repo: GitRepo,
    sha: str,
    *,
    python: PythonBuild,
    cache: BuildCache,
    requirements: Sequence[str] = (),
    progress: BuildProgress | None = None,
) -> PackageBuild:
    """The package at ``sha`` built with TSAN and unpacked beside the environment."""
    prog: BuildProgress = progress or NullProgress()
    env = ensure_env(python, list(requirements), cache, prog)
    full = repo.resolve(sha)
    recipe_env = {**spec.env, **range_env(spec, repo, full)}
    key = cache_key(
        {
            "kind": "python-package",
            "repo": repo.source,
            "sha": full,
            "env": recipe_env,
            "pyenv": env.key,
            "config_settings": spec.config_settings,
            "toolchain": f"{python.compiler} {python.compiler_version}",
            # what repro asks of cargo (the backend is known only inside the worktree): a
            # maturin wheel cached before it kept debug info must not be reused
            "cargo": CARGO_DEBUG_ENV,
            # nor one stripped by `[tool.maturin] strip`, or built (or failed) with the
            # recipe's build-args in place of the --target
            "maturin": [MATURIN_RUSTFLAGS, "--target before the recipe's build-args"],
            # the commands that make what the checkout lacks (only when there are some,
            # so that the builds cached before them keep their keys)
            **({"prebuild": list(spec.build)} if spec.build else {}),
        }
    )
    dest = cache.path(key)
    worktree, site = dest / "src", dest / "site"
    info = repo.info(full)
    what = f"{repo.name} {info.short} ({truncate(info.subject, 60)})"

    def build(ctx: BuildContext) -> dict[str, Any]:
        prog.begin(what, key)
        prog.phase("worktree", info.short)
        try:
            repo.worktree(full, worktree)
            backend = find_backend(worktree, f"{repo.name} {info.short}")
            deps = ensure_build_deps(env, backend, cache, NullProgress())
            flags, settings = backend_flags(backend, python, spec)
            run_env = _clean_env()
            run_env.pop("TSAN_OPTIONS")
            run_env.update(with_recipe_env(flags, recipe_env))
            # What the checkout lacks and the package's own Makefile makes first
            # (msgpack's `_cmsgpack.c`, from Cython), which its setup.py only compiles.
            run_build_commands(
                spec, ctx, worktree, {**run_env, "PYTHON": str(env.python)}, prog, "prebuild"
            )
            out = ctx.scratch / "wheel"
            argv, runner_env = _runner(backend, env, deps, run_env, ctx.scratch)
            prog.phase("configure", f"{backend.name}: its build requirements")
            extra = dynamic_requires(ctx, argv, runner_env, worktree, settings, backend, env)
            if extra:
                backend = replace(backend, requires=(*backend.requires, *extra))
                deps = ensure_build_deps(env, backend, cache, NullProgress())
                argv, runner_env = _runner(backend, env, deps, run_env, ctx.scratch)
            run_env = runner_env
            prog.phase("compile", f"{backend.name} wheel ({backend.runner} python)")
            try:
                ctx.run(
                    [*argv, str(out), json.dumps(settings)],
                    cwd=worktree,
                    env=run_env,
                    step=f"{backend.name} build_wheel",
                    timeout=spec.build_timeout,
                )
            except BuildError as exc:
                hint = missing_source_hint(exc.tail, worktree)
                if hint is None:
                    raise
                raise BuildError(
                    f"{exc} ({hint})", key=exc.key, log=exc.log, tail=exc.tail, record=exc.record
                ) from None
            wheels = sorted(out.glob("*.whl"))
            if not wheels:
                raise BuildError(f"{backend.name} build_wheel made no wheel")
            prog.phase("install", wheels[0].name)
            (dest / "wheel").mkdir(exist_ok=True)
            wheel = Path(shutil.copy2(wheels[0], dest / "wheel"))
            unpack_wheel(wheel, site)
            modules = extension_modules(site)
            prog.phase("verify", f"{len(modules)} extension module(s)")
            check_instrumented(modules, site, backend)
            # Said where the reproducer's environment is known (context.gil_warning):
            # PYTHON_GIL=0 there keeps the GIL off.
            gil = gil_check(env, site, [n for n, _ in modules], recipe_env) if modules else None
        except BaseException:
            repo.remove_worktree(worktree)
            raise
        return {
            "backend": backend.name,
            "wheel": str(wheel),
            "modules": [n for n, _ in modules],
            "gil_module": gil,
        }

    meta = {
        "kind": "python-package",
        "what": what,
        "repo": repo.source,
        "mirror": str(repo.mirror),
        "sha": full,
        "python": python.key,
        "pyenv": env.key,
        "env": recipe_env,
    }
    hit = cache.lookup(key)
    if hit is not None and (not site.is_dir() or cache.lost_file(key) is not None):
        would_build(key)
        shutil.rmtree(dest, ignore_errors=True)
        hit = None
    if hit is None:
        _ensure(cache, key, meta, build, prog, what)
    record = json.loads((dest / "repro-build.json").read_text())
    modules = tuple(str(m) for m in record.get("modules") or ())
    run_env = {
        "PATH": os.pathsep.join([str(env.python.parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(site), str(STANDALONE)]),
        "PYTHON": str(env.python),
        **built_package_env(site, modules),
        **recipe_env,
    }
    return PackageBuild(
        worktree=worktree,
        env=run_env,
        key=key,
        log=dest / "build.log",
        sha=full,
        python=env.python,
        backend=str(record.get("backend", "")),
        gil_module=record.get("gil_module"),
        modules=modules,
    )
