"""Reports a maintainer elsewhere can use: commit links and reproduce steps with public URLs.

A bisect of a local clone (or a `fetch`ed mirror) whose recipe names `web_url`, on a
fresh cache: the first bisect already has the links, and nothing in the steps points
at this machine's copy of the repository.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, repro

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe, make_repo

WEB = "https://github.com/example-org/ticketq"


@pytest.fixture(scope="module")
def bisected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("links")
    repo = make_repo(tmp / "ticketq")
    text = (ROOT / "recipes" / "demo.yaml").read_text()
    text = text.replace("../demo-work/ticketq", WEB)
    text = text.replace("  sanitize: c\n", f"  sanitize: c\n  web_url: {WEB}\n", 1)
    recipe = tmp / "demo.yaml"
    recipe.write_text(text)
    out = tmp / "bisect.json"
    res = repro(
        "bisect",
        str(recipe),
        "--repo",
        str(repo),
        "--runs-dir",
        str(tmp / "runs"),
        "--json-out",
        str(out),
        env={"REPRO_CACHE_DIR": str(tmp / "fresh-cache")},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = next((tmp / "runs").iterdir())
    return repo, run_dir, json.loads(out.read_text())


def _report(run_dir: Path, fmt: str) -> str:
    out = run_dir.parent.parent / f"report.{fmt}"
    res = repro("report", str(run_dir), "--format", fmt, "-o", str(out))
    assert res.returncode == 0, res.stderr
    return out.read_text()


def test_first_bisect_on_a_fresh_cache_records_commit_urls(
    bisected: tuple[Path, Path, dict],
) -> None:
    _, run_dir, result = bisected
    meta = json.loads((run_dir / "meta.json").read_text())
    positions = meta["positions"]
    assert positions and all(p["info"]["url"] == f"{WEB}/commit/{p['id']}" for p in positions), (
        positions[:2]
    )
    assert result["culprit"]["url"] == f"{WEB}/commit/{result['culprit']['sha']}"


def test_html_report_links_the_culprit_and_the_steps(bisected: tuple[Path, Path, dict]) -> None:
    _, run_dir, result = bisected
    html = _report(run_dir, "html")
    culprit = result["culprit"]["sha"]
    assert html.count(f'<a href="{WEB}/commit/{culprit}">') >= 2  # summary and step table
    tested = [s for s in result["steps"] if s.get("runs")]
    for step in tested:
        assert f'<a href="{WEB}/commit/{step["sha"] if "sha" in step else step["id"]}">' in html


def test_reproduce_steps_use_the_public_url(bisected: tuple[Path, Path, dict]) -> None:
    repo, run_dir, _ = bisected
    for fmt in ("markdown", "html"):
        text = _report(run_dir, fmt)
        assert str(repo) not in text, fmt
        assert "the reporter's local clone" not in text, fmt
        assert f"git clone -q {WEB} ticketq" in text, fmt
        assert f"--repo {WEB}" in text, fmt
    md = _report(run_dir, "markdown")
    assert f"| Extension | {WEB} (bisected) |" in md


def test_stress_report_clones_from_the_origin_of_a_local_clone(tmp_path: Path) -> None:
    """No web_url in the recipe: the local clone's origin (a GitHub URL) is the public one."""
    import subprocess

    recipe = make_demo_recipe(tmp_path)
    repo = tmp_path / "ticketq"
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin", WEB + ".git"], check=True)
    res = repro("stress", str(recipe), "--runs", "2", "--runs-dir", str(tmp_path / "runs"))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    md = _report(run_dir, "markdown")
    assert f"git clone -q {repo}" not in md  # (the recipe, quoted as is, still names it)
    assert f"git clone -q {WEB} ticketq" in md
    assert f"| Extension | {WEB} at " in md


def _system_python() -> tuple[str, str]:
    import shutil
    import subprocess

    exe = shutil.which("python3")
    assert exe is not None
    version = subprocess.run(
        [exe, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return exe, version


def test_bisect_without_a_python_section_records_the_interpreter(
    bisected: tuple[Path, Path, dict],
) -> None:
    """It said "built per step from the recipe" (or nothing) though nothing was built."""
    _, run_dir, _ = bisected
    _, version = _system_python()
    interp = json.loads((run_dir / "meta.json").read_text())["environment"]["interpreter"]
    assert interp["version"] == version and isinstance(interp["gil_disabled"], bool)
    assert isinstance(interp["tsan"], bool)
    md = _report(run_dir, "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| Python | "))
    assert f"{version} at " in row and "not built by repro: python3 on PATH" in row, row
    assert "built per step" not in md


def test_stress_records_the_interpreter_the_command_names(tmp_path: Path) -> None:
    exe, version = _system_python()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: py\nreproducer:\n"
        f"  command: {exe} -c pass\n  timeout: 30\ntarget:\n  functions: [nothing_here]\n"
    )
    res = repro("stress", str(recipe), "--runs", "2", "--runs-dir", str(tmp_path / "runs"))
    assert res.returncode == 1, res.stdout + res.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    md = _report(run_dir, "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| Python | "))
    assert f"{version} at " in row and "the reproducer's command" in row, row
    assert "(with the GIL, no TSAN)" in row or "free-threaded" in row
