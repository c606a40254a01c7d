"""Shared fixtures: compiled TSAN programs and an isolated repro cache per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The confidence of the tests' bisects of the demo race whose answers they check: at the
# recipe's 0.99, each is wrong in up to 1% of its runs by design (seen in a test run: a
# calibration of 5 hits in 5 runs, then 0 in 10 at a racy commit after the machine's load
# moved the rate), and a suite of a dozen such bisects would fail now and then.
TEST_CONFIDENCE = 0.999
PROGRAMS = Path(__file__).resolve().parent / "programs"


@pytest.fixture(scope="session")
def tsan_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The programs of tests/programs compiled with gcc -fsanitize=thread."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is required (make test installs it)")
    out = tmp_path_factory.mktemp("tsan-bin")
    for src in sorted(PROGRAMS.glob("*.c")):
        subprocess.run(
            ["gcc", "-fsanitize=thread", "-g", "-O1", "-o", str(out / src.stem), str(src)],
            check=True,
        )
    return out


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fast tests never touch the user's cache; slow tests opt into a persistent one."""
    old = os.environ.get("REPRO_CACHE_DIR")
    path = tmp_path_factory.mktemp("repro-cache")
    os.environ["REPRO_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("REPRO_CACHE_DIR", None)
    else:
        os.environ["REPRO_CACHE_DIR"] = old


def repro(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "repro", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
