"""An `executable:` interpreter is checked against what the recipe says it is.

The interpreter here is the one running the tests: a build with the GIL and without
TSAN, as most machines' python3 is.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import repro


def _recipe(tmp_path: Path, declared: str = "") -> Path:
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: exe\n"
        f"python:\n  executable: {json.dumps(sys.executable)}\n{declared}"
        "reproducer:\n  command: \"{python} -c 'print(1)'\"\n  timeout: 30\n"
        "target:\n  functions: [foo]\n"
    )
    return r


@pytest.fixture(autouse=True)
def _a_gil_build() -> None:
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        pytest.skip("the test interpreter is free-threaded")


def test_a_gil_interpreter_without_tsan_is_refused_naming_the_field(tmp_path: Path) -> None:
    r = _recipe(tmp_path)
    runs = tmp_path / "runs"
    res = repro("stress", str(r), "--runs", "2", "--runs-dir", str(runs))
    assert res.returncode == 2, res.stdout + res.stderr
    out = " ".join(res.stderr.split())
    assert f"{r}:3: python.executable:" in out
    assert "free_threading: true (the default), but it is a build with the GIL" in out
    assert "tsan: true (the default), but it has no TSAN runtime" in out
    assert not runs.exists() or not any(runs.iterdir())


def test_declared_as_it_is_it_runs(tmp_path: Path) -> None:
    r = _recipe(tmp_path, "  free_threading: false\n  tsan: false\n")
    out = tmp_path / "s.json"
    res = repro(
        "stress", str(r), "--runs", "2", "--runs-dir", str(tmp_path / "runs"),
        "--json-out", str(out),
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr  # ran, and no hit
    outcomes = json.loads(out.read_text())["outcomes"]
    assert outcomes["clean"] == 2 and sum(outcomes.values()) == 2


def test_declared_free_threaded_only_is_still_refused_for_the_gil(tmp_path: Path) -> None:
    r = _recipe(tmp_path, "  tsan: false\n  free_threading: true\n")
    res = repro("stress", str(r), "--runs", "2")
    assert res.returncode == 2
    out = " ".join(res.stderr.split())
    assert "free_threading: true, but it is a build with the GIL" in out
    assert "TSAN runtime" not in out
