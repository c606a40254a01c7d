"""Near misses against real TSAN reports: what did not match, and the change that fixes it."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import repro
from tsan_helpers import PROGRAMS, compile_c, cycle_script, run_and_parse, stored_log

from repro.app.calibration import EARLY_LOOK_RUNS
from repro.tsan.model import Report
from repro.tsan.nearmiss import near_miss, suggest_target
from repro.tsan.parse import parse_log
from repro.tsan.signature import (
    TargetRule,
    is_interpreter_frame,
    matches,
    starts_inside_interpreter,
    starts_outside_interpreter,
)
from repro.tsan.signature import normalise_function as normalise


@pytest.fixture(scope="module")
def lost_history_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """write_shared (first thread) against read_shared (second thread): two functions."""
    binary = compile_c(PROGRAMS / "lost_history.c", tmp_path_factory.mktemp("nm") / "lost_history")
    _, parsed = run_and_parse(binary, tsan_options="history_size=7")
    races = [r for r in parsed.reports if r.kind == "data race"]
    assert races, parsed
    return races[0]


def test_one_access_named_is_a_near_miss(lost_history_report: Report) -> None:
    rule = TargetRule(functions=("write_shared",))
    assert not matches(lost_history_report, rule)
    miss = near_miss(lost_history_report, rule)
    assert miss is not None
    text = "\n".join(miss.lines())
    assert "read_shared (lost_history.c:17)" in text
    assert "one access matches: write_shared" in text
    assert miss.fixes == (
        'add "read_shared" to target.functions (a target naming both accesses)',
        "target.accesses: any (the patterns may all sit on one side)",
    )
    # Each fix, applied, makes it the target.
    assert matches(lost_history_report, TargetRule(functions=("write_shared", "read_shared")))
    assert matches(lost_history_report, TargetRule(functions=("write_shared",), accesses="any"))


def test_files_are_added_when_the_target_uses_them(lost_history_report: Report) -> None:
    rule = TargetRule(functions=("write_shared",), files=("lost_history.c",))
    miss = near_miss(lost_history_report, rule)
    assert miss is not None
    assert miss.fixes[0].startswith(
        'add "read_shared" to target.functions and add "lost_history.c" to target.files'
    )


def test_function_deeper_than_depth(lost_history_report: Report) -> None:
    # `first` is frame 2 of the write (under write_shared), `second` frame 2 of the read.
    rule = TargetRule(functions=("first", "second"), depth=1)
    assert not matches(lost_history_report, rule)
    miss = near_miss(lost_history_report, rule)
    assert miss is not None
    assert miss.fixes == ("target.depth: 2",)
    assert "deeper than target.depth 1" in miss.unmatched[0]
    assert matches(lost_history_report, TargetRule(functions=("first", "second"), depth=2))


def test_a_pattern_the_race_does_not_contain(lost_history_report: Report) -> None:
    """Every pattern must be in the race: a third function (say, of a race the user meant
    to count too) makes the race read as another, with every run "0 hits"."""
    rule = TargetRule(functions=("write_shared", "read_shared", "stats_reader"))
    assert not matches(lost_history_report, rule)
    miss = near_miss(lost_history_report, rule)
    assert miss is not None
    assert miss.fixes == ('remove "stats_reader" from target.functions',)
    assert "names 'stats_reader', which neither access has" in miss.unmatched[0]
    both = replace(rule, files=("lost_history.c", "stats.c"))
    miss = near_miss(lost_history_report, both)
    assert miss is not None
    assert miss.fixes == (
        'remove "stats_reader" from target.functions and remove "stats.c" from target.files',
    )
    # Both accesses in one named function, the other named function nowhere: the same.
    one = TargetRule(functions=("write_shared", "stats_reader"), accesses="any")
    miss = near_miss(lost_history_report, one)
    assert miss is not None and miss.fixes == ('remove "stats_reader" from target.functions',)
    # Not when the rest is in one access only: that is another race through the function.
    assert near_miss(lost_history_report, TargetRule(functions=("write_shared", "x"))) is None


def test_kind_differs(lost_history_report: Report) -> None:
    rule = TargetRule(kind="heap-use-after-free", functions=("write_shared", "read_shared"))
    miss = near_miss(lost_history_report, rule)
    assert miss is not None
    assert miss.fixes == ('target.kind: "data race"',)


def test_unrelated_race_and_the_target_itself_are_not_near_misses(
    lost_history_report: Report,
) -> None:
    assert near_miss(lost_history_report, TargetRule(functions=("tq_publish",))) is None
    rule = TargetRule(functions=("write_shared", "read_shared"))
    assert near_miss(lost_history_report, rule) is None


def test_suggested_target_names_both_accesses(lost_history_report: Report) -> None:
    target = suggest_target(lost_history_report)
    assert target.functions == ("read_shared", "write_shared")
    assert target.files == ("lost_history.c",)
    assert matches(lost_history_report, target.rule())
    assert '    - "write_shared"' in target.yaml()


def test_a_suggested_cpp_target_outlives_a_change_of_parameters() -> None:
    """TSAN names a C++ method with its parameter list. A suggested target that kept it
    matched nothing once a commit changed the parameters but not the race, and a bisect
    named that commit the fix (pybind11, at 0.9902). The real log of a pybind11 race."""
    text = stored_log("clang-pybind11-template.log")
    report = parse_log(text).reports[0]
    target = suggest_target(report)
    assert target.functions == ("Accumulator<long>::add", "Accumulator<long>::get")
    assert matches(report, target.rule())
    # The next commit adds a parameter to each: the same race, another signature.
    changed = text.replace("::add(long) ", "::add(long, int) ").replace(
        "::get() const ", "::get(int) const "
    )
    assert changed.count("::add(long, int) ") and changed.count("::get(int) const ")
    later = parse_log(changed).reports[0]
    assert matches(later, target.rule())
    assert not matches(
        later, TargetRule(functions=("Accumulator<long>::add(long)", "Accumulator<long>::get()"))
    )


def test_stored_use_after_free_kind_and_depth() -> None:
    report = parse_log(stored_log("gcc-use_after_free.log")).reports[0]
    rule = TargetRule(kind="data race", functions=("releaser",), accesses="any", depth=1)
    miss = near_miss(report, rule)
    assert miss is not None
    assert miss.fixes == ('target.kind: "heap-use-after-free" and target.depth: 2',)


def test_lines_name_the_signature(lost_history_report: Report, tmp_path: Path) -> None:
    miss = near_miss(lost_history_report, TargetRule(functions=("read_shared",)))
    assert miss is not None
    assert miss.lines()[0].startswith(f"race {miss.signature.id} (data race: ")


# --- through the command line ---------------------------------------------------------


def _recipe(
    tmp_path: Path,
    binary: Path,
    functions: list[str],
    *,
    tsan: str = "tsan:\n  options: {history_size: 7}\n",
    depth: int | None = None,
) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(
        "name: nm\n"
        f"reproducer:\n  command: {json.dumps(str(binary))}\n  timeout: 30\n"
        f"{tsan}"
        f"target:\n  functions: {json.dumps(functions)}\n"
        + (f"  depth: {depth}\n" if depth is not None else "")
    )
    return p


@pytest.fixture(scope="module")
def lost_history_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(PROGRAMS / "lost_history.c", tmp_path_factory.mktemp("nmb") / "lh")


def test_stress_says_a_near_miss_is_one(tmp_path: Path, lost_history_bin: Path) -> None:
    """A target naming only write_shared: 0 hits, exit 1, and the console says why."""
    r = _recipe(tmp_path, lost_history_bin, ["write_shared"])
    res = repro(
        "stress",
        str(r),
        "--runs",
        "6",
        "-j",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--suggest-target",
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "0 of 6 runs hit the target race" in out
    assert "near miss: race" in out and "in 6 of 6 runs" in out, out
    assert "did not match: the other access, read_shared (lost_history.c:17)," in out
    assert 'to target it: add "read_shared" to target.functions' in out
    assert "or: target.accesses: any" in out
    # The suggested target, pasted into the recipe, makes every run a hit.
    block = out[out.index("target:\n") :]
    assert '- "write_shared"' in block and '- "read_shared"' in block, block
    fixed = tmp_path / "fixed.yaml"
    text = r.read_text()
    fixed.write_text(text[: text.index("target:")] + block[: block.index("depth:") + 10])
    res2 = repro("stress", str(fixed), "--runs", "3", "-j", "2", "--runs-dir", str(tmp_path / "r2"))
    out2 = res2.stdout + res2.stderr
    assert res2.returncode == 0, out2
    assert "3 of 3 runs hit the target race" in out2
    assert "near miss" not in out2


def test_a_target_left_fill_me_runs_and_names_one_but_cannot_bisect(
    tmp_path: Path, lost_history_bin: Path
) -> None:
    """What `repro init` writes without a log: the stress run says the target is not
    named yet and suggests one at the end unasked; a bisect refuses, naming the line."""
    r = _recipe(tmp_path, lost_history_bin, ["FILL_ME"])
    res = repro("stress", str(r), "--runs", "2", "-j", "2", "--runs-dir", str(tmp_path / "runs"))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "target.functions is still FILL_ME" in out
    block = out[out.index("target:\n") :]
    assert '- "write_shared"' in block and '- "read_shared"' in block, block
    valid = repro("recipe", "validate", str(r))
    assert valid.returncode == 0 and "still FILL_ME: stress can run, bisect cannot" in (
        " ".join(valid.stdout.split())
    ), valid.stdout
    bis = repro("bisect", str(r), "--racy", "a", "--fixed", "b")
    assert bis.returncode == 2, bis.stdout + bis.stderr
    line = r.read_text().splitlines().index('  functions: ["FILL_ME"]') + 1
    assert f"{r}:{line}: target.functions: still FILL_ME" in " ".join(bis.stderr.split())
    assert "Traceback" not in bis.stderr
    amp = repro("amplify", str(r), "--runs", "2", "--jobs", "1,2")
    assert amp.returncode == 2, amp.stdout + amp.stderr
    assert f"{r}:{line}: target.functions: still FILL_ME" in " ".join(amp.stderr.split())


def test_a_race_through_the_target_seen_no_more_often_than_it_is_no_near_miss(
    tmp_path: Path,
) -> None:
    """deep_symptom: the target (publish | consume) and a second race with consume four
    frames down. The target hits in every run, so the second is another race through the
    same code, not a target written wrong: no "near miss", no advice to deepen the target."""
    binary = compile_c(PROGRAMS / "deep_symptom.c", tmp_path / "deep")
    r = _recipe(tmp_path, binary, ["publish", "consume"], tsan="", depth=3)
    res = repro("stress", str(r), "--runs", "3", "-j", "2", "--runs-dir", str(tmp_path / "runs"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "3 of 3 runs hit the target race" in out
    assert "other races: 1 distinct race, in 3 runs" in out, out
    assert "near miss" not in out and "target.depth" not in out, out
    # When the target never hits (a wrong kind here), both races are near misses again.
    r.write_text(r.read_text().replace("target:\n", "target:\n  kind: heap-use-after-free\n"))
    res = repro("stress", str(r), "--runs", "2", "-j", "2", "--runs-dir", str(tmp_path / "r2"))
    assert "near miss: race" in res.stdout + res.stderr


def test_a_race_inside_a_library_is_named_by_the_functions_that_called_it(
    tmp_path: Path,
) -> None:
    """Rust (a stored real log of tsan_programs/racy.rs) and C++ (vector_race.cpp, built
    and run here): TSAN's top frames are the toolchain's (core::ptr::read_volatile,
    libstdc++'s push_back), and a target naming them would match that call in every
    program. The suggestion names the program's own functions, deep enough to reach them."""
    reports = parse_log(stored_log("rust-racy.log")).reports
    race = next(r for r in reports if r.current and "read_volatile" in r.current.stack[0].function)
    target = suggest_target(race)
    assert set(target.functions) == {"racy::load_value", "racy::store_value"}, target
    assert target.files == ("racy.rs",)
    assert matches(race, target.rule())
    assert not any(matches(r, target.rule()) for r in reports if r.raw != race.raw)

    binary = compile_c(PROGRAMS / "vector_race.cpp", tmp_path / "vr", compiler="g++")
    _, parsed = run_and_parse(binary)
    races = [r for r in parsed.reports if r.kind == "data race"]
    assert races, parsed
    tops = {normalise(a.stack[0].function) for r in races for a in (r.current, r.previous) if a}
    assert any("push_back" in t or "_M_realloc" in t or "std::" in t for t in tops), tops
    named = {f for r in races for f in suggest_target(r).functions}
    assert named <= {"add_item", "add_other"}, named
    for r in races:
        assert matches(r, suggest_target(r).rule())


def test_parse_skeleton_names_both_accesses(tmp_path: Path, lost_history_bin: Path) -> None:
    proc = subprocess.run(
        [str(lost_history_bin)],
        capture_output=True,
        text=True,
        env={**os.environ, "TSAN_OPTIONS": "history_size=7"},
        timeout=60,
    )
    log = tmp_path / "ci.log"
    log.write_text(proc.stderr)
    res = repro("parse", str(log), "--recipe-skeleton", "1")
    assert res.returncode == 0, res.stderr
    assert '- "read_shared"' in res.stdout and '- "write_shared"' in res.stdout


def _demo_with_target(tmp_path: Path, functions: str) -> Path:
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "demo"))
    from make_repo import make_demo_recipe

    recipe = make_demo_recipe(tmp_path)
    text = recipe.read_text()
    recipe.write_text(text.replace("functions: [tq_publish, tq_poll]", f"functions: {functions}"))
    return recipe


def _calibration_runs(runs_dir: Path) -> list[dict[str, object]]:
    events = next(runs_dir.iterdir()) / "events.jsonl"
    runs = [json.loads(line) for line in events.read_text().splitlines()]
    return [r for r in runs if r.get("phase") == "calibrate"]


def test_bisect_that_cannot_calibrate_names_the_near_miss(tmp_path: Path) -> None:
    """The demo with a target naming only tq_publish: the racy end "does not reproduce".
    The near miss shows in most of the first runs and the target in none: the bisect
    stops there (sweep 16 went on to 400 runs of a target with one letter missing); a
    resume calibrates on."""
    recipe = _demo_with_target(tmp_path, "[tq_publish]")
    runs = tmp_path / "runs"
    res = repro("bisect", str(recipe), "--runs-dir", str(runs), "--calibration-runs", "40")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "near miss: race" in out, out
    assert "did not match: the other access, tq_poll" in out, out
    assert 'to target it: add "tq_poll" to target.functions' in out
    assert "the target is likely wrong" in out and "repro bisect --resume" in out, out
    assert len(_calibration_runs(runs)) == EARLY_LOOK_RUNS
    res = repro("bisect", "--resume", str(next(runs.iterdir())))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "did not reproduce the target race in 40 runs" in out, out
    assert len(_calibration_runs(runs)) == 40


def test_a_calibration_goes_on_past_its_early_look_in_one_phase(tmp_path: Path) -> None:
    """A target that nothing nearly matches calibrates to its budget, and the early look
    and the rest are one phase: the time of each run goes on from the early look's,
    where it restarted at 0 (sweep 15)."""
    recipe = _demo_with_target(tmp_path, "[zz_not_in_any_frame]")
    runs = tmp_path / "runs"
    res = repro("bisect", str(recipe), "--runs-dir", str(runs), "--calibration-runs", "30")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1 and "did not reproduce the target race in 30 runs" in out, out
    elapsed = [r["elapsed"] for r in _calibration_runs(runs)]
    assert len(elapsed) == 30 > EARLY_LOOK_RUNS
    assert elapsed == sorted(elapsed), elapsed


def test_a_race_that_starts_in_the_extension_is_told_from_its_symptoms_in_cpython() -> None:
    """A real log: a C extension makes a string on first use with no barrier (ring_tag
    reads and writes it), and the threads that get the half-published object race in
    CPython's reference counts. The two symptom races have no frame of the extension on
    top; the suggested target must name the extension's race, not Py_INCREF's."""
    reports = parse_log(stored_log("cpython-ext-lazy-init.log")).reports
    tops = [{normalise(a.stack[0].function) for a in (r.current, r.previous) if a} for r in reports]
    assert tops == [
        {"ring_tag"},
        {"_Py_atomic_load_uintptr_relaxed", "new_reference"},
        {
            "_Py_atomic_add_ssize",
            "new_reference",
        },
    ], tops
    assert [starts_outside_interpreter(r) for r in reports] == [True, False, False]
    # What a run logs of each race (SignatureEvent.inside_cpython): the symptoms are
    # CPython's own code; a report with no access stack is neither.
    assert [starts_inside_interpreter(r) for r in reports] == [False, True, True]
    assert not starts_inside_interpreter(replace(reports[1], current=None, previous=None))
    assert suggest_target(reports[0]).functions == ("ring_tag",)
    # CPython's inline functions compiled into the extension are the extension's code.
    incref = reports[1].current.stack[2] if reports[1].current else None
    assert incref is not None and incref.function == "Py_INCREF"
    assert is_interpreter_frame(incref)
    assert not is_interpreter_frame(
        replace(incref, module="_ring.cpython-313t-x86_64-linux-gnu.so")
    )
    assert is_interpreter_frame(replace(incref, module="libpython3.13t.so.1.0"))
    assert is_interpreter_frame(replace(incref, module=None))  # Include/object.h


def test_a_target_with_nothing_of_any_race_says_which_race_there_was(
    tmp_path: Path, lost_history_bin: Path
) -> None:
    """Every pattern wrong (a name written otherwise than TSAN prints it): no race is a
    near miss, and the console only said "0 of 4 runs hit the target race"."""
    r = _recipe(tmp_path, lost_history_bin, ["read_and_write"])
    res = repro("stress", str(r), "--runs", "4", "-j", "2", "--runs-dir", str(tmp_path / "runs"))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "near miss: race" not in out
    assert "no race seen has all of the target's names; race" in out, out
    assert "read_shared" in out and "write_shared" in out and "--suggest-target" in out
    assert '("read_and_write" matches no frame of it)' in out, out


def test_a_template_written_as_in_the_source_is_told_how_tsan_names_it() -> None:
    """`Accumulator<T>::add`, as the source spells it, matches nothing: the message said
    which race there was, not which pattern failed or how to write it. The real log of
    a pybind11 race."""
    from repro.report.fmt import lacking_text
    from repro.tsan.nearmiss import lacking_patterns

    report = parse_log(stored_log("clang-pybind11-template.log")).reports[0]
    rule = TargetRule(functions=("Accumulator<T>::add", "Accumulator::get"), files=("x.cpp",))
    lacking = lacking_patterns(report, rule)
    assert lacking == ("Accumulator<T>::add", "x.cpp")
    said = lacking_text(lacking)
    assert '"Accumulator<T>::add" and "x.cpp" match no frame of it' in said
    assert "Accumulator<long>::add, or with none, Accumulator::add" in said
    assert lacking_text(()) == ""


def test_the_near_miss_named_first_holds_every_name_of_the_target(tmp_path: Path) -> None:
    """A target naming both functions of an add-vs-get race, too shallow to match. The
    add-vs-add race through one of them shows in more runs, and it was named first;
    the race the user named is the one that holds both names."""
    binary = compile_c(PROGRAMS / "bump_peek.c", tmp_path / "bump_peek")
    script = cycle_script(tmp_path / "cycle.sh", [f"exec {binary} read", f"exec {binary}"])
    r = _recipe(
        tmp_path,
        script,
        ["do_bump", "do_peek"],
        tsan="tsan:\n  options: {suppress_equal_addresses: 0}\n",
        depth=1,
    )
    res = repro("stress", str(r), "--runs", "6", "-j", "1", "--runs-dir", str(tmp_path / "runs"))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    first = out[out.index("near miss: race") :]
    assert first.index("peek") < first.index("nearly matches"), first[:400]
    assert "in 3 of 6 runs" in first[:200], first[:400]
    assert "target.depth: 2" in first[: first.index("nearly matches") + 400], first[:600]


def test_a_misspelt_name_points_to_the_race_that_has_all_the_others(tmp_path: Path) -> None:
    """Sweep 15: with one function misspelt, the race named was the most frequent one,
    which lacked two of the target's names, not the one that lacked only the misspelt
    name."""
    binary = compile_c(PROGRAMS / "bump_peek.c", tmp_path / "bump_peek")
    script = cycle_script(tmp_path / "cycle.sh", [f"exec {binary} read", f"exec {binary}"])
    # No near miss: the race meant lacks only "do_peekk", but without it "peek" is on one
    # side only; the race seen most (bump against bump) lacks both functions.
    r = _recipe(
        tmp_path,
        script,
        ["peek", "do_peekk"],
        tsan="tsan:\n  options: {suppress_equal_addresses: 0}\n",
    )
    r.write_text(r.read_text() + "  files: [bump_peek.c]\n")
    res = repro("stress", str(r), "--runs", "4", "-j", "1", "--runs-dir", str(tmp_path / "runs"))
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "no race seen has all" in out, out
    said = out[out.index("no race seen has all of the target's names") :]
    assert '("do_peekk" matches no frame of it)' in said[:400], said[:600]


def test_a_racy_end_whose_runs_crash_says_it_built_and_what_they_printed(
    tmp_path: Path,
) -> None:
    """Sweep 16: a reproducer importing a module that is not there; the bisect said
    "the racy end does not build or run: runs cannot show the race (crash 20)" of a
    commit that built, without the output's last line that a stress quotes."""
    recipe = _demo_with_target(tmp_path, "[tq_publish, tq_poll]")
    text = recipe.read_text()
    crash = "sh -c 'echo \"ModuleNotFoundError: No module named ticketqx\"; exit 1'"
    recipe.write_text(
        text.replace("command: ./stress_test 3 100 1000", f"command: {json.dumps(crash)}")
    )
    res = repro("bisect", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-j", "1")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1, out
    assert "the racy end built, but runs cannot show the race (crash" in out, out
    assert "output ends: ModuleNotFoundError: No module named ticketqx" in out, out
    assert "does not build" not in out, out


def test_a_race_of_cpythons_own_with_the_target_far_down_is_no_near_miss() -> None:
    """Sweep 18: at frozenlist's fixed commit, a race in CPython's string interning with
    `_check_frozen` at frame 14 of a stack was offered as "nearly matches the target
    ... to target it: remove "freeze" from target.functions and target.depth: 15",
    which would make the target a race of CPython's that shows at both ends. The
    ringlite log's CPython races have the extension's `ring_tag` at frames 4-8."""
    log = parse_log(stored_log("cpython-ext-lazy-init.log"))
    extension_race, *cpython_races = log.reports
    assert cpython_races and all(starts_inside_interpreter(r) for r in cpython_races)
    rule = TargetRule(functions=("ring_tag",), depth=1)
    assert matches(extension_race, rule)
    assert all(near_miss(r, rule) is None for r in cpython_races)
    # A target of CPython's own code that is too shallow is still a near miss.
    shallow = TargetRule(functions=("PyTuple_Pack",), depth=1)
    assert not matches(cpython_races[0], shallow)
    miss = near_miss(cpython_races[0], shallow)
    assert miss is not None and any("target.depth" in f for f in miss.fixes), miss
