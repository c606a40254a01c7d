"""Recipe validation: every bad recipe gets a message with file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from repro.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
reproducer:
  command: ./prog {threads}
  timeout: 5
target:
  functions: [racy_fn]
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(tmp_path, text))
    return str(exc.value)


def test_good_recipe_loads(tmp_path: Path) -> None:
    loaded = load_recipe(write(tmp_path, GOOD))
    assert loaded.recipe.name == "t"
    assert loaded.recipe.reproducer.timeout == 5
    assert loaded.recipe.target.rule().functions == ("racy_fn",)
    assert loaded.recipe.bisect is None


def test_bundled_recipes_validate() -> None:
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        text = path.read_text()
        # The demo's repository is created by `make demo`; everything else must load.
        from repro.recipe import parse_recipe

        parse_recipe(text, path)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "name: t\nreproducer:\n  command: [unclosed\ntarget: {}\n")
    assert "r.yaml:" in msg
    assert "invalid YAML" in msg


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD + "bisect:\n  confidense: 0.9\n")
    assert "r.yaml:8" in msg
    assert "bisect.confidense" in msg
    assert "did you mean `confidence`" in msg


def test_wrong_type_names_field_and_line(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("timeout: 5", "timeout: soon"))
    assert "r.yaml:4: reproducer.timeout" in msg
    assert "'soon'" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "name: t\ntarget:\n  functions: [f]\n")
    assert "reproducer: required field is missing" in msg


def test_target_must_not_be_any_race(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD.replace("  functions: [racy_fn]\n", "  kind: data race\n"))
    assert "target" in msg
    assert "never 'any race'" in msg


def test_python_needs_one_source(tmp_path: Path) -> None:
    text = GOOD + "python:\n  version: '3.13.5'\n  git: https://example.org/cpython\n"
    msg = error_of(tmp_path, text)
    assert "r.yaml:7: python" in msg
    assert "exactly one of" in msg


def test_missing_patch_file(tmp_path: Path) -> None:
    text = GOOD + "python:\n  version: '3.13.5'\n  patches: [nope.patch]\n"
    msg = error_of(tmp_path, text)
    assert "r.yaml:9: python.patches.0: patch file not found" in msg


def test_missing_extension_repo(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD + "extension:\n  repo: ../no-such-repo\n")
    assert "extension.repo: repository not found" in msg


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


def test_empty_and_non_mapping(tmp_path: Path) -> None:
    assert "empty" in error_of(tmp_path, "")
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_several_problems_reported_together(tmp_path: Path) -> None:
    text = "name: t\nreproducer:\n  comand: x\n  timeout: -1\ntarget:\n  functions: [f]\n"
    msg = error_of(tmp_path, text)
    assert "did you mean `command`" in msg
    assert "reproducer.timeout" in msg
    assert "reproducer.command: required field is missing" in msg


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, GOOD + "bogus: 1\n", "bad.yaml")
    ok = subprocess.run(
        [sys.executable, "-m", "repro", "recipe", "validate", str(good)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    res = subprocess.run(
        [sys.executable, "-m", "repro", "recipe", "validate", str(bad)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert "bad.yaml:7: bogus: unknown key" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_set_overrides_fields(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    loaded = load_recipe(p, ["reproducer.timeout=9", "target.functions=[a, b]"])
    assert loaded.recipe.reproducer.timeout == 9
    assert loaded.recipe.target.functions == ("a", "b")
    assert loaded.sets == ("reproducer.timeout=9", "target.functions=[a, b]")
    cmd = load_recipe(p, ["reproducer.command={work}/prog --flag"]).recipe.reproducer.command
    assert cmd == "{work}/prog --flag"
    with pytest.raises(RecipeError, match=r"\(--set\): reproducer.timeout"):
        load_recipe(p, ["reproducer.timeout=soon"])
    with pytest.raises(RecipeError, match="did you mean `confidence`"):
        load_recipe(p, ["bisect.confidense=0.9"])
    with pytest.raises(RecipeError, match=r"expected KEY\.PATH=VALUE"):
        load_recipe(p, ["reproducer.timeout"])


def test_relative_paths_resolve_beside_the_original(tmp_path: Path) -> None:
    """A run directory's copy of a recipe keeps meaning what the original meant."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "work").mkdir()
    original = write(tmp_path / "recipes", GOOD + "tsan:\n  suppressions: ../work/supp.txt\n")
    (tmp_path / "work" / "supp.txt").write_text("race:foo\n")
    copy = tmp_path / "runs" / "run-1" / "recipe.yaml"
    copy.parent.mkdir(parents=True)
    copy.write_text(original.read_text())
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(copy)
    loaded = load_recipe(copy, located_at=original)
    assert loaded.resolve("../work/supp.txt") == (tmp_path / "work" / "supp.txt").resolve()
