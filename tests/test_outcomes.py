"""Runs that cannot show the race are never evidence (issue 9, issue 11 item 4).

Real TSAN programs: a race whose previous access TSAN cannot restore at a small
history_size (incomplete), the same program with symbolization off (unsymbolized),
and cut copies of its real report. Through the real command line: the stress run
stops with a message, or counts such runs apart with --keep-going, and the rate,
summary.json, --json-out and the reports agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builds_fixtures import cpython_tsan_build  # noqa: F401
from conftest import repro
from tsan_helpers import PROGRAMS, compile_c, run_tsan

from repro.builds.cpython import PythonBuild
from repro.tsan.outcome import (
    Matcher,
    Outcome,
    caught_signal,
    classify,
    is_incomplete,
    parallel_threads_of,
    ran_no_test,
)
from repro.tsan.parse import parse_log
from repro.tsan.signature import TargetRule

TARGET = TargetRule(functions=("read_shared", "write_shared"))
MATCHER = Matcher(TARGET)


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lost") / "lost_history"
    return compile_c(PROGRAMS / "lost_history.c", out)


def _verdict(binary: Path, options: str) -> tuple[Outcome, str]:
    proc = run_tsan(binary, tsan_options=options)
    parsed = parse_log(proc.stderr)
    return classify(parsed, proc.returncode, False, MATCHER, proc.stderr).outcome, proc.stderr


def test_lost_stack_is_incomplete_not_other(lost: Path) -> None:
    outcome, text = _verdict(lost, "history_size=0")
    assert "[failed to restore the stack]" in text
    assert outcome is Outcome.INCOMPLETE
    # Nor is it one more distinct race among the others: it has no signature.
    assert classify(parse_log(text), 66, False, MATCHER).signatures == ()
    # The fix the hint names: a larger history gives the complete report, the target.
    outcome, text = _verdict(lost, "history_size=7")
    assert "failed to restore" not in text
    assert outcome is Outcome.TARGET


def test_unsymbolized_frames_are_not_other(lost: Path) -> None:
    outcome, text = _verdict(lost, "history_size=7 symbolize=0")
    assert "<null>" in text
    assert outcome is Outcome.UNSYMBOLIZED
    assert classify(parse_log(text), 66, False, MATCHER).signatures == ()


def test_truncated_report_never_counts_as_target(lost: Path) -> None:
    """A report cut after its first access matched the target under `each` (issue 11.4)."""
    _, text = _verdict(lost, "history_size=7")
    full = parse_log(text)
    assert classify(full, 66, False, MATCHER).outcome is Outcome.TARGET
    cut = text[: text.index("Previous write")]
    parsed = parse_log(cut)
    assert parsed.reports and is_incomplete(parsed.reports[0])
    assert classify(parsed, 66, False, MATCHER).outcome is Outcome.INCOMPLETE
    # Cut the same way, a report whose surviving access contradicts the target is some
    # other race, whatever the missing part.
    elsewhere = Matcher(TargetRule(functions=("write_shared",)))
    assert classify(parsed, 66, False, elsewhere).outcome is Outcome.OTHER
    assert len(classify(parsed, 66, False, elsewhere).signatures) == 1
    # Complete, with the other access elsewhere: other, as before.
    assert classify(full, 66, False, elsewhere).outcome is Outcome.OTHER


def _recipe(tmp_path: Path, command: str, options: dict[str, object]) -> Path:
    opts = ", ".join(f"{k}: {v}" for k, v in options.items())
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: lost\n"
        f"reproducer: {{command: {json.dumps(command)}, timeout: 20}}\n"
        f"tsan: {{options: {{{opts}}}}}\n"
        "target: {functions: [read_shared, write_shared]}\n"
    )
    return r


def test_unsymbolized_run_stops_stress_with_what_to_do(lost: Path, tmp_path: Path) -> None:
    r = _recipe(tmp_path, str(lost), {"symbolize": 0, "history_size": 7})
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(r),
        "-n",
        "5",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unsymbolized" in res.stderr and "llvm" in res.stderr
    assert "--keep-going" in res.stderr
    said = " ".join((res.stdout + res.stderr).split())
    assert "No TSAN reports at all" not in said and "No readable TSAN report: 1 run" in said
    data = json.loads(out.read_text())
    assert data["outcomes"]["unsymbolized"] == 1 and data["runs"] == 1
    assert data["evidence_runs"] == 0 and data["rate"] is None
    assert data["outcomes"]["other"] == 0 and data["outcomes"]["clean"] == 0
    # The report says why it stopped, not "killed, or still running".
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads(repro("report", str(run_dir), "--format", "json").stdout)["status"]
    assert status["state"] == "stopped" and "unsymbolized" in status["message"], status
    assert "llvm" in status["message"]


def test_keep_going_counts_invalid_runs_apart(lost: Path, tmp_path: Path) -> None:
    r = _recipe(tmp_path, str(lost), {"symbolize": 0, "history_size": 7})
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(r),
        "-n",
        "4",
        "-j",
        "2",
        "--keep-going",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["outcomes"]["unsymbolized"] == 4 and data["invalid_runs"] == 4
    assert data["evidence_runs"] == 0 and data["hits"] == 0
    assert "0 runs could show the target race" in res.stdout
    assert "unsymbolized" in res.stdout


def test_incomplete_runs_are_counted_and_explained(lost: Path, tmp_path: Path) -> None:
    r = _recipe(tmp_path, str(lost), {"history_size": 0})
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(r),
        "-n",
        "3",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["outcomes"]["incomplete"] == 3 and data["evidence_runs"] == 0
    assert "history_size" in res.stdout
    report = repro("report", str(next((tmp_path / "runs").iterdir())), "--format", "json")
    doc = json.loads(report.stdout)
    assert doc["summary"]["outcomes"]["incomplete"] == 3
    assert doc["summary"]["evidence_runs"] == 0


# --- the GIL switched back on, in the real free-threaded TSAN CPython ------------------

NO_GIL_SLOT_EXT = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
/* No Py_mod_gil slot: importing this turns the GIL back on. */
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "oldext", NULL, 0, methods};
PyMODINIT_FUNC PyInit_oldext(void) { return PyModuleDef_Init(&mod); }
"""


@pytest.mark.slow
def test_gil_enabled_run_is_flagged_with_the_module(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    import subprocess

    py = cpython_tsan_build
    includes = subprocess.run(
        [str(py.python), "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "TSAN_OPTIONS"},
    ).stdout.strip()
    suffix = subprocess.run(
        [str(py.python), "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    work = tmp_path / "ext"
    work.mkdir()
    (work / "oldext.c").write_text(NO_GIL_SLOT_EXT)
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-fsanitize=thread",
            "-g",
            f"-I{includes}",
            "oldext.c",
            "-o",
            f"oldext{suffix}",
        ],
        cwd=work,
        check=True,
        capture_output=True,
        timeout=120,
    )
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: gil\n"
        f"python: {{executable: {json.dumps(str(py.python))}}}\n"
        f"reproducer: {{command: '{{python}} -c \"import oldext\"', cwd: {json.dumps(str(work))},"
        " timeout: 120}\n"
        "target: {functions: [bytes_hash]}\n"
    )
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(r),
        "-n",
        "2",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    # Every run of this build would turn the GIL on: the stress stops at the first
    # (sweep 15 ran 30 of 30 such runs, and exited 1).
    assert res.returncode == 2, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["outcomes"]["gil-enabled"] == 1 and data["evidence_runs"] == 0
    assert any("oldext" in k for k in data["invalid"]), data["invalid"]
    assert "PYTHON_GIL=0" in res.stdout + res.stderr
    # With the GIL forced off, the same runs are evidence again (clean here).
    res = repro(
        "stress",
        str(r),
        "-n",
        "1",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        "--set",
        "reproducer.env={PYTHON_GIL: '0'}",
    )
    data = json.loads(out.read_text())
    assert data["outcomes"]["clean"] == 1, res.stdout + res.stderr


def test_tsan_start_failure_hint_names_what_exists(lost: Path, tmp_path: Path) -> None:
    """A TSAN runtime that cannot start is its own outcome, and its hint names real fixes."""
    r = _recipe(tmp_path, f"ulimit -v 200000; exec {lost}", {"history_size": 7})
    out = tmp_path / "s.json"
    res = repro(
        "stress",
        str(r),
        "-n",
        "2",
        "-j",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["outcomes"]["tsan-failure"] == 2 and data["evidence_runs"] == 0
    text = " ".join(res.stdout.split())
    assert "repro doctor" in text and "vm.mmap_rnd_bits=28" in text
    assert "--setarch" not in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 2 filtered out\n",
         "running 0 tests"),
        # cargo test: unit tests ran one, doc tests none: a test did run.
        ("running 1 test\ntest a ... ok\n\nrunning 0 tests\n", None),
        ("============================ no tests ran in 0.01s =============================\n",
         "no tests ran in 0.01s"),
        ("ERROR: not found: /w/tests/test_x.py::test_y\n(no match in any of [<Module>])\n",
         "ERROR: not found: /w/tests/test_x.py::test_y"),
        ("collected 0 items\n", "collected 0 items"),
        ("\n----------------------------------------------------------------------\n"
         "Ran 0 tests in 0.000s\n\nNO TESTS RAN\n", "Ran 0 tests in 0.000s"),
        ("[==========] 0 tests from 0 test suites ran. (0 ms total)\n",
         "[==========] 0 tests from 0 test suites ran. (0 ms total)"),
        ("No tests were found!!!\n", "No tests were found!!!"),
        ("collected 3 items\n...\n3 passed in 0.2s\n", None),
        # Every selected test skipped or deselected: the runner ran, no test did (a
        # commit that marked the racy test skip read as the fix at 0.99).
        ("============================== 3 skipped in 1.03s ==============================\n",
         "3 skipped (no test ran)"),
        ("sss   [100%]\n3 skipped in 0.88s\n", "3 skipped (no test ran)"),
        # with -rs, as the pytest reproducer runs: the first reason (pytest 9.2's lines)
        ("ss   [100%]\n=== short test summary info ===\nSKIPPED [1] t/test_s.py:3: C Extension "
         "not available\nSKIPPED [1] t/test_s.py:8: no speedups\n2 skipped in 1.64s\n",
         "2 skipped: C Extension not available (no test ran)"),
        ("\n3 deselected in 0.79s\n", "3 deselected (no test ran)"),
        ("======= 1 skipped, 2 deselected, 1 warning in 1.32s =======\n",
         "1 skipped, 2 deselected, 1 warning (no test ran)"),
        ("======= 1 passed, 1 skipped in 0.3s =======\n", None),
        ("======= 1 xfailed in 0.3s =======\n", None),
        ("== 1 passed in 0.1s ==\n== 1 skipped in 0.1s ==\n", None),  # two sessions, one ran
        ("Ran 1 test in 0.000s\n\nOK (skipped=1)\n", "Ran 1 tests, skipped=1 (no test ran)"),
        ("Ran 2 tests in 0.000s\n\nOK (skipped=1)\n", None),
        ("running 1 test\ntest t ... ignored\n\ntest result: ok. 0 passed; 0 failed; 1 ignored; "
         "0 measured; 0 filtered out; finished in 0.00s\n",
         "test result: ok. 0 passed; 0 failed; 1 ignored (no test ran)"),
        ("running 2 tests\ntest result: ok. 1 passed; 0 failed; 1 ignored; 0 measured\n", None),
        ("[  PASSED  ] 0 tests.\n[  SKIPPED ] 1 test, listed below:\n",
         "[  SKIPPED ] 1 test (no test ran)"),
        ("[  PASSED  ] 0 tests.\n[  FAILED  ] 1 test, listed below:\n", None),
        ("12 iterations in 2.0s\n", None),
        ("Ran 12 tests in 0.3s\nOK\n", None),
        ("the word running 0 tests inside a line\n", None),
    ],
)  # fmt: skip
def test_a_runner_that_ran_no_test_is_told_apart(output: str, said: str | None) -> None:
    assert ran_no_test(output) == said


def test_a_test_pytest_run_parallel_ran_in_one_thread_ran_no_test() -> None:
    """A test marked thread_unsafe runs once, in one thread, under pytest-run-parallel:
    a race between threads cannot show, and such runs were clean (a commit that added
    the mark read as the fix). The lines are pytest-run-parallel 0.x's own."""
    command = "{python} -P -m pytest -q --parallel-threads=4 --iterations=2 t.py::test_u"
    none = "Collected 0 items to run in parallel\n.   [100%]\n1 passed in 0.13s\n"
    some = "Collected 1 items to run in parallel\n.·  [100%]\n2 passed in 0.20s\n"
    threads = parallel_threads_of(command.replace("{python}", "python3.13t"))
    assert threads == 4
    assert ran_no_test(none, threads) == (
        "pytest-run-parallel ran no test in parallel (marked thread_unsafe?)"
    )
    assert ran_no_test(some, threads) is None
    # Asked for one thread (the test makes its own): that line says nothing.
    assert ran_no_test(none, parallel_threads_of("pytest --parallel-threads=1 t.py")) is None
    assert ran_no_test(none, parallel_threads_of("pytest t.py")) is None
    verdict = classify(parse_log(""), 0, False, MATCHER, none, threads)
    assert verdict.outcome is Outcome.NO_TEST


def test_a_stress_whose_only_test_is_skipped_runs_no_test(tmp_path: Path) -> None:
    """Real pytest: the selected test is marked skip, as a commit that calls a racy
    test flaky does; every run is `no-test`, none is a clean run."""
    (tmp_path / "test_s.py").write_text(
        "import pytest\n@pytest.mark.skip(reason='flaky on CI')\ndef test_counter():\n    pass\n"
    )
    r = tmp_path / "r.yaml"
    command = f"{sys.executable} -m pytest -q -rs -p no:cacheprovider test_s.py"
    r.write_text(
        "name: skipped\n"
        f"reproducer: {{command: {json.dumps(command)}, cwd: {json.dumps(str(tmp_path))}}}\n"
        "target: {functions: [spin_bump]}\n"
    )
    out = tmp_path / "s.json"
    res = repro("stress", str(r), "-n", "2", "-j", "1", "--keep-going",
                "--runs-dir", str(tmp_path / "runs"), "--json-out", str(out))  # fmt: skip
    data = json.loads(out.read_text())
    assert data["outcomes"].get("no-test") == 2, res.stdout + res.stderr
    assert not data["outcomes"].get("clean")
    assert "1 skipped: flaky on CI (no test ran)" in " ".join(res.stdout.split()), res.stdout


def test_a_run_that_ran_no_test_is_invalid_but_a_target_report_still_wins(lost: Path) -> None:
    """A renamed test exits 0 with nothing to say: read as clean it was evidence that the
    race was gone, and a bisect named the rename as the fix."""
    nothing = "running 0 tests\n"
    verdict = classify(parse_log(""), 0, False, MATCHER, nothing)
    assert verdict.outcome is Outcome.NO_TEST and verdict.outcome.is_invalid
    assert verdict.detail == "running 0 tests"
    proc = run_tsan(lost, tsan_options="history_size=7")
    both = classify(parse_log(proc.stderr), 66, False, MATCHER, proc.stderr + nothing)
    assert both.outcome is Outcome.TARGET


@pytest.mark.parametrize(
    "output",
    [
        "<frozen importlib._bootstrap>:488: RuntimeWarning: The global interpreter lock (GIL) "
        "has been enabled to load module 'hitcount._hc', which has not declared that it can "
        "run safely without the GIL.\n",
        # pytest-run-parallel ends the session with its own words (exit 1: read as a crash).
        "ERROR: GIL was dynamically re-enabled during test collection to load module "
        "'hitcount._hc'. When running under a free-threaded interpreter ...\n",
        # pytest-run-parallel 0.10's, whole: it also says that no test ran (a run read
        # as no-test, whose hint sent the user to the test's name)
        "Collected 1 items to run in parallel\n\nno tests ran in 1.77s\n"
        "! _pytest.outcomes.Exit: GIL was dynamically re-enabled during test collection to "
        "load module 'hitcount._hc'. When running under a free-threaded interpreter with "
        "the GIL initially disabled, the test suite must not cause the GIL to be re-enabled "
        "at runtime. !\n",
    ],
)
def test_a_module_that_switched_the_gil_on_is_named(output: str) -> None:
    verdict = classify(parse_log(""), 1, False, MATCHER, output)
    assert verdict.outcome is Outcome.GIL_ENABLED and verdict.detail == "hitcount._hc"


def test_a_signal_caught_by_tsan_is_a_crash_whatever_the_exit_status(tmp_path: Path) -> None:
    """TSAN's handler prints the SEGV and exits 66 (or hangs until the timeout): a run
    cut short, not a miss and not a slow run; a target reported before it still counts."""
    prog = compile_c(PROGRAMS / "segv_after_race.c", tmp_path / "segv_after_race")
    proc = run_tsan(prog)
    assert proc.returncode == 66, proc.stderr
    parsed = parse_log(proc.stderr)
    assert parsed.reports and caught_signal(parsed) == "SEGV"
    verdict = classify(parsed, 66, False, MATCHER, proc.stderr)
    assert verdict.outcome is Outcome.CRASH and verdict.detail == "SEGV caught by TSAN"
    hung = classify(parsed, -9, True, MATCHER, proc.stderr)
    assert hung.outcome is Outcome.CRASH
    assert hung.detail == "SEGV caught by TSAN, then hung until the timeout"
    bump = Matcher(TargetRule(functions=("increment_counter",)))
    assert classify(parsed, 66, False, bump, proc.stderr).outcome is Outcome.TARGET
    # Only the DEADLYSIGNAL line, as when the handler hangs before it names the signal.
    deadly = parse_log("ThreadSanitizer:DEADLYSIGNAL\n")
    assert caught_signal(deadly) == "a fatal signal"
    assert classify(deadly, -9, True, MATCHER).outcome is Outcome.CRASH
    assert caught_signal(parse_log("")) is None


@pytest.mark.parametrize(
    ("exit_code", "outcome"),
    [(66, Outcome.OTHER), (1, Outcome.OTHER), (-11, Outcome.CRASH), (139, Outcome.CRASH),
     (134, Outcome.CRASH), (-6, Outcome.CRASH), (-9, Outcome.OTHER)],
)  # fmt: skip
def test_a_run_cut_short_by_a_signal_is_no_evidence_whatever_it_reported(
    tmp_path: Path, exit_code: int, outcome: Outcome
) -> None:
    """A run that segfaulted after another race's report was counted as a miss: it may
    never have reached the code that races. (-9: repro's own timeout kills so.)"""
    other = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "racy_counter")
    proc = run_tsan(other)
    parsed = parse_log(proc.stderr)
    assert parsed.reports
    assert classify(parsed, exit_code, False, MATCHER, proc.stderr).outcome is outcome


# Like a Rust extension's: only the entry points are exported (.dynsym survives a
# strip), and the racing code is in functions of the library's own.
STRIPPED_LIB = """
static long shared_count;
__attribute__((noinline)) static void bump_inside(void) { shared_count++; }
__attribute__((noinline)) static long peek_inside(void) { return shared_count; }
void bump_shared(void) { bump_inside(); }
long peek_shared(void) { return peek_inside(); }
"""
STRIPPED_MAIN = """
#include <pthread.h>
void bump_shared(void);
long peek_shared(void);
static void *bump(void *arg) { for (int i = 0; i < 1000; i++) bump_shared(); return arg; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, bump, 0);
    long seen = 0;
    for (int i = 0; i < 1000; i++) seen += peek_shared();
    pthread_join(t, 0);
    return seen < 0;
}
"""


def test_a_stripped_library_is_named_and_no_symbolizer_is_blamed(tmp_path: Path) -> None:
    """Sweep 16: cramjam's wheel, stripped by `[tool.maturin] strip = true`, gave frames
    `<null>` in its module only, and repro said to install the LLVM tools, which were
    there (CPython's frames in the same reports had names). A real library stripped
    after its TSAN build, beside a program with symbols."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    (tmp_path / "lib.c").write_text(STRIPPED_LIB)
    (tmp_path / "main.c").write_text(STRIPPED_MAIN)
    lib = tmp_path / "libshared.so"
    tsan = ["-fsanitize=thread", "-g", "-O1"]
    subprocess.run([gcc, *tsan, "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "lib.c")],
                   check=True)  # fmt: skip
    subprocess.run(["strip", "--strip-all", str(lib)], check=True)
    prog = tmp_path / "prog"
    subprocess.run([gcc, *tsan, "-o", str(prog), str(tmp_path / "main.c"), f"-L{tmp_path}",
                    "-lshared", f"-Wl,-rpath,{tmp_path}", "-pthread"], check=True)  # fmt: skip
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: stripped\n"
        f"reproducer: {{command: {json.dumps(str(prog))}, timeout: 20}}\n"
        "target: {functions: [bump_shared, peek_shared]}\n"
    )
    res = repro("stress", str(r), "-n", "3", "-j", "1", "--runs-dir", str(tmp_path / "runs"))
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said
    assert "the frames of libshared.so have none, while those of prog have" in said, said
    assert "a module was built without symbols" in said and "llvm" not in said.lower(), said
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = json.loads(repro("report", str(run_dir), "--format", "json").stdout)["status"]
    assert "built without symbols" in status["message"], status
