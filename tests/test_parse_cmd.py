"""`repro parse`: a pasted CI log -> distinct races, and a recipe skeleton that validates."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import repro

DATA = Path(__file__).resolve().parent / "data" / "tsan"


def ci_log(tmp_path: Path) -> Path:
    """Two real logs pasted as a CI service shows them: timestamps, noise in between."""
    lines = ["2024-12-20T10:11:12.0000000Z ##[group]Run make test"]
    for name in ("gcc-racy_counter.log", "pyo3-borrowflag-racy.log", "gcc-racy_counter.log"):
        for line in (DATA / name).read_text().splitlines():
            lines.append(f"2024-12-20T10:11:13.1234567Z {line}")
        lines.append("2024-12-20T10:11:14.0000000Z test result: FAILED. 1 passed; 1 failed")
    p = tmp_path / "ci.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_parse_groups_races_with_counts(tmp_path: Path) -> None:
    res = repro("parse", str(ci_log(tmp_path)), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    races = data["races"]
    by_fn = {r["accesses"][0][0]: r for r in races}
    assert by_fn["increment_counter"]["count"] == 2
    assert any("test_thread_safety_2" in r["accesses"][0][0] for r in races)
    assert data["reports"] == sum(r["count"] for r in races)
    # The table view names the same races.
    table = repro("parse", str(ci_log(tmp_path)))
    assert table.returncode == 0
    assert "increment_counter" in table.stdout


def test_recipe_skeleton_validates_and_targets_the_race(tmp_path: Path) -> None:
    log = ci_log(tmp_path)
    listing = json.loads(repro("parse", str(log), "--json").stdout)["races"]
    n = next(i for i, r in enumerate(listing, 1) if r["accesses"][0][0] == "increment_counter")
    res = repro("parse", str(log), "--recipe-skeleton", str(n))
    assert res.returncode == 0, res.stderr
    recipe = tmp_path / "skeleton.yaml"
    recipe.write_text(res.stdout)
    assert "increment_counter" in res.stdout
    check = repro("recipe", "validate", str(recipe))
    assert check.returncode == 0, check.stderr


def test_parse_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    res = repro("parse", str(empty))
    assert res.returncode == 1
    assert "no TSAN reports" in res.stdout
    res = repro("parse", str(empty), "--recipe-skeleton", "1")
    assert res.returncode == 2
    assert "no TSAN reports" in res.stderr
    res = repro("parse", str(tmp_path / "missing.txt"))
    assert res.returncode == 2
    assert "no such file" in res.stderr
