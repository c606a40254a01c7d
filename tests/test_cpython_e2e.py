"""gh-128133 end to end on real free-threaded TSAN builds of CPython 3.13.5 (slow).

The builds come from the shared tarball and are cached across test runs (the first
run on a machine builds them, about 5 minutes each on 2 cores; see builds_fixtures).
The recipe is the shipped one, run through the real command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builds_fixtures import (  # noqa: F401  (fixtures)
    build_cache,
    cpython_tarballs,
    cpython_tsan_build,
    cpython_tsan_racy_build,
    test_cache_base,
)
from conftest import ROOT, repro

from repro.strategy.rate import RateBelief

pytestmark = pytest.mark.slow

RECIPE = ROOT / "recipes" / "cpython-bytes-hash-local.yaml"
COMPILE = "reproducer.command={work}/compile_string"


def stress(tmp_path: Path, name: str, tarballs: Path, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    res = repro(
        "stress",
        str(RECIPE),
        "--jobs",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        "--set",
        f"python.source={tarballs / 'Python-3.13.5.tar.xz'}",
        *args,
        env={"REPRO_CACHE_DIR": str(test_cache_base())},
        timeout=3600,
    )
    assert "Traceback" not in res.stderr, res.stderr
    assert out.exists(), res.stdout + res.stderr
    data: dict = json.loads(out.read_text())
    data["_exit"] = res.returncode
    return data


def target_frames(data: dict) -> set[str]:
    return {f for s in data["signatures"] if s["target"] for side in s["top_frames"] for f in side}


def test_racy_then_fixed_through_both_reproducers(
    tmp_path: Path,
    cpython_tarballs: Path,  # noqa: F811
    cpython_tsan_racy_build: object,  # noqa: F811
    cpython_tsan_build: object,  # noqa: F811
) -> None:
    measured = {}
    for label, extra in (("hash", ()), ("compile", ("--set", COMPILE))):
        data = stress(tmp_path, f"racy-{label}", cpython_tarballs, "--runs", "6", *extra)
        assert data["_exit"] == 0, data
        assert data["hits"] >= 1
        frames = target_frames(data)
        assert "set_ob_shash" in frames and "bytes_hash" in frames, frames
        measured[label] = (data["hits"], data["runs"])
    # The Py_CompileString route really goes through PyObject_Hash (the compiler's
    # constant cache), not through a Python-level hash() call.
    compile_data = json.loads((tmp_path / "racy-compile.json").read_text())
    assert "PyObject_Hash" in target_frames(compile_data)

    # The fixed side: as many clean runs as it takes to rule the race out at 0.99,
    # given the rate measured on the racy side.
    for label, extra in (("hash", ()), ("compile", ("--set", COMPILE))):
        hits, runs = measured[label]
        need = RateBelief.from_calibration(hits, runs).runs_to_rule_out(0.99)
        data = stress(
            tmp_path,
            f"fixed-{label}",
            cpython_tarballs,
            "--runs",
            str(need),
            "--set",
            "python.patches=[]",
            *extra,
        )
        assert data["_exit"] == 1, data
        assert data["runs"] == need
        assert data["hits"] == 0
        assert data["outcomes"]["clean"] + data["outcomes"]["other"] == need
