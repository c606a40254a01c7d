"""Recipe validation: every bad recipe gets a message with file, line and field."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import repro

from repro.recipe import RecipeError, load_recipe, parse_recipe, repo_location
from repro.tsan.model import Report
from repro.tsan.parse import parse_log
from repro.tsan.signature import TargetRule, matches, signature_of, significant_frames

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "tsan"

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


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("name: t\nreproducer: {command: x}\ntarget:\n  functions: [oops\n  files: [a.c]\n\n",
         4, "[ list"),
        ('name: t\nreproducer:\n  command: "x\ntarget:\n  functions: [a]\n', 3, "quote"),
    ],
)  # fmt: skip
def test_an_unclosed_bracket_or_quote_is_named_where_it_opened(
    tmp_path: Path, text: str, line: int, what: str
) -> None:
    """YAML notices it lines later, at the next key; sweep 15 was sent to line 35 for a
    `[` left open on line 32."""
    msg = error_of(tmp_path, text)
    assert f"r.yaml:{line}: invalid YAML: the {what} opened on this line is not closed" in msg


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
    # A directory that is no repository (a package's subdirectory): named with the field.
    (tmp_path / "plain").mkdir()
    msg = error_of(tmp_path, GOOD + "extension:\n  repo: plain\n")
    assert "r.yaml:8: extension.repo: not a git repository" in msg, msg


def test_placeholders_are_checked_when_the_recipe_is_read(tmp_path: Path) -> None:
    """A misspelt placeholder is a recipe error with its line, not a failure after the
    builds; {worktree} needs an extension; {work} is there with or without setup."""
    bad = GOOD.replace("./prog {threads}", "env {pyhton} prog.py")
    assert "r.yaml:3: reproducer.command: unknown placeholder {pyhton}" in error_of(tmp_path, bad)
    assert "did you mean {python}?" in error_of(tmp_path, bad)
    setup = GOOD + "  setup:\n    - cc -o {work}/prog {recipe_dir}/prog.c\n    - cp {wrk}/x .\n"
    setup = setup.replace("  timeout: 5\n", "  timeout: 5\n  cwd: '{work}'\n")
    text = setup.replace("target:\n  functions: [racy_fn]\n", "") + "target:\n  functions: [f]\n"
    msg = error_of(tmp_path, text)
    assert "reproducer.setup.1: unknown placeholder {wrk}" in msg and "r.yaml:8:" in msg, msg
    assert "{worktree} is the extension's checkout" in error_of(
        tmp_path, GOOD.replace("./prog {threads}", "env {worktree}/prog")
    )
    assert load_recipe(write(tmp_path, GOOD.replace("./prog", "env {work}/prog"))).recipe
    # The reproducer's variables take them too (sweep 14: `PYTHONPATH: "{worktree}"` was
    # passed as written, and every run failed to import), but not {work}, which the
    # setup makes with these variables.
    env = GOOD.replace("  timeout: 5\n", "  timeout: 5\n  env:\n    A: '{recipe_dir}/x'\n")
    assert load_recipe(write(tmp_path, env)).recipe
    msg = error_of(tmp_path, env.replace("{recipe_dir}", "{work}"))
    assert "r.yaml:6: reproducer.env.A: unknown placeholder {work}" in msg, msg
    assert "made by reproducer.setup" in msg


def test_a_misspelt_target_kind_is_named(tmp_path: Path) -> None:
    """It would match no report, and a stress would say so only after all its runs; a
    kind repro does not know at all (a newer TSAN's) is taken as written."""
    msg = error_of(tmp_path, GOOD.replace("target:\n", "target:\n  kind: data rcae\n"))
    assert "r.yaml:6: target.kind: no TSAN report is of kind 'data rcae'" in msg, msg
    assert "did you mean 'data race'?" in msg
    for kind in ("lock-order-inversion (potential deadlock)", "thread leak", "a future kind"):
        text = GOOD.replace("target:\n", f"target:\n  kind: {kind}\n")
        assert load_recipe(write(tmp_path, text)).recipe.target.kind == kind


def test_a_recipe_that_is_not_text_or_too_big(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(GOOD.encode() + "description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.yaml:7: not UTF-8 text \(byte 0xe9\)"):
        load_recipe(bad)
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "# padding\n" * 200_000)
    with pytest.raises(RecipeError, match="is not a recipe"):
        load_recipe(big)


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
    # `{}` is the empty mapping (it was refused as text), `{python}` a placeholder
    with_env = load_recipe(p, ["reproducer.env={A: '1'}", "reproducer.env={}"]).recipe
    assert with_env.reproducer.env == {}
    cmd = load_recipe(p, ["reproducer.command={python}"]).recipe.reproducer.command
    assert cmd == "{python}"
    with pytest.raises(RecipeError, match=r"\(--set\): reproducer.timeout"):
        load_recipe(p, ["reproducer.timeout=soon"])
    with pytest.raises(RecipeError, match="did you mean `confidence`"):
        load_recipe(p, ["bisect.confidense=0.9"])
    with pytest.raises(RecipeError, match=r"expected KEY\.PATH=VALUE"):
        load_recipe(p, ["reproducer.timeout"])
    # A section the file lacks, brought in by --set: the command line's error (sweep 16
    # read "r.yaml: nosuch: unknown key", as if the file were wrong).
    with pytest.raises(RecipeError, match=r"\(--set\): nosuch: unknown key"):
        load_recipe(p, ["nosuch.key=1"])


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


# --- targets that mean "any race" (issue 11, item 5) ---------------------------------

ANY_RACE_TARGETS = [
    "functions: ['']",
    "functions: [' ']",
    "functions: ['*']",
    "functions: ['?*']",
    "functions: ['**']",
    "functions: [racy_fn, '*']",
    "files: ['*']",
    "files: ['']",
    "files: ['*/*']",
    "files: ['*.*']",
]


@pytest.mark.parametrize("target", ANY_RACE_TARGETS)
def test_target_patterns_that_match_every_race_are_refused(tmp_path: Path, target: str) -> None:
    text = GOOD.replace("  functions: [racy_fn]\n", f"  {target}\n")
    msg = error_of(tmp_path, text)
    assert "r.yaml:6: target." in msg
    # The same words as a target with no patterns at all.
    assert "a target needs `functions` or `files` (never 'any race')" in msg


def test_any_race_pattern_refused_through_set(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    with pytest.raises(RecipeError, match="never 'any race'"):
        load_recipe(p, ["target.functions=['*']"])


def test_patterns_that_name_something_are_kept(tmp_path: Path) -> None:
    text = GOOD.replace("[racy_fn]", "['tq_*', '?racy*']") + "  files: ['*.c', 'Objects/*']\n"
    target = load_recipe(write(tmp_path, text)).recipe.target
    assert target.functions == ("tq_*", "?racy*")
    assert target.files == ("*.c", "Objects/*")


def stored_reports() -> list[Report]:
    out: list[Report] = []
    for log in sorted(DATA.glob("*.log")):
        out.extend(parse_log(log.read_text()).reports)
    return out


@pytest.mark.parametrize("pattern", ["", " ", "*", "?*", "**", "*?"])
def test_refused_function_patterns_do_match_every_stored_race(pattern: str) -> None:
    """Why they are refused: on the real reports of tests/data/tsan, each of them
    matches every report whose two accesses have a frame at all, whatever the race."""
    reports = [
        r
        for r in stored_reports()
        if r.current is not None
        and r.previous is not None
        and all(significant_frames(a.stack) for a in (r.current, r.previous))
    ]
    assert len({signature_of(r).id for r in reports}) > 5
    rule = TargetRule(kind=None, functions=(pattern,), accesses="each")
    assert all(matches(r, rule) for r in reports)
    # A pattern that names something picks its race out.
    named = TargetRule(kind=None, functions=("increment_counter",), accesses="each")
    assert 0 < sum(matches(r, named) for r in reports) < len(reports)


@pytest.mark.parametrize("pattern", ["*", "*/*", "*.*"])
def test_refused_file_patterns_do_match_every_stored_race(pattern: str) -> None:
    reports = [
        r
        for r in stored_reports()
        if r.current is not None
        and r.previous is not None
        and all(
            any(f.file and "/" in f.file for f in significant_frames(a.stack)[:10])
            for a in (r.current, r.previous)
        )
    ]
    assert len({signature_of(r).id for r in reports}) > 3
    rule = TargetRule(kind=None, files=(pattern,), accesses="each")
    assert all(matches(r, rule) for r in reports)


# --- one rule per value, from the recipe or the command line (issue 11, item 9) ------

RUNNABLE = GOOD.replace("./prog {threads}", "/bin/true")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--threads", "-5"], "--threads"),
        (["--threads", "0"], "--threads"),
        (["--switch-interval", "nan"], "--switch-interval"),
        (["--switch-interval", "-0.001"], "--switch-interval"),
        (["--taskset", "0-"], "--taskset"),
    ],
)
def test_stress_options_follow_the_recipe_rules(
    tmp_path: Path, args: list[str], option: str
) -> None:
    r = write(tmp_path, RUNNABLE)
    res = repro("stress", str(r), "-n", "1", "--runs-dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: {option}: "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_taskset_names_the_cpus_that_exist(tmp_path: Path) -> None:
    r = write(tmp_path, RUNNABLE)
    have = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    res = repro(
        "stress", str(r), "-n", "1", "--runs-dir", str(tmp_path / "runs"), "--taskset", "99"
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--taskset: CPU 99 not available here" in res.stderr
    first = min(os.sched_getaffinity(0))
    assert f"repro may use CPUs {first}" in res.stderr, (res.stderr, have)
    # The same list in the recipe is refused where the recipe is loaded to be run.
    pinned = write(tmp_path, RUNNABLE + "amplify:\n  taskset: '99'\n", "pinned.yaml")
    with pytest.raises(RecipeError, match=r"pinned.yaml:8: amplify.taskset: CPU 99 not available"):
        load_recipe(pinned)
    # A CPU that exists is accepted from either side.
    ok = repro(
        "stress", str(r), "-n", "1", "--runs-dir", str(tmp_path / "runs"), "--taskset", str(first)
    )
    assert ok.returncode in (0, 1), ok.stdout + ok.stderr


def test_amplify_values_follow_the_recipe_rules(tmp_path: Path) -> None:
    r = write(tmp_path, RUNNABLE)
    res = repro("amplify", str(r), "-n", "1", "--threads", "2,-5", "--runs-dir", str(tmp_path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: --threads: "), res.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--confidence", "0.99999"], "--confidence"),
        (["--confidence", "1.5"], "--confidence"),
        (["--confidence", "nan"], "--confidence"),
        (["--calibration-runs", "0"], "--calibration-runs"),
    ],
)
def test_bisect_options_follow_the_recipe_rules(
    tmp_path: Path, args: list[str], option: str
) -> None:
    r = write(tmp_path, RUNNABLE)
    res = repro("bisect", str(r), "--runs-dir", str(tmp_path / "runs"), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: {option}: "), res.stderr
    # The recipe refuses the same value with the same words.
    if option == "--confidence":
        cli_words = res.stderr.split(f"{option}: ", 1)[1].split(" (got")[0]
        recipe_msg = error_of(tmp_path, RUNNABLE + f"bisect:\n  confidence: {args[1]}\n")
        assert cli_words in recipe_msg


def test_parse_depth_follows_the_signature_rule(tmp_path: Path) -> None:
    res = repro("parse", str(DATA / "gcc-racy_counter.log"), "--depth", "-3")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: --depth: "), res.stderr


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_recipe_numbers_are_finite(tmp_path: Path, value: str) -> None:
    text = RUNNABLE.replace("  timeout: 5", f"  timeout: {value}")
    msg = error_of(tmp_path, text)
    assert "reproducer.timeout" in msg
    assert "finite" in msg


def test_recipe_switch_interval_and_taskset_rules(tmp_path: Path) -> None:
    msg = error_of(tmp_path, RUNNABLE + "amplify:\n  switch_interval: -1\n")
    assert "r.yaml:8: amplify.switch_interval" in msg
    msg = error_of(tmp_path, RUNNABLE + "amplify:\n  taskset: 'first'\n")
    assert "r.yaml:8: amplify.taskset: not a CPU list" in msg


# --- --repo takes what the recipe's repo: takes (issue 11, item 10) -------------------


def git_repo(path: Path, content: str) -> str:
    path.mkdir(parents=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    (path / "README").write_text(content)
    for argv in (["init", "-q"], ["add", "README"], ["commit", "-q", "-m", content]):
        subprocess.run(["git", *argv], cwd=path, env=env, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    )
    return head.stdout.strip()


@pytest.mark.parametrize("form", ["file-url", "relative"])
def test_repo_option_takes_urls_and_paths(tmp_path: Path, form: str) -> None:
    git_repo(tmp_path / "recipe-repo", "the recipe's")
    other = git_repo(tmp_path / "other-repo", "the other one")
    text = RUNNABLE + "extension:\n  repo: recipe-repo\n  sanitize: none\n"
    r = write(tmp_path, text)
    repo_arg = (tmp_path / "other-repo").as_uri() if form == "file-url" else "other-repo"
    runs = tmp_path / "runs"
    res = repro(
        "stress", str(r), "-n", "1", "--runs-dir", str(runs), "--repo", repo_arg, cwd=tmp_path
    )
    assert res.returncode in (0, 1), res.stdout + res.stderr
    (meta,) = runs.glob("*/meta.json")
    assert json.loads(meta.read_text())["context"]["extension"]["sha"] == other


def test_repo_location_keeps_urls() -> None:
    base = Path("/some/where")
    for url in ("https://github.com/o/r.git", "file:///srv/r", "ssh://h/r", "git@github.com:o/r"):
        assert repo_location(url, base) == url
    assert repo_location("r", base) == "/some/where/r"
    assert repo_location("file:r", base) == "/some/where/r"


# --- YAML that a recipe must not contain (issue 11, item 13) --------------------------


def alias_bomb(levels: int = 9) -> str:
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [x,x,x,x,x,x,x,x,x]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n" + GOOD


def _limit_memory() -> None:
    import resource

    # Before the fix this input takes gigabytes: fail inside the child, not the machine.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    text = alias_bomb()
    assert len(text.encode()) < 600
    p = write(tmp_path, text)
    res = subprocess.run(
        [sys.executable, "-m", "repro", "recipe", "validate", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "r.yaml:5: aliases expand to more than 10000 nodes" in res.stderr
    assert "Traceback" not in res.stderr


def test_alias_bomb_in_set_value_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    bomb = "{" + ", ".join(f"k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9))
    bomb = "{k0: &a0 [x,x,x,x,x,x,x,x,x], " + bomb[1:] + "}"
    with pytest.raises(RecipeError, match=r"--set .*aliases expand to more than"):
        load_recipe(p, [f"reproducer.env={bomb}"])


def test_small_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = GOOD.replace("  timeout: 5\n", "  timeout: 5\n  env: &common {A: '1', B: '2'}\n")
    text += "extension:\n  repo: .\n  env:\n    <<: *common\n    C: '3'\n"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # repo: . must be one
    loaded = load_recipe(write(tmp_path, text))
    assert loaded.recipe.reproducer.env == {"A": "1", "B": "2"}
    assert loaded.recipe.extension is not None
    assert loaded.recipe.extension.env == {"A": "1", "B": "2", "C": "3"}


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD + "tsan:\n  options: &o {x: *o}\n")
    assert "r.yaml:8: alias *o refers to the node it is inside of" in msg


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    msg = error_of(tmp_path, GOOD + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "r.yaml:7: nested more than" in msg


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD + "name: u\n", "r.yaml:7: duplicate key `name` (first at line 1)"),
        (
            GOOD.replace("  timeout: 5\n", "  timeout: 5\n  timeout: 50\n"),
            "r.yaml:5: duplicate key `timeout` (first at line 4)",
        ),
        (
            GOOD + "tsan:\n  options:\n    history_size: 7\n    history_size: 2\n",
            "r.yaml:10: duplicate key `history_size` (first at line 9)",
        ),
    ],
)
def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, text: str, where: str) -> None:
    assert where in error_of(tmp_path, text)


def test_duplicate_keys_in_set_value_are_refused(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    with pytest.raises(RecipeError, match=r"--set .*duplicate key `A`"):
        load_recipe(p, ["reproducer.env={A: '1', A: '2'}"])


@pytest.mark.parametrize(
    "value",
    [
        "2001-02-30",
        "!!int x",
        "!!float x",
        "!!timestamp 2001-13-01",
        "!!timestamp",
        "!!int ''",
        "!!python/tuple []",
    ],
)
def test_yaml_values_that_cannot_be_built_are_recipe_errors(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, GOOD.replace("name: t", f"name: {value}"))
    assert "r.yaml:1: " in msg


def test_set_python_source_replaces_the_other_source(tmp_path: Path) -> None:
    """Pointing a building recipe at an existing interpreter is one --set (met on bitarray)."""
    text = (
        "name: s\n"
        "python: {version: '3.13.5', source: /x/Python-3.13.5.tar.xz, free_threading: true}\n"
        "reproducer: {command: '{python} -c pass'}\n"
        "target: {functions: [f]}\n"
    )
    r = parse_recipe(text, tmp_path / "r.yaml", ["python.executable=/opt/py/bin/python3"])
    assert r.python is not None
    assert r.python.executable == "/opt/py/bin/python3"
    assert r.python.version is None and r.python.source is None
    assert r.python.free_threading is True
    # Both given explicitly: still the schema's one-source error, naming the field.
    with pytest.raises(RecipeError, match="exactly one of"):
        parse_recipe(
            text, tmp_path / "r.yaml", ["python.executable=/opt/py", "python.version=3.13.4"]
        )


def test_the_variables_a_recipe_sets_for_builds_and_runs() -> None:
    """A remote worker's value of one of these is the recipe's, not the worker's own:
    the cluster compares only the others with the shell's."""
    text = (
        "name: v\n"
        "extension:\n  repo: .\n  build: [make]\n  env: {CC: clang}\n"
        "  env_ranges:\n    - before: abc123\n      env: {UNSAFE_PYO3_SKIP_VERSION_CHECK: '1'}\n"
        "reproducer:\n  command: ./t\n  env: {PYTHON_GIL: '0'}\n"
        "target:\n  kind: data race\n  functions: [f]\n"
    )
    recipe = parse_recipe(text, Path("/x/recipe.yaml"))
    assert recipe.variables() == {"CC", "UNSAFE_PYO3_SKIP_VERSION_CHECK", "PYTHON_GIL"}


@pytest.mark.parametrize(
    ("inner", "said"),
    [
        ("    thread: 4\n", "r.yaml:8: reproducer.pytest.thread: unknown key `thread`"),
        ("    threads: two\n", "r.yaml:8: reproducer.pytest.threads: Input should be a valid int"),
        ("    iterations: 0\n", "r.yaml:8: reproducer.pytest.iterations:"),
    ],
)  # fmt: skip
def test_an_error_inside_reproducer_pytest_names_its_field_and_line(
    tmp_path: Path, inner: str, said: str
) -> None:
    """Raised while `pytest:` was turned into a command, these named `reproducer.thread`
    or `reproducer.threads` (another field) at the line of `reproducer:`."""
    text = (
        "name: t\n"
        "reproducer:\n"
        "  timeout: 30\n"
        "  pytest:\n"
        "    tests:\n"
        "      - tests/test_x.py::test_y\n"
        "    args: []\n" + inner + "target: {functions: [a]}\n"
    )
    err = error_of(tmp_path, text)
    assert said in err, err
    assert err.count("\n") == 0, err  # one problem, one line
    bad_item = text.replace("      - tests/test_x.py::test_y\n", "      - 42\n").replace(inner, "")
    err = error_of(tmp_path, bad_item)
    said = "reproducer.pytest.tests.0: should be text: put it in quotes (YAML read the number 42)"
    assert err == f"{tmp_path / 'r.yaml'}:6: {said}"


def test_type_errors_are_said_in_the_words_of_yaml(tmp_path: Path) -> None:
    """`valid tuple`, `valid string (got 3.1)` and `valid number (got '60s')` were pydantic's
    words: the fix was a list, quotes, a number of seconds."""
    text = (
        "name: t\n"
        "python: {version: 3.10}\n"
        "reproducer: {command: x, timeout: 60s}\n"
        "target: {functions: read_shared}\n"
    )
    err = error_of(tmp_path, text)
    assert (
        "r.yaml:2: python.version: should be text: put it in quotes (YAML read the number 3.1)"
        in err
    )
    assert "r.yaml:3: reproducer.timeout: should be a number of seconds, e.g. 60 (got '60s')" in err
    assert "r.yaml:4: target.functions: should be a list, e.g. [a, b] (got 'read_shared')" in err
    res = repro("recipe", "validate", str(tmp_path / "r.yaml"))
    assert "e.g. [a, b]" in res.stderr  # not eaten as console markup
