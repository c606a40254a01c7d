"""What one run showed: the outcome of a run, from its parsed logs and how it ended.

Pure: the runner does the I/O and hands the text here. The outcome is what the
stress loop counts and the bisect takes as evidence, so the one rule that matters
is that a run which *could not* have shown the target race is never called clean
or "other": a report whose frames are unsymbolized, a report cut short or missing
a stack, and a free-threaded run whose GIL was switched back on are each counted
apart, as invalid runs, and never decide anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from repro.tsan.model import Frame, ParsedLog, Report
from repro.tsan.parse import normalise_kind
from repro.tsan.signature import (
    DEFAULT_DROP,
    Signature,
    TargetRule,
    access_matches,
    is_runtime_frame,
    matches,
    normalise_function,
    signature_of,
    starts_inside_interpreter,
)


class Outcome(StrEnum):
    TARGET = "target"
    OTHER = "other"
    CLEAN = "clean"
    CRASH = "crash"
    TIMEOUT = "timeout"
    TSAN_FAILURE = "tsan-failure"
    UNSYMBOLIZED = "unsymbolized"
    GIL_ENABLED = "gil-enabled"
    INCOMPLETE = "incomplete"
    NO_TEST = "no-test"
    SOURCE_TREE = "source-tree"

    @property
    def is_evidence(self) -> bool:
        """Counts towards the rate: the run ran and TSAN could have shown the race."""
        return self in EVIDENCE

    @property
    def is_invalid(self) -> bool:
        """The run ran, but what it printed cannot show the target either way."""
        return self in INVALID


EVIDENCE = frozenset({Outcome.TARGET, Outcome.OTHER, Outcome.CLEAN})
INVALID = frozenset(
    {
        Outcome.UNSYMBOLIZED,
        Outcome.GIL_ENABLED,
        Outcome.INCOMPLETE,
        Outcome.NO_TEST,
        Outcome.SOURCE_TREE,
    }
)
# Invalid runs that every later run of the same build will repeat (no symbolizer, the
# package imported from its source tree, a module that turns the GIL back on): a stress
# stops at the first, unless told to keep going, rather than spend its runs on them.
STOP_A_STRESS = frozenset({Outcome.UNSYMBOLIZED, Outcome.SOURCE_TREE, Outcome.GIL_ENABLED})
FAILED = frozenset({Outcome.CRASH, Outcome.TIMEOUT, Outcome.TSAN_FAILURE})
# What to do about each kind of run that cannot count, said once.
INVALID_HINTS: dict[Outcome, str] = {
    Outcome.UNSYMBOLIZED: "TSAN could not name the frames: install the LLVM tools that match "
    "the compiler (e.g. apt-get install llvm-19 for clang-19) and see `repro doctor`",
    Outcome.GIL_ENABLED: "an extension switched the GIL back on; set PYTHON_GIL=0 in "
    "reproducer.env, or declare Py_mod_gil (Py_MOD_GIL_NOT_USED) in the module",
    Outcome.INCOMPLETE: "reports lacked a stack or were cut off; raise tsan.options."
    "history_size (the most is 7: --set 'tsan.options={history_size: 7}'; it costs memory "
    "and time)",
    Outcome.NO_TEST: "the test runner ran no test (renamed, moved or filtered out at this "
    "commit, or marked skip?): check the test the reproducer names (reproducer.command "
    "or reproducer.pytest.tests); the run's log is kept",
    Outcome.SOURCE_TREE: "the run imported the package from somewhere other than the wheel "
    "repro built (the checkout's source tree, which holds no compiled modules), so the code "
    "under test did not run: run it where the checkout is not on sys.path (python -P, "
    "pytest --import-mode=importlib, a reproducer.cwd outside the checkout, or pytest "
    "--pyargs pkg.tests)",
    Outcome.TSAN_FAILURE: "TSAN failed to start; run `repro doctor` (on kernels with "
    "vm.mmap_rnd_bits > 28: sysctl vm.mmap_rnd_bits=28, or run under setarch -R)",
}


def invalid_runs_kind(outcomes: Mapping[Outcome, int]) -> Outcome | None:
    """The reason most of a commit's invalid runs could not show the race, among those
    with a hint (a setting or a tool, not a missing test): None when there was none."""
    kinds = [o for o in INVALID_HINTS if o is not Outcome.NO_TEST and outcomes.get(o)]
    return max(kinds, key=lambda o: outcomes[o]) if kinds else None


def tsan_failure_hint(messages: Sequence[str]) -> str:
    """What to do about TSAN failing to start, from what it said: the kernel's memory
    layout is the usual cause, but not of "failed to read suppressions file", for
    which that advice sent a user to sysctl."""
    text = " ".join(messages)
    if "suppressions file" in text:
        return (
            "TSAN could not read the suppressions file it was given (TSAN_OPTIONS "
            "suppressions=, or the recipe's tsan.suppressions): name one that exists; "
            "a relative path is read from the run's directory"
        )
    if any(
        word in text
        for word in ("incorrect value", "Invalid value", "unknown flag", "in TSAN_OPTIONS")
    ):
        return "a TSAN_OPTIONS value is not one TSAN takes (yours, or the recipe's tsan.options)"
    return INVALID_HINTS[Outcome.TSAN_FAILURE]


# The order in which every table, summary and report lists outcomes.
ORDER: tuple[Outcome, ...] = tuple(Outcome)


@dataclass(frozen=True)
class Matcher:
    """The target rule with the signature settings of the recipe."""

    rule: TargetRule
    depth: int = 3
    drop: tuple[str, ...] = ()

    @property
    def all_drop(self) -> tuple[str, ...]:
        return (*DEFAULT_DROP, *self.drop)


@dataclass(frozen=True)
class Found:
    """One report of a run: its signature, and whether it is the target (computed once)."""

    signature: Signature
    target: bool
    inside_cpython: bool = False  # starts_inside_interpreter: a race of CPython's own code


@dataclass(frozen=True)
class Verdict:
    """One run's outcome and the facts behind it, ready to log."""

    outcome: Outcome
    target_reports: int
    found: tuple[Found, ...]  # one per report, in order
    detail: str | None = None  # why an invalid run is invalid (module, which report)

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(f.signature.id for f in self.found)


# --- what makes a report unusable ------------------------------------------------------

_UNKNOWN_FUNCTIONS = frozenset({"<null>", "??", ""})


def is_unsymbolized(report: Report) -> bool:
    """The top frame of some stack, once the TSAN runtime is left out, has no name.

    Only the top frame is asked: it is the one both the target rule and the
    signature read first, and an instrumented frame there with no name means the
    symbolizer could not read the binary (a clang N binary with LLVM < N's
    llvm-symbolizer prints ``#0 <null> <null> (prog+0x…)`` for every frame).
    """
    stacks = report.access_stacks() or [f for _, f in report.other_stacks[:1]]
    for stack in stacks:
        top = next((f for f in stack if not is_runtime_frame(f)), None)
        if top is not None and normalise_function(top.function) in _UNKNOWN_FUNCTIONS:
            return True
    return False


def unnamed_modules(reports: Sequence[Report]) -> tuple[list[str], list[str]]:
    """The modules whose top frames have no name in unsymbolized ``reports``, and the
    modules of any frame that has one: a module only in the first, beside names in
    the second, has no symbols of its own (a stripped wheel), whatever the symbolizer."""
    unnamed: dict[str, None] = {}
    named: dict[str, None] = {}
    for report in reports:
        for stack in report.access_stacks():
            top = next((f for f in stack if not is_runtime_frame(f)), None)
            if top is not None and normalise_function(top.function) in _UNKNOWN_FUNCTIONS:
                unnamed[_module_name(top)] = None
            for f in stack:
                known = normalise_function(f.function) not in _UNKNOWN_FUNCTIONS
                if f.module and known and not is_runtime_frame(f):
                    named[_module_name(f)] = None
    return list(unnamed), [m for m in named if m not in unnamed]


def _module_name(frame: Frame) -> str:
    return (frame.module or "?").rsplit("/", 1)[-1]


# The words of an unsymbolized run's detail when one module lacks its symbols: the
# advice is then to build it with them, not to install a symbolizer that works.
NO_SYMBOLS = "has no symbols"
NO_SYMBOLS_HINT = (
    "a module was built without symbols (stripped: `[tool.maturin] strip = true`, `-s` in "
    "LDFLAGS, or `strip` run on it); build it with them, since no symbolizer can name frames "
    "a binary has no symbols for"
)


def unsymbolized_detail(reports: Sequence[Report], of: int) -> str:
    """What an unsymbolized run's detail says: how many reports, and which module has
    no names where others have them."""
    said = f"{len(reports)} of {of} reports have no function names"
    unnamed, named = unnamed_modules(reports)
    if unnamed and named and "?" not in unnamed:
        said += (
            f": the frames of {', '.join(unnamed)} have none, while those of "
            f"{', '.join(named[:2])} have: {', '.join(unnamed)} {NO_SYMBOLS}"
        )
    return said


def invalid_hint(outcome: Outcome, details: str | Iterable[str] | None) -> str:
    """What to do about runs of ``outcome``, given their detail (one run's) or details
    (a summary's ``invalid``)."""
    said = [details] if isinstance(details, str) else list(details or ())
    if outcome is Outcome.UNSYMBOLIZED and any(NO_SYMBOLS in d for d in said):
        return NO_SYMBOLS_HINT
    return INVALID_HINTS[outcome]


def is_incomplete(report: Report) -> bool:
    """A race report without both stacks, or cut before its SUMMARY line.

    TSAN prints ``[failed to restore the stack]`` for the previous access when its
    history (``history_size``) no longer holds it; a killed process or a cut log
    leaves a report without its second access or its summary. Either way the
    report cannot say which race it is.
    """
    if report.summary is None:
        return True
    if normalise_kind(report.kind) not in ("data race", "heap-use-after-free"):
        return False
    return any(a is None or not a.stack for a in (report.current, report.previous))


def unreadable(report: Report) -> str | None:
    """Why ``report`` cannot name its race ("unsymbolized", "incomplete"), or None: the
    one order in which a stress run and `repro parse` ask."""
    if is_unsymbolized(report):
        return "unsymbolized"
    if is_incomplete(report):
        return "incomplete"
    return None


def could_be_target(report: Report, matcher: Matcher) -> bool:
    """Whether the parts of an incomplete report that survive agree with the target.

    A missing access is taken as one that might match: the report is then counted
    as incomplete. When a surviving access already contradicts the target (under
    ``accesses: each``), the report is some other race, whatever the missing part.
    """
    rule = matcher.rule
    if rule.kind is not None and normalise_kind(report.kind) != normalise_kind(rule.kind):
        return False
    present = [s for s in report.access_stacks() if s]
    if not present or rule.accesses != "each":
        return True
    return all(access_matches(stack, rule, matcher.all_drop) for stack in present)


# --- the GIL ----------------------------------------------------------------------------

_GIL_ENABLED = re.compile(
    r"The global interpreter lock \(GIL\) has been enabled to load module '([^']+)'"
    # pytest-run-parallel's own words, when it stops the session for it
    r"|GIL was dynamically re-enabled [^\n']*?to load module '([^']+)'"
)


def gil_enabled_modules(output: str) -> list[str]:
    """Modules that switched the GIL back on in a free-threaded interpreter.

    CPython prints this RuntimeWarning when an extension does not declare
    ``Py_mod_gil``; from then on the process runs with the GIL and the races
    under study cannot show.
    """
    seen: list[str] = []
    for m in _GIL_ENABLED.finditer(output):
        module = m.group(1) or m.group(2)
        if module not in seen:
            seen.append(module)
    return seen


# --- the package came from its source tree ---------------------------------------------

# What repro/standalone/sitecustomize.py writes at exit in a Python package's runs.
_IMPORTED_ELSEWHERE = re.compile(
    r"^repro: (\S+) was imported from (.+?), not from the package repro built \(.*\)\s*$",
    re.MULTILINE,
)


def imported_elsewhere(output: str) -> str | None:
    """Which built package a run imported from elsewhere, and from where, or None.

    The checkout's source tree holds no compiled modules: a package with a pure-Python
    fallback ran clean there because the code under test never ran, and a bisect read
    it as fixed.
    """
    m = _IMPORTED_ELSEWHERE.search(output)
    return f"imported {m.group(1)} from {m.group(2)}" if m else None


# --- a test runner that ran nothing ---------------------------------------------------

# What the common test runners print when they ran no test: a renamed or filtered-out
# test exits 0 (libtest, unittest before 3.12) or with a code of its own, and without
# this it reads as a clean run, evidence that the race is gone.
_LIBTEST_RUNNING = re.compile(r"^running (\d+) tests?\s*$", re.MULTILINE)
_RAN_NOTHING = re.compile(
    r"^(?:=+ )?no tests ran(?: in [\d.]+s)?(?: =+)?\s*$"  # pytest
    r"|^ERROR: not found: .*$"  # pytest, a node id that does not exist
    r"|^collected 0 items\s*$"  # pytest
    r"|^Ran 0 tests in [\d.]+s\s*$"  # unittest
    r"|^\[=+\] 0 tests from .*$"  # GoogleTest
    r"|^No tests were found!!!\s*$",  # ctest
    re.MULTILINE,
)


# The closing lines that count what ran; a run whose every such line counts nothing that
# ran (all skipped, deselected or ignored) tested nothing: a commit that marked the racy
# test skip ("flaky on CI", skipif free-threading) read as the fix at 0.99.
_PYTEST_TALLY = re.compile(
    r"^=*\s*(?P<parts>\d+ [a-z]+(?:, \d+ [a-z]+)*) in [\d.]+s(?: \([^)]*\))?\s*=*\s*$",
    re.MULTILINE,
)
_PYTEST_RAN = frozenset({"passed", "failed", "xfailed", "xpassed", "error", "errors"})
_PYTEST_NOT_RUN = frozenset({"skipped", "deselected"})
_UNITTEST_RAN = re.compile(r"^Ran (?P<n>\d+) tests? in [\d.]+s\s*$", re.MULTILINE)
_UNITTEST_END = re.compile(
    r"^(?:OK|FAILED) \((?P<parts>[^)]*)\)\s*$|^(?P<bare>OK|FAILED)\s*$", re.MULTILINE
)
_LIBTEST_RESULT = re.compile(
    r"^test result: \w+\. (?P<passed>\d+) passed; (?P<failed>\d+) failed; (?P<ignored>\d+) "
    r"ignored",
    re.MULTILINE,
)
_GTEST_PASSED = re.compile(r"^\[  PASSED  \] (?P<n>\d+) tests?\.", re.MULTILINE)
_GTEST_OTHER = re.compile(r"^\[  (?:FAILED|SKIPPED) \] (?P<n>\d+) tests?", re.MULTILINE)


def _pytest_skipped(output: str) -> str | None:
    tallies = list(_PYTEST_TALLY.finditer(output))
    counts = []
    for m in tallies:
        words = (part.split(" ", 1) for part in m.group("parts").split(", "))
        counts.append({w: int(n) for n, w in words})
    if not counts:
        return None
    for t in counts:
        if any(t.get(w) for w in _PYTEST_RAN) or not any(t.get(w) for w in _PYTEST_NOT_RUN):
            return None
    said = tallies[-1].group("parts")
    reason = _PYTEST_SKIP_REASON.search(output)
    # Why, where pytest says it (-rs, which the pytest reproducer passes): "4 skipped" sent
    # a user to the kept output, which said no more ("C Extension not available").
    return f"{said}: {reason.group(1).strip()}" if reason else said


# pytest's short summary of a skip, with -rs: "SKIPPED [4] pkg/test_x.py:12: why".
_PYTEST_SKIP_REASON = re.compile(r"^SKIPPED \[\d+\] [^\n]*?:\d+: ([^\n]+)$", re.MULTILINE)


def _unittest_skipped(output: str) -> str | None:
    ran = [int(m.group("n")) for m in _UNITTEST_RAN.finditer(output)]
    ends = list(_UNITTEST_END.finditer(output))
    if not ran or len(ends) != len(ran):
        return None
    for n, end in zip(ran, ends, strict=True):
        fields = dict(kv.partition("=")[::2] for kv in (end.group("parts") or "").split(", "))
        if n == 0 or fields.get("skipped") != str(n):
            return None
    return f"Ran {ran[-1]} tests, skipped={ran[-1]}"


def _libtest_ignored(output: str) -> str | None:
    results = list(_LIBTEST_RESULT.finditer(output))
    if not results or not any(int(m.group("ignored")) for m in results):
        return None
    if any(int(m.group("passed")) or int(m.group("failed")) for m in results):
        return None
    return results[-1].group(0)


def _gtest_skipped(output: str) -> str | None:
    passed = _GTEST_PASSED.findall(output)
    others = [m.group(0).strip() for m in _GTEST_OTHER.finditer(output)]
    if not passed or any(int(n) for n in passed) or not others:
        return None
    if any("FAILED" in o for o in others):
        return None
    return others[-1]


def _all_skipped(output: str) -> str | None:
    """The tally that says every selected test was skipped, deselected or ignored (a
    test runner that ran, but ran no test), or None."""
    for check in (_pytest_skipped, _unittest_skipped, _libtest_ignored, _gtest_skipped):
        said = check(output)
        if said is not None:
            return f"{said} (no test ran)"
    return None


# pytest-run-parallel says, once collection is done, how many tests it will run in
# threads; a test marked thread_unsafe (or using something it deems so) runs once, in
# one thread, where a race between threads cannot show.
_RUN_PARALLEL_NONE = re.compile(r"^Collected 0 items to run in parallel\s*$", re.MULTILINE)
_PARALLEL_THREADS = re.compile(r"--parallel-threads[= ]+(\d+)")


def parallel_threads_of(command: str) -> int:
    """The threads a pytest-run-parallel command asks for (0: none asked)."""
    found = _PARALLEL_THREADS.findall(command)
    return int(found[-1]) if found else 0


def ran_no_test(output: str, parallel_threads: int = 0) -> str | None:
    """The line that says a test runner ran no test, or None.

    libtest prints ``running N tests`` once per test binary (cargo test runs several:
    unit tests, integration tests, doc tests); only when every one of them ran none
    did the run test nothing. A run whose every test was skipped tested nothing too,
    and so did one that asked pytest-run-parallel for ``parallel_threads`` > 1 and
    got every test run in one thread (a commit that marked the test thread_unsafe
    read as the fix).
    """
    if parallel_threads > 1 and _RUN_PARALLEL_NONE.search(output):
        return "pytest-run-parallel ran no test in parallel (marked thread_unsafe?)"
    counts = _LIBTEST_RUNNING.findall(output)
    if counts and all(int(n) == 0 for n in counts):
        return "running 0 tests"
    m = _RAN_NOTHING.search(output)
    if m:
        return m.group(0).strip(" =\t\r\n")
    return _all_skipped(output)


# --- the outcome ------------------------------------------------------------------------

# A shell reports a child killed by signal N as 128 + N: SIGILL, SIGABRT, SIGBUS, SIGFPE,
# SIGSEGV. (SIGKILL and SIGTERM are left out: repro's own timeout sends them.)
_FATAL_SIGNALS = frozenset({4, 6, 7, 8, 11})


def died_of_a_signal(exit_code: int | None) -> bool:
    """Whether the process was killed by a fatal signal of its own (Popen's negative
    code, or a shell's 128 + N)."""
    if exit_code is None:
        return False
    if exit_code < 0:
        return -exit_code in _FATAL_SIGNALS
    return exit_code - 128 in _FATAL_SIGNALS


# TSAN's own handler of SIGSEGV and its kind names the signal so: "ERROR: ThreadSanitizer:
# SEGV on unknown address ..." (then it exits 66, the status of "races found"), or only
# "ThreadSanitizer:DEADLYSIGNAL" when it hangs on the way out.
_CAUGHT = re.compile(r"ThreadSanitizer: (?P<sig>[A-Z]+|stack-overflow)\b")
CAUGHT_BY_TSAN = "caught by TSAN"


def caught_signal(parsed: ParsedLog) -> str | None:
    """The fatal signal that TSAN's handler caught in this run (``"SEGV"``), or None.

    Such a run is a crash although the process exited 66, as a run that only reported
    races does, or was killed at the timeout while the handler hung: counted as a miss
    (exit 66, other races) or dropped as a timeout, it pushed the rate up.
    """
    lines = parsed.extra.get("crashes") or ()
    for line in lines:
        m = _CAUGHT.search(line)
        if m:
            return m.group("sig")
    return "a fatal signal" if lines else None


def classify(
    parsed: ParsedLog,
    exit_code: int | None,
    timed_out: bool,
    matcher: Matcher,
    output: str = "",
    parallel_threads: int = 0,
) -> Verdict:
    """The outcome of one run from what it printed and how it ended.

    A complete, symbolized target report is conclusive and wins over everything
    else. Then, in order: TSAN could not start; the package under test came from its
    source tree, not the built wheel; the test runner ran no test (a
    renamed or filtered-out test: not a clean run); a report nobody can read
    (unsymbolized); the GIL was switched on; a fatal signal that TSAN's handler caught
    (whatever the exit status, a hang at the timeout included); a report that might
    have been the target but was cut short; a timeout; a death by a fatal signal
    (whatever else it printed); other races; a crash; clean.
    """
    drop = matcher.all_drop
    found: list[Found] = []
    target = 0
    unsymbolized: list[int] = []
    incomplete: list[int] = []
    for i, report in enumerate(parsed.reports):
        hit = False
        # A report that cannot say which race it is has no signature: counted among
        # the other races it would read as one more distinct race ("? | f", or
        # "<null> | <null>"), where it may be the target itself.
        why = unreadable(report)
        if why == "unsymbolized":
            unsymbolized.append(i)
            continue
        if why == "incomplete":
            if could_be_target(report, matcher):
                incomplete.append(i)
                continue
        elif matches(report, matcher.rule, drop=drop):
            target += 1
            hit = True
        found.append(
            Found(
                signature_of(report, depth=matcher.depth, drop=drop),
                hit,
                starts_inside_interpreter(report, drop),
            )
        )
    sigs = tuple(found)
    gil = gil_enabled_modules(output)
    if target:
        return Verdict(Outcome.TARGET, target, sigs)
    if parsed.fatal:
        return Verdict(Outcome.TSAN_FAILURE, 0, sigs, parsed.fatal[0])
    elsewhere = imported_elsewhere(output)
    if elsewhere is not None:
        return Verdict(Outcome.SOURCE_TREE, 0, sigs, elsewhere)
    nothing = ran_no_test(output, parallel_threads)
    if nothing is not None and not gil:
        # pytest-run-parallel stops the session when a module turns the GIL back on:
        # no test ran, but the GIL is the cause to name.
        return Verdict(Outcome.NO_TEST, 0, sigs, nothing)
    if unsymbolized:
        unnamed = [parsed.reports[i] for i in unsymbolized]
        return Verdict(
            Outcome.UNSYMBOLIZED, 0, sigs, unsymbolized_detail(unnamed, len(parsed.reports))
        )
    if gil:
        return Verdict(Outcome.GIL_ENABLED, 0, sigs, ", ".join(gil))
    caught = caught_signal(parsed)
    if caught is not None:
        # Cut short as any crash is; a report it cut off is the crash's doing, and the
        # advice for a lost stack (history_size) would be wrong.
        then = ", then hung until the timeout" if timed_out else ""
        return Verdict(Outcome.CRASH, 0, sigs, f"{caught} {CAUGHT_BY_TSAN}{then}")
    if incomplete:
        return Verdict(
            Outcome.INCOMPLETE,
            0,
            sigs,
            f"{len(incomplete)} report(s) that could be the target lack a stack or were cut off",
        )
    if timed_out:
        return Verdict(Outcome.TIMEOUT, 0, sigs)
    if died_of_a_signal(exit_code):
        # Cut short (a segfault, an abort): it may not have reached the code that races,
        # so another race's report does not make it evidence that the target is absent.
        return Verdict(Outcome.CRASH, 0, sigs)
    if parsed.reports:
        return Verdict(Outcome.OTHER, 0, sigs)
    if exit_code not in (0, None):
        return Verdict(Outcome.CRASH, 0, sigs)
    return Verdict(Outcome.CLEAN, 0, sigs)


def is_target(report: Report, matcher: Matcher) -> bool:
    """A complete, readable report of the target race (the one rule for every caller)."""
    if is_unsymbolized(report) or is_incomplete(report):
        return False
    return matches(report, matcher.rule, drop=matcher.all_drop)
