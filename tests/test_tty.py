"""`reproducer.tty: true`: reproducers that only misbehave on a terminal run under a pty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import repro
from tsan_helpers import PROGRAMS, compile_c


@pytest.fixture(scope="module")
def tty_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(PROGRAMS / "tty_only_race.c", tmp_path_factory.mktemp("tty") / "tty_race")


def _stress(tmp_path: Path, binary: Path, tty: bool) -> tuple[int, dict, Path]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: tty\nreproducer:\n"
        f"  command: {json.dumps(str(binary))}\n  timeout: 30\n"
        + ("  tty: true\n" if tty else "")
        + "target:\n  functions: [writer, main]\n"
    )
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(recipe),
        "--runs",
        "3",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(out.read_text()), next((tmp_path / "runs").iterdir())


def test_tty_reproducer_races_on_a_pty_and_its_output_is_kept(
    tmp_path: Path, tty_bin: Path
) -> None:
    code, summary, run_dir = _stress(tmp_path, tty_bin, tty=True)
    assert code == 0 and summary["hits"] == 3, summary
    outputs = [p.read_text() for p in (run_dir / "logs").glob("*/output.txt")]
    assert outputs and all("isatty(1)=1" in o for o in outputs), outputs


def test_without_tty_the_same_reproducer_never_races(tmp_path: Path, tty_bin: Path) -> None:
    code, summary, _ = _stress(tmp_path, tty_bin, tty=False)
    assert code == 1 and summary["hits"] == 0 and summary["outcomes"]["clean"] == 3, summary


def test_readme_recipe_documents_every_reproducer_and_target_field() -> None:
    """The recipe section of the README names every field a user may need, and parses."""
    import re

    from conftest import ROOT

    from repro.recipe import ReproducerSpec, TargetSpec, parse_recipe

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Recipes") : readme.index("## How the bisect decides")]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    text = block.group(1)
    # Every field appears under its section in one of the README's recipe examples (the
    # recipe format, or the Python packages section for `reproducer.pytest`).
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    for spec, name in ((ReproducerSpec, "reproducer"), (TargetSpec, "target")):
        parts = [
            b[b.index(f"\n{name}:") :].split("\n\n", 1)[0] for b in blocks if f"\n{name}:" in b
        ]
        for field in spec.model_fields:
            if field == "cwd":
                continue  # documented in the schema (repro recipe schema)
            assert any(re.search(rf"^  {field}:", part, re.M) for part in parts), (
                f"{name}.{field} not in README"
            )
    assert "`target.accesses`" in section
    recipe = parse_recipe(
        text.replace("patches: [patches/revert-fix.patch]", "patches: []"), ROOT / "README.md"
    )
    assert recipe.target.accesses == "each" and recipe.reproducer.tty is False


def test_a_process_that_left_the_group_does_not_hold_each_run(tmp_path: Path) -> None:
    """A daemon the reproducer started in a session of its own keeps the pty open after
    the run's group is gone; every run waited 10 s for its end of the terminal."""
    import time

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: tty\nreproducer:\n"
        "  command: 'setsid sleep 14 & echo started'\n  timeout: 30\n  tty: true\n"
        "target:\n  functions: [x]\n"
    )
    t0 = time.monotonic()
    res = repro("stress", str(recipe), "--runs", "2", "-j", "1",
                "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert time.monotonic() - t0 < 15, "each run waited for the daemon's pty"
