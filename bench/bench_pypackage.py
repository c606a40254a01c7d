"""Benchmark: installing a Python package at a new commit into the prepared environment.

The bundled `tally` package (demo/make_pkg_repo.py, setuptools, one C file) against a
free-threaded TSAN CPython. Measured, each in a fresh cache:

- the environment, once per Python build (venv --without-pip, host pip of pytest and
  pytest-run-parallel for the target's tags);
- the package at one commit, then at two more commits (what a bisect step pays):
  worktree, host setuptools build with the target's sysconfig, unpack, nm and GIL checks;
- the compile alone: gcc with the same flags on the same file;
- for comparison, the backend run by the TSAN interpreter itself (what `pip install
  --no-build-isolation .` would pay, less pip): `--slow-path` only, it takes minutes.

    .venv/bin/python bench/bench_pypackage.py --python PATH/TO/TSAN/python3 [--slow-path]

Goal: a new commit in at most 30 s for a small C extension.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from repro.builds.cache import BuildCache
from repro.builds.cpython import PythonBuild, inspect_executable
from repro.builds.extension import TSAN_CFLAGS
from repro.builds.progress import NullProgress
from repro.builds.pypackage import FRONTEND, PYTEST_TOOLS, ensure_env, ensure_python_package
from repro.gitrepo import GitRepo
from repro.host.setarch import setarch_prefix
from repro.recipe import ExtensionSpec, PythonSpec

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: object, *args: object, **kw: object) -> tuple[float, object]:
    t0 = time.monotonic()
    out = fn(*args, **kw)  # type: ignore[operator]
    return time.monotonic() - t0, out


def include_dir(python: PythonBuild) -> str:
    out = subprocess.run(
        [
            *setarch_prefix(),
            str(python.python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--python", required=True, help="a free-threaded TSAN python3")
    ap.add_argument("--slow-path", action="store_true", help="also time the backend under TSAN")
    args = ap.parse_args(argv)
    python = inspect_executable(PythonSpec(executable=args.python), ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-pypackage-") as tmp:
        base = Path(tmp)
        subprocess.run(
            [sys.executable, str(ROOT / "demo" / "make_pkg_repo.py"), str(base / "tally")],
            check=True,
            capture_output=True,
        )
        cache = BuildCache(base / "cache")
        repo = GitRepo.open_cached(str(base / "tally"), cache.base)
        spec = ExtensionSpec(repo=str(base / "tally"), kind="python-package")
        t_env, _ = timed(ensure_env, python, list(PYTEST_TOOLS), cache, NullProgress())
        print(f"environment (once per Python build):      {t_env:6.1f} s")
        for ref in ("v0.2", "v0.3", "v0.1"):
            t, _ = timed(
                ensure_python_package,
                spec,
                repo,
                repo.resolve(ref),
                python=python,
                cache=cache,
                requirements=list(PYTEST_TOOLS),
            )
            print(f"package at a new commit ({ref}):            {t:6.1f} s")
        t_hit, _ = timed(
            ensure_python_package,
            spec,
            repo,
            repo.resolve("v0.2"),
            python=python,
            cache=cache,
            requirements=list(PYTEST_TOOLS),
        )
        print(f"package at a built commit (cache hit):    {t_hit:6.1f} s")
        src = base / "tally" / "src" / "tally" / "_tally.c"
        cmd = [
            "gcc",
            *TSAN_CFLAGS.split(),
            "-fPIC",
            "-shared",
            f"-I{include_dir(python)}",
            str(src),
            "-o",
            str(base / "x.so"),
        ]
        t_cc, _ = timed(subprocess.run, cmd, check=True)
        print(f"compile alone (gcc, same flags):          {t_cc:6.1f} s")
        if args.slow_path:
            env_python = next((cache.base / "builds").glob("*/venv/bin/python"))
            site = next(env_python.parent.parent.glob("lib/python3*/site-packages"))
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--target",
                    str(site),
                    "--only-binary=:all:",
                    "--python-version",
                    python.version.rsplit(".", 1)[0],
                    "--implementation",
                    "cp",
                    "--abi",
                    "cp" + python.version.rsplit(".", 1)[0].replace(".", "") + "t",
                    "--platform",
                    sysconfig.get_platform().replace("-", "_").replace(".", "_"),
                    "setuptools>=61",
                ],
                check=True,
            )
            env = {**os.environ, "CFLAGS": TSAN_CFLAGS, "LDFLAGS": "-fsanitize=thread"}
            t_slow, _ = timed(
                subprocess.run,
                [*setarch_prefix(), str(env_python), str(FRONTEND), str(base / "w"), "{}"],
                cwd=base / "tally",
                env=env,
                check=True,
                capture_output=True,
            )
            print(f"backend under the TSAN python (old way):  {t_slow:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
