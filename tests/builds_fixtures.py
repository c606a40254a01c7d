"""Session-wide CPython builds for tests, cached across runs on the same machine.

A TSAN CPython takes minutes to build, so tests share one persistent cache
(REPRO_TEST_CACHE, default ~/.cache/repro-tests) instead of a temporary one: the
first run on a machine pays, later runs hit. Import the fixtures by name:

    from builds_fixtures import cpython_tsan_build  # noqa: F401  (tests/ is on sys.path)

Sources come from the shared directory beside the repository (REPRO_SHARED
overrides it); tests that need a build are skipped when the tarball is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from repro.builds.cache import BuildCache
from repro.builds.cpython import PythonBuild, ensure_cpython, setarch_prefix
from repro.recipe import PythonSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
PATCHES = REPO_ROOT / "recipes" / "patches"  # the recipes' own: builds are shared
CPYTHON_VERSION = "3.13.5"


def test_cache_base() -> Path:
    env = os.environ.get("REPRO_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "repro-tests"


def shared_dir() -> Path:
    env = os.environ.get("REPRO_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


test_cache_base.__test__ = False  # type: ignore[attr-defined]  # not a test, despite the name


def _cache() -> BuildCache:
    return BuildCache(test_cache_base())


def _tarballs() -> Path:
    d = shared_dir() / "cpython"
    if not (d / f"Python-{CPYTHON_VERSION}.tar.xz").is_file():
        pytest.skip(f"no Python-{CPYTHON_VERSION}.tar.xz in {d} (set REPRO_SHARED)")
    return d


# Each fixture stands alone (no fixture arguments), so a test module can import just
# the one it uses.


@pytest.fixture(scope="session")
def build_cache() -> BuildCache:
    """The persistent test cache (not cache_dir(): tests must not fill the user's)."""
    return _cache()


@pytest.fixture(scope="session")
def cpython_tarballs() -> Path:
    """The directory holding the CPython tarballs (skips the test without them)."""
    return _tarballs()


def tsan_spec(tarballs: Path, *patches: Path, compiler: str = "gcc") -> PythonSpec:
    return PythonSpec(
        version=CPYTHON_VERSION,
        source=str(tarballs),
        compiler=compiler,
        patches=tuple(str(p) for p in patches),
    )


@pytest.fixture(scope="session")
def cpython_tsan_build() -> PythonBuild:
    """CPython 3.13.5, free-threaded, TSAN, gcc, pristine (contains the bytes_hash fix)."""
    return ensure_cpython(tsan_spec(_tarballs()), base_dir=REPO_ROOT, cache=_cache())


@pytest.fixture(scope="session")
def cpython_tsan_racy_build() -> PythonBuild:
    """The same with the gh-128133 fix reverted: bytes.__hash__ races in set_ob_shash."""
    spec = tsan_spec(_tarballs(), PATCHES / "revert-gh-128133-fix.patch")
    return ensure_cpython(spec, base_dir=REPO_ROOT, cache=_cache())


def run_tsan(
    build: PythonBuild, code: str, *, timeout: float = 300, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``code`` with the build's python; (exit status, stdout + stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    full_env.pop("TSAN_OPTIONS", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [*setarch_prefix(), str(build.python), "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr
