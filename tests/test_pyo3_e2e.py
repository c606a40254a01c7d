"""PyO3's BorrowFlag race end to end: stress the racy commit, bisect to the fix (slow).

Needs a clone (or bare mirror) of PyO3 in REPRO_PYO3_REPO and crates.io for the
dependencies; each commit's TSAN build of the lib tests takes one to two minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT, repro

FIX = "1e2aae30811a585bc5edb8e80f22d2b2ef59e51f"
RACY = "8288fb922fdd487862a4b7e288fa6a62b6e80185"
PYO3 = os.environ.get("REPRO_PYO3_REPO")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.pyo3,
    pytest.mark.skipif(
        not PYO3, reason="set REPRO_PYO3_REPO to a PyO3 clone or bare mirror to run this"
    ),
]

RECIPE = ROOT / "recipes" / "pyo3-borrowflag.yaml"


def test_stress_racy_commit_and_fix_commit(tmp_path: Path) -> None:
    assert PYO3
    out = tmp_path / "racy.json"
    res = repro(
        "stress",
        str(RECIPE),
        "--repo",
        PYO3,
        "--runs",
        "4",
        "--jobs",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        timeout=3600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["hits"] >= 1
    target = next(s for s in data["signatures"] if s["target"])
    assert all("test_thread_safety_2" in side[0] for side in target["top_frames"])
    # std is uninstrumented: there are other races, and they are not the target
    assert any(not s["target"] for s in data["signatures"])

    out = tmp_path / "fixed.json"
    res = repro(
        "stress",
        str(RECIPE),
        "--repo",
        PYO3,
        "--ref",
        FIX,
        "--runs",
        "6",
        "--jobs",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        timeout=3600,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["hits"] == 0
    assert data["outcomes"]["other"] >= 1  # std's races are still there, and told apart


def test_bisect_names_the_fix(tmp_path: Path) -> None:
    assert PYO3
    out = tmp_path / "bisect.json"
    res = repro(
        "bisect",
        str(RECIPE),
        "--repo",
        PYO3,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        timeout=3 * 3600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["culprit"]["sha"] == FIX
    assert data["confidence"] >= 0.99
    assert data["racy"] == RACY
