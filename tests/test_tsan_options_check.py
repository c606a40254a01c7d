"""TSAN options that would make the counts wrong are refused before any run.

The matcher of suppression patterns is checked against real TSAN: the same file is
given to a compiled program with two races, and the target must be hidden exactly
when the check says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROGRAMS, repro

from repro.tsan import options, suppressions
from repro.tsan.parse import parse_log

TARGET = ["target_writer"]


def _run_with_suppressions(program: Path, sup: Path) -> str:
    env = {**os.environ, "TSAN_OPTIONS": f"suppressions={sup}"}
    res = subprocess.run([str(program)], env=env, capture_output=True, text=True, timeout=60)
    return res.stderr


@pytest.mark.parametrize(
    ("line", "files"),
    [
        ("race:target_writer", []),
        ("race:^target_w*", []),
        ("race:*_writer$", []),
        ("race:get_wri", []),
        ("race_top:target_writer", []),
        ("race:noise_writer", []),
        ("race:^writer", []),
        ("race:target_writer$x", []),
        ("thread:target_writer", []),
        ("mutex:target_writer", []),
        ("race:two_races.c", ["two_races.c"]),
        # a full path, as a user's suppressions file often has it
        (f"race:{PROGRAMS.resolve()}/two_races.c", ["two_races.c"]),
        (f"race:{PROGRAMS.resolve()}/two_races.c$", ["two_races.c"]),
        ("race:/elsewhere/other.c", ["two_races.c"]),
    ],
)
def test_the_check_agrees_with_tsan_on_what_a_suppression_hides(
    tmp_path: Path, tsan_bin: Path, line: str, files: list[str]
) -> None:
    sup = tmp_path / "sup.txt"
    sup.write_text(f"# a comment\n{line}\n")
    said = options.hidden_target(sup.read_text(), "data race", TARGET, files)
    printed = parse_log(_run_with_suppressions(tsan_bin / "two_races", sup))
    shown = any(
        "target_writer" in frame.function
        for report in printed.reports
        for access in (report.current, report.previous)
        if access is not None
        for frame in access.stack[:1]
    )
    if files and said:
        # A file pattern the target names stands for its frames; TSAN hides the
        # target (and the other race, from the same file).
        assert not shown, printed
        return
    assert shown == (not said), (line, said, printed.reports)


def test_report_bugs_off_and_halt_on_error_are_named() -> None:
    found = options.defeats_counting({"report_bugs": "false", "halt_on_error": "1"})
    assert [s for s, _ in found] == ["report_bugs=false", "halt_on_error=1"]
    assert options.defeats_counting({"report_bugs": "1", "halt_on_error": "no"}) == []
    assert options.defeats_counting({"halt_on_error": "maybe"}) == []  # TSAN refuses it itself


def test_patterns_anchor_and_wildcard_as_tsan_reads_them() -> None:
    assert suppressions.matches("^tq_", "tq_publish")
    assert not suppressions.matches("^publish", "tq_publish")
    assert suppressions.matches("publish$", "tq_publish")
    assert not suppressions.matches("tq$", "tq_publish")
    assert suppressions.matches("tq*lish", "tq_publish")
    assert suppressions.matches("tq_publish$x", "tq_publish")  # nothing after $ is read
    assert suppressions.matches("tq*$", "tq_publish")
    assert not suppressions.matches("t*h$", "tq_publish_b")  # no backtracking
    assert not suppressions.matches("x", "")
    # A glob target stands for names that hold its literal pieces.
    found = suppressions.hiding_target(suppressions.parse("race:tq_pub\n"), None, ["tq_p*"], [])
    assert found == []
    found = suppressions.hiding_target(suppressions.parse("race:tq_p\n"), None, ["tq_p*h"], [])
    assert [str(s) for s, _ in found] == ["race:tq_p"]


def _recipe(tmp_path: Path, program: Path, extra: str = "") -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(
        "name: t\n"
        f"reproducer:\n  command: {json.dumps(str(program))}\n  timeout: 30\n"
        f"target:\n  functions: {json.dumps(TARGET)}\n" + extra
    )
    return p


def test_a_users_suppressions_that_hide_the_target_are_refused_before_any_run(
    tmp_path: Path, tsan_bin: Path
) -> None:
    r = _recipe(tmp_path, tsan_bin / "two_races")
    hides = tmp_path / "hides.txt"
    hides.write_text("race:noise_writer\nrace:target_*\n")
    runs = tmp_path / "runs"
    res = repro(
        "stress", str(r), "--runs", "5", "--runs-dir", str(runs),
        env={"TSAN_OPTIONS": f"suppressions={hides}"},
    )  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr
    out = " ".join((res.stdout + res.stderr).split())
    assert "your environment's TSAN_OPTIONS" in out
    assert "line 2: race:target_* matches 'target_writer'" in out
    assert "env -u TSAN_OPTIONS" in out
    assert not runs.exists() or not any(runs.iterdir())

    # One that hides only the other race is taken, and the counts show it hidden.
    other = tmp_path / "other.txt"
    other.write_text("race:noise_writer\n")
    summary = tmp_path / "s.json"
    res = repro(
        "stress", str(r), "--runs", "4", "--runs-dir", str(runs), "--json-out", str(summary),
        env={"TSAN_OPTIONS": f"suppressions={other}"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(summary.read_text())
    assert data["hits"] == 4
    assert [s["target"] for s in data["signatures"]] == [True]


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ("report_bugs=0", "report_bugs=0: TSAN then prints no report"),
        ("verbosity=0:halt_on_error=true", "halt_on_error=true: a run then ends"),
        ("suppressions=/nonexistent/sup.txt", "no such file"),
        ("halt_on_error 1", "'halt_on_error', '1': not name=value"),
        ("abort_on_error=1", "abort_on_error=1: TSAN then aborts a run"),
        ("print_summary=0", "print_summary=0: reports then lack their SUMMARY line"),
        ("stack_trace_format='%f %p'", "stack_trace_format=%f %p: repro reads frames"),
        ("include=/tmp/elsewhere.txt", "include=/tmp/elsewhere.txt: the options in that file"),
    ],
)
def test_a_users_options_that_defeat_counting_are_refused(
    tmp_path: Path, tsan_bin: Path, env: str, said: str
) -> None:
    r = _recipe(tmp_path, tsan_bin / "two_races")
    res = repro("stress", str(r), "--runs", "3", env={"TSAN_OPTIONS": env})
    assert res.returncode == 2, res.stdout + res.stderr
    assert said in " ".join((res.stdout + res.stderr).split())


def test_the_recipe_may_overrule_the_users_option(tmp_path: Path, tsan_bin: Path) -> None:
    r = _recipe(tmp_path, tsan_bin / "two_races", "tsan:\n  options:\n    report_bugs: 1\n")
    res = repro(
        "stress", str(r), "--runs", "2", "--runs-dir", str(tmp_path / "runs"),
        env={"TSAN_OPTIONS": "report_bugs=0"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 of 2 runs hit the target race" in " ".join(res.stdout.split())


@pytest.mark.parametrize(
    ("extra", "field", "said"),
    [
        (
            "tsan:\n  options:\n    report_bugs: false\n",
            "tsan.options.report_bugs",
            "report_bugs=0",
        ),
        ("tsan:\n  options:\n    halt_on_error: 1\n", "tsan.options.halt_on_error", "ends"),
        (
            "extension:\n  repo: .\n  env: {TSAN_OPTIONS: 'print_summary=0'}\n",
            "extension.env.TSAN_OPTIONS",
            "SUMMARY line",
        ),
        ("tsan:\n  suppressions: sup.txt\n", "tsan.suppressions", "race:target_writer matches"),
        (
            "extension:\n  repo: .\n  env: {TSAN_OPTIONS: 'history_size=3 halt_on_error'}\n",
            "extension.env.TSAN_OPTIONS",
            "'halt_on_error': not name=value",
        ),
        (
            "tsan:\n  options:\n    suppressions: sup.txt\n",
            "tsan.options.suppressions",
            "race:target_writer matches",
        ),
    ],
)
def test_the_recipes_own_options_are_refused_with_file_line_and_field(
    tmp_path: Path, tsan_bin: Path, extra: str, field: str, said: str
) -> None:
    (tmp_path / "sup.txt").write_text("race:target_writer\n")
    r = _recipe(tmp_path, tsan_bin / "two_races", extra)
    line = r.read_text().splitlines().index(extra.splitlines()[-1]) + 1
    res = repro("stress", str(r), "--runs", "2")
    assert res.returncode == 2, res.stdout + res.stderr
    out = " ".join((res.stdout + res.stderr).split())
    assert f"{r}:{line}: {field}:" in out
    assert said in out


@pytest.mark.parametrize(
    ("env", "said", "not_said"),
    [
        ("suppressions=relative/none.supp", "could not read the suppressions file", "sysctl"),
        ("history_size=99", "a TSAN_OPTIONS value is not one TSAN takes", "sysctl"),
    ],
)
def test_tsan_that_cannot_start_is_told_why_from_what_it_said(
    tmp_path: Path, tsan_bin: Path, env: str, said: str, not_said: str
) -> None:
    """TSAN's start-up failures were all met with the kernel-layout advice (sysctl),
    which does not mend a missing suppressions file or a value out of range."""
    r = _recipe(tmp_path, tsan_bin / "two_races")
    res = repro(
        "stress", str(r), "--runs", "2", "--runs-dir", str(tmp_path / "runs"),
        env={"TSAN_OPTIONS": env},
    )  # fmt: skip
    out = " ".join((res.stdout + res.stderr).split())
    assert "outcomes: tsan-failure 2" in out, out
    assert said in out and not_said not in out, out


def test_options_are_read_and_written_as_tsan_reads_them() -> None:
    text = "a=1:b=2,c=3 d=\"x y\" e='p:q' stray"
    assert options.parse(text) == {"a": "1", "b": "2", "c": "3", "d": "x y", "e": "p:q"}
    assert options.stray_words(text) == ["stray"]
    opts = {"log_path": "/tmp/My Projects/a:b,c/tsan", "q": 'say "hi" now', "h": "7"}
    assert options.parse(options.to_string(opts)) == opts
    # A comma separates too: report_bugs=0 after one is seen and refused.
    said = options.defeats_counting(options.parse("history_size=3,report_bugs=0"))
    assert [s for s, _ in said] == ["report_bugs=0"]


def test_runs_from_a_directory_with_spaces_colons_and_commas_are_counted(
    tmp_path: Path, tsan_bin: Path
) -> None:
    """The run's log_path is inside the run directory; unquoted, a space in it made TSAN
    refuse its options ("expected '=' in TSAN_OPTIONS") and every run counted a crash."""
    where = tmp_path / "My Projects" / "a:b,c"
    where.mkdir(parents=True)
    r = _recipe(tmp_path, tsan_bin / "two_races")
    summary = where / "s.json"
    res = repro(
        "stress", str(r), "--runs", "3", "--runs-dir", str(where / "runs"),
        "--json-out", str(summary),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(summary.read_text())["hits"] == 3


def test_options_tsan_cannot_read_are_a_tsan_failure_not_a_crash() -> None:
    from repro.tsan.outcome import tsan_failure_hint

    parsed = parse_log("ThreadSanitizer: ERROR: expected '=' in TSAN_OPTIONS\n")
    assert parsed.fatal
    assert "TSAN_OPTIONS value" in tsan_failure_hint(list(parsed.fatal))


def test_runs_from_a_directory_whose_name_is_not_utf8(tmp_path: Path, tsan_bin: Path) -> None:
    """A byte of another locale in the directory's name raised UnicodeEncodeError (exit
    3, a traceback) once the reproducer had started."""
    where = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    where.mkdir()
    r = _recipe(tmp_path, tsan_bin / "two_races")
    res = subprocess.run(
        [sys.executable, "-m", "repro", "stress", str(r), "--runs", "2"],
        cwd=where, capture_output=True, text=True, errors="replace", timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "2 of 2 runs hit the target race" in " ".join(res.stdout.split())


def test_reports_a_suppression_hid_are_counted_and_said(tmp_path: Path, tsan_bin: Path) -> None:
    """A suppression that matches the target through another frame (here its caller,
    t2) passes the static check, and every run read as clean: 0% with nothing said.
    TSAN is asked which suppressions matched (print_suppressions=1), and the end says
    how many reports they hid, on the console, in the JSON and in the report."""
    sup = tmp_path / "sup.txt"
    sup.write_text("race:t2\n")
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: t\n"
        f"reproducer: {{command: {json.dumps(str(tsan_bin / 'two_races'))}}}\n"
        "target: {functions: [target_writer]}\n"
        f"tsan: {{suppressions: {json.dumps(str(sup))}}}\n"
    )
    out = tmp_path / "s.json"
    runs = tmp_path / "runs"
    res = repro("stress", str(r), "-n", "3", "-j", "1", "--runs-dir", str(runs),
                "--json-out", str(out))  # fmt: skip
    said = " ".join(res.stdout.split())
    data = json.loads(out.read_text())
    assert data["hits"] == 0 and data["runs"] == 3, said
    assert data["suppressed"] == {"runs": 3, "reports": 6, "by": {"race:t2": 6}}
    assert "suppressions hid 6 reports in 3 of 3 runs (race:t2 x6)" in said, said
    report = repro("report", str(next(runs.iterdir())))
    text = " ".join(report.stdout.split())
    assert "| Suppressed |" in report.stdout and "hid 6 reports in 3 of 3 runs" in text
    # Without a suppression nothing is said.
    r.write_text(r.read_text().replace(f"tsan: {{suppressions: {json.dumps(str(sup))}}}\n", ""))
    res = repro("stress", str(r), "-n", "1", "-j", "1", "--runs-dir", str(tmp_path / "r2"),
                "--json-out", str(out))  # fmt: skip
    assert json.loads(out.read_text())["suppressed"]["reports"] == 0
    assert "suppressions hid" not in res.stdout


def test_a_suggested_suppression_hides_a_race_between_cython_functions(
    tmp_path: Path, tsan_bin: Path
) -> None:
    """Sweep 18: the report suggested `race_top:` of repro's normalised names
    (`__pyx_f_frozenlist__frozenlist_FrozenList__check_frozen`), which are no substring
    of the names TSAN matches (`__pyx_f_10frozenlist_11_...`): pasted into a suppressions
    file they hid nothing."""
    from repro.report.tsantext import suppression_lines, suppression_sites
    from repro.tsan.signature import DEFAULT_DROP, normalise_function

    program = tsan_bin / "cython_names"
    none = tmp_path / "none.txt"
    none.write_text("")
    shown = [r for _ in range(5) for r in parse_log(_run_with_suppressions(program, none)).reports]
    assert shown, "the program's race did not show"
    sites = suppression_sites(shown[0], DEFAULT_DROP)
    assert sites is not None
    lines = suppression_lines([[f] for f in sites.functions], ["why"], sites.kind)
    sup = tmp_path / "sup.txt"
    sup.write_text("\n".join(lines) + "\n")
    for _ in range(5):
        assert not parse_log(_run_with_suppressions(program, sup)).reports, lines
    # The normalised names, as suggested before, hide nothing.
    old = tmp_path / "old.txt"
    old.write_text("".join(f"{sites.kind}:{normalise_function(f)}\n" for f in sites.functions))
    assert parse_log(_run_with_suppressions(program, old)).reports, old.read_text()
