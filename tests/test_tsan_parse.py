"""Parsing real TSAN output (gcc's libtsan, LLVM's runtime via clang and rustc).

The stored logs in tests/data/tsan were produced by the programs in
tests/tsan_programs; the live tests compile and run those programs again, so a
change in the runtimes' output format shows up here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tsan_helpers import (
    C_COMPILERS,
    PROGRAMS,
    TsanBuilder,
    marker_line,
    run_and_parse,
    run_tsan,
    stored_log,
    tsan_builder,
)

from repro.tsan.model import Frame, ParsedLog, Report
from repro.tsan.parse import clean_line, normalise_kind, parse_frame, parse_log
from repro.tsan.signature import significant_frames

COMPILER_TAGS = {"gcc": "gcc", "clang-19": "clang"}


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> TsanBuilder:
    return tsan_builder(tmp_path_factory)


def src(program: str) -> Path:
    return PROGRAMS / f"{program}.c"


def top(stack: tuple[Frame, ...]) -> Frame:
    frames = significant_frames(stack)
    assert frames, f"no significant frame in {stack}"
    return frames[0]


def assert_at(frame: Frame, function: str, program: str, marker: str) -> None:
    assert frame.function == function
    assert frame.file is not None and Path(frame.file).name == f"{program}.c"
    assert frame.line == marker_line(src(program), marker)


def stack_labelled(report: Report, prefix: str) -> tuple[Frame, ...]:
    found = [frames for label, frames in report.other_stacks if label.startswith(prefix)]
    assert found, f"no stack labelled {prefix!r} in {[lab for lab, _ in report.other_stacks]}"
    return found[0]


# --- what each program must produce, checked on stored and on live output ------------------------


def check_racy_counter(log: ParsedLog) -> None:
    assert log.fatal == ()
    assert log.reported_warnings == 1
    (r,) = log.reports
    assert r.kind == "data race"
    assert r.current is not None and r.previous is not None
    # Which side reads depends on the runtime (gcc: read, clang: write), never on luck.
    assert r.current.op in ("read", "write")
    assert r.previous.op == "write"
    assert not r.current.atomic and not r.previous.atomic
    assert r.current.size == r.previous.size == 4
    assert r.current.thread == "T2" and r.previous.thread == "T1"
    assert r.current.previous is False and r.previous.previous is True
    assert r.current.mutexes == () and r.previous.mutexes == ()
    for access in (r.current, r.previous):
        assert_at(access.stack[0], "increment_counter", "racy_counter", "RACE: counter")
    assert [f.function for f in r.previous.stack] == [
        "increment_counter",
        "worker",
        "first_worker",
    ]
    assert r.location == "global 'counter' of size 4"
    assert r.summary is not None
    assert r.summary.startswith("data race ") and r.summary.endswith(" in increment_counter")
    assert "racy_counter.c:" in r.summary
    labels = [label for label, _ in r.other_stacks]
    assert labels == ["Thread T2 created by main thread at", "Thread T1 created by main thread at"]
    assert top(r.other_stacks[0][1]).function == "main"
    assert r.raw.startswith("WARNING: ThreadSanitizer: data race (pid=")
    assert r.raw.rstrip().endswith("in increment_counter")
    assert r.pid is not None and f"(pid={r.pid})" in r.raw


def check_atomic_plain(log: ParsedLog) -> None:
    (r,) = log.reports
    assert r.kind == "data race"
    assert r.current is not None and r.previous is not None
    assert (r.current.op, r.current.atomic) == ("read", False)
    assert (r.previous.op, r.previous.atomic) == ("write", True)
    assert_at(r.current.stack[0], "plain_reader", "atomic_plain", "MIXED: plain load")
    assert_at(r.previous.stack[0], "atomic_writer", "atomic_plain", "MIXED: atomic store")
    assert r.location == "global 'flag' of size 4"


def check_half_locked(log: ParsedLog) -> None:
    (r,) = log.reports
    assert r.current is not None and r.previous is not None
    assert r.current.mutexes == ()
    assert r.previous.mutexes == ("write M0",)
    assert_at(r.current.stack[0], "peek_balance", "half_locked", "UNLOCKED: read")
    assert_at(r.previous.stack[0], "deposit", "half_locked", "LOCKED: write")
    created = stack_labelled(r, "Mutex M0 created at")
    assert created[0].function == "pthread_mutex_init"
    assert_at(top(created), "main", "half_locked", "MUTEX: init")


def check_use_after_free(log: ParsedLog) -> None:
    (r,) = log.reports
    assert r.kind == "heap-use-after-free"
    assert r.current is not None and r.previous is not None
    # current = the use, previous = the free
    assert (r.current.op, r.current.thread) == ("write", "main thread")
    assert (r.previous.op, r.previous.thread) == ("free", "T1")
    assert_at(r.current.stack[0], "use_buffer", "use_after_free", "UAF: use")
    assert r.previous.stack[0].function == "free"
    assert_at(top(r.previous.stack), "release_buffer", "use_after_free", "UAF: free")


def check_lock_order(log: ParsedLog) -> None:
    (r,) = log.reports
    assert r.kind == "lock-order-inversion"
    assert r.current is None and r.previous is None
    first = stack_labelled(r, "Mutex M1 acquired here while holding mutex M0 in thread T1")
    second = stack_labelled(r, "Mutex M0 acquired here while holding mutex M1 in thread T2")
    assert first[0].function == "pthread_mutex_lock"
    assert_at(top(first), "lock_a_then_b", "lock_order", "ORDER: b after a")
    assert_at(top(second), "lock_b_then_a", "lock_order", "ORDER: a after b")
    assert r.summary is not None and r.summary.startswith(
        "lock-order-inversion (potential deadlock)"
    )


def check_thread_leak(log: ParsedLog) -> None:
    (r,) = log.reports
    assert r.kind == "thread leak"
    assert r.current is None and r.location is None
    (label, frames) = r.other_stacks[0]
    assert label == "Thread T1 created by main thread at"
    assert frames[0].function == "pthread_create"
    assert_at(top(frames), "spawn_and_forget", "thread_leak", "LEAK: create")


def check_signal_unsafe(log: ParsedLog) -> None:
    assert log.reported_warnings == 2
    malloc_report, free_report = log.reports
    for r, callee in ((malloc_report, "malloc"), (free_report, "free")):
        assert r.kind == "signal-unsafe call"
        assert r.current is None
        ((label, frames),) = r.other_stacks
        assert label == "stack"
        assert frames[0].function == callee
        assert top(frames).function == "on_signal"
    assert_at(top(malloc_report.other_stacks[0][1]), "on_signal", "signal_unsafe", "UNSAFE: malloc")


CHECKS = {
    "racy_counter": check_racy_counter,
    "atomic_plain": check_atomic_plain,
    "half_locked": check_half_locked,
    "use_after_free": check_use_after_free,
    "lock_order": check_lock_order,
    "thread_leak": check_thread_leak,
    "signal_unsafe": check_signal_unsafe,
}


@pytest.mark.parametrize("tag", ["gcc", "clang"])
@pytest.mark.parametrize("program", sorted(CHECKS))
def test_stored_logs(program: str, tag: str) -> None:
    CHECKS[program](parse_log(stored_log(f"{tag}-{program}.log")))


@pytest.mark.parametrize("compiler", C_COMPILERS)
@pytest.mark.parametrize("program", sorted(CHECKS))
def test_live_programs(builder: TsanBuilder, program: str, compiler: str) -> None:
    proc, log = run_and_parse(builder.c(program, compiler))
    assert proc.returncode == 66, proc.stderr
    CHECKS[program](log)


@pytest.mark.parametrize("compiler", C_COMPILERS)
def test_race_free_program_is_silent(builder: TsanBuilder, compiler: str) -> None:
    proc, log = run_and_parse(builder.c("race_free", compiler))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "counter=2000"
    assert log == ParsedLog()


def test_gcc_and_clang_frame_formats() -> None:
    gcc = parse_log(stored_log("gcc-racy_counter.log")).reports[0]
    clang = parse_log(stored_log("clang-racy_counter.log")).reports[0]
    assert gcc.current is not None and clang.current is not None
    g, c = gcc.current.stack[0], clang.current.stack[0]
    assert g.column is None and c.column is not None and c.column > 0
    assert g.module == "racy_counter" and c.module == "racy_counter"
    assert g.offset is not None and g.offset.startswith("0x")
    # gcc's interceptors live in libtsan.so with a source file; clang's are linked in,
    # unsymbolised to a file
    g_create = gcc.other_stacks[0][1][0]
    c_create = clang.other_stacks[0][1][0]
    assert (g_create.function, g_create.module) == ("pthread_create", "libtsan.so.2")
    assert g_create.file is not None and g_create.file.endswith("tsan_interceptors_posix.cpp")
    assert (c_create.function, c_create.file, c_create.module) == (
        "pthread_create",
        None,
        "racy_counter",
    )


# --- Rust ----------------------------------------------------------------------------------------


TEST_FN = "pyo3::pycell::impl_::tests::test_thread_safety_2"


def test_pyo3_log() -> None:
    log = parse_log(stored_log("pyo3-borrowflag-racy.log"))
    assert log.fatal == ()
    assert log.reported_warnings == 8
    assert len(log.reports) == 8
    assert {r.pid for r in log.reports} == {4758}
    first = log.reports[0]
    assert first.current is not None and first.previous is not None
    assert (first.current.op, first.current.thread, first.current.size) == ("read", "T3", 4)
    assert (first.previous.op, first.previous.thread) == ("write", "T2")
    f0 = first.current.stack[0]
    assert f0.function == f"{TEST_FN}::{{closure#0}}::{{closure#1}}"
    assert (f0.file, f0.line, f0.column) == ("/tmp/trial/pyo3/src/pycell/impl_.rs", 608, 45)
    assert (f0.module, f0.offset) == ("pyo3-3692162ebbd19c42", "0x5430ca")
    # a frame whose "file" is a codegen unit, with no line
    rust_try = first.current.stack[5]
    assert rust_try.function == "__rust_try"
    assert (rust_try.file, rust_try.line) == ("ayw4k8ecg19n2za8fx63u3bqc", None)
    # names with spaces, generics and "as" survive whole
    assert first.current.stack[10].function == (
        "<alloc::boxed::Box<dyn core::ops::function::FnOnce<(), Output = ()> + "
        "core::marker::Send> as core::ops::function::FnOnce<()>>::call_once"
    )
    assert first.location == "stack of thread T1"
    assert [label for label, _ in first.other_stacks] == [
        "Thread T3 created by thread T1 at",
        "Thread T2 created by thread T1 at",
        "Thread T1 'pycell::impl_::' created by main thread at",
    ]
    last = log.reports[-1]
    assert last.location == "heap block of size 9680 allocated by thread T1"
    assert last.other_stacks[0][0] == "Location is heap block of size 9680 allocated by thread T1"
    assert last.other_stacks[0][1][0].function == "calloc"
    atomic_prev = log.reports[1].previous
    assert atomic_prev is not None and atomic_prev.atomic and atomic_prev.op == "write"


def test_live_rust_program(builder: TsanBuilder) -> None:
    binary = builder.rust("racy")
    proc, log = run_and_parse(binary)
    assert proc.returncode == 66
    # std is not instrumented: expect its reports too, and find ours among them
    ours = [
        r
        for r in log.reports
        if r.current is not None
        and any(f.function == "racy::load_value" for f in r.current.stack[:3])
    ]
    assert len(ours) == 1, [r.summary for r in log.reports]
    (r,) = ours
    assert r.previous is not None
    assert r.current is not None and r.current.op == "read" and r.previous.op == "write"
    rs = PROGRAMS / "racy.rs"
    load = next(f for f in r.current.stack if f.function == "racy::load_value")
    store = next(f for f in r.previous.stack if f.function == "racy::store_value")
    assert load.file == str(rs) and load.line == marker_line(rs, "RACE: read")
    assert store.file == str(rs) and store.line == marker_line(rs, "RACE: write")
    assert log.reported_warnings == len(log.reports)


# --- frames --------------------------------------------------------------------------------------

FRAME_CASES = [
    (
        "foo /src/a.c:12:5 (prog+0x1234)",
        Frame(0, "foo", "/src/a.c", 12, 5, "prog", "0x1234"),
    ),
    ("foo a.c:12 (prog+0x1234)", Frame(0, "foo", "a.c", 12, None, "prog", "0x1234")),
    ("foo <null> (libfoo.so+0xabc)", Frame(0, "foo", None, None, None, "libfoo.so", "0xabc")),
    ("<null> <null> (libfoo.so+0xabc)", Frame(0, "<null>", None, None, None, "libfoo.so", "0xabc")),
    (
        "bar /x/y.c:3:1 (b+0x10) (BuildId: 0123abcd)",
        Frame(0, "bar", "/x/y.c", 3, 1, "b", "0x10"),
    ),
    ("baz (0x7f0011223344)", Frame(0, "baz", None, None, None, None, "0x7f0011223344")),
    ("qux <null> (<unknown module>)", Frame(0, "qux", None, None, None, None, None)),
    ("0x4a1b2c in main /t/m.c:7:3 (m+0x4a1b2c)", Frame(0, "main", "/t/m.c", 7, 3, "m", "0x4a1b2c")),
    (
        "std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (*)(int), int> > >"
        "::_M_run() /usr/include/c++/12/bits/std_thread.h:211 (t+0x2a)",
        Frame(
            0,
            "std::thread::_State_impl<std::thread::_Invoker<std::tuple<void (*)(int), int> > >"
            "::_M_run()",
            "/usr/include/c++/12/bits/std_thread.h",
            211,
            None,
            "t",
            "0x2a",
        ),
    ),
    (
        "foo(int) [clone .constprop.0] /a/f.cc:9 (libstdc++.so.6+0x99)",
        Frame(0, "foo(int) [clone .constprop.0]", "/a/f.cc", 9, None, "libstdc++.so.6", "0x99"),
    ),
    (
        "mycrate::run::{{closure}}::h0123456789abcdef src/lib.rs:4:9 (t-1+0x5)",
        Frame(0, "mycrate::run::{{closure}}::h0123456789abcdef", "src/lib.rs", 4, 9, "t-1", "0x5"),
    ),
    ("only_a_name", Frame(0, "only_a_name")),
    ("", Frame(0, "<null>")),
]


@pytest.mark.parametrize(("text", "expected"), FRAME_CASES)
def test_parse_frame(text: str, expected: Frame) -> None:
    assert parse_frame(0, text) == expected


def test_frame_lines_inside_a_report() -> None:
    text = "\n".join(
        [
            "WARNING: ThreadSanitizer: data race (pid=7)",
            "  Write of size 8 at 0x7b0400000010 by thread T1 (mutexes: write M1, read M2):",
            "    #0 set_ob_shash Objects/bytesobject.c:60:5 (python3.13t+0x1a2b3c)",
            "    #1 bytes_hash Objects/bytesobject.c:1640 (python3.13t+0x1a2c00)",
            "    #2 <null> <null> (libffi.so.8+0x7e3)",
            "  Previous atomic read of size 8 at 0x7b0400000010 by main thread:",
            "    [failed to restore the stack]",
            "",
            "SUMMARY: ThreadSanitizer: data race Objects/bytesobject.c:60 in set_ob_shash",
        ]
    )
    (r,) = parse_log(text).reports
    assert r.current is not None and r.previous is not None
    assert r.current.mutexes == ("write M1", "read M2")
    assert r.current.size == 8 and r.current.thread == "T1"
    assert [f.index for f in r.current.stack] == [0, 1, 2]
    assert r.current.stack[1].line == 1640
    assert (r.previous.op, r.previous.atomic, r.previous.thread) == ("read", True, "main thread")
    assert r.previous.stack == ()
    assert r.summary == "data race Objects/bytesobject.c:60 in set_ob_shash"


# --- kinds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "kind"),
    [
        ("data race", "data race"),
        ("heap-use-after-free", "heap-use-after-free"),
        ("lock-order-inversion (potential deadlock)", "lock-order-inversion"),
        ("thread leak", "thread leak"),
        ("signal-unsafe call inside of a signal", "signal-unsafe call"),
        ("signal handler spoils errno", "signal handler spoils errno"),
        ("destroy of a locked mutex", "destroy of a locked mutex"),
        ("unlock of an unlocked mutex (or by a wrong thread)", "unlock of an unlocked mutex"),
        ("double lock of a mutex", "double lock"),
        ("use of an invalid mutex (e.g. uninitialized or destroyed)", "use of an invalid mutex"),
        ("read lock of a write locked mutex", "read lock of a write locked mutex"),
        (
            "data race on vptr (ctor/dtor vs virtual call)",
            "data race on vptr (ctor/dtor vs virtual call)",
        ),
    ],
)
def test_kinds(printed: str, kind: str) -> None:
    assert normalise_kind(printed) == kind
    log = parse_log(f"WARNING: ThreadSanitizer: {printed} (pid=12)\n    #0 f a.c:1 (a+0x1)\n")
    (r,) = log.reports
    assert (r.kind, r.pid) == (kind, 12)


def test_errno_and_unnamed_stacks() -> None:
    text = "\n".join(
        [
            "==================",
            "WARNING: ThreadSanitizer: signal handler spoils errno (pid=5)",
            "  Signal 10 handler invoked at:",
            "    #0 handler /t/s.c:8 (s+0x10)",
            "    #1 main /t/s.c:20 (s+0x20)",
            "",
            "SUMMARY: ThreadSanitizer: signal handler spoils errno /t/s.c:8 in handler",
            "==================",
            "WARNING: ThreadSanitizer: destroy of a locked mutex (pid=5)",
            "    #0 pthread_mutex_destroy <null> (s+0x30)",
            "    #1 main /t/s.c:30 (s+0x40)",
            "  and:",
            "    #0 pthread_mutex_lock <null> (s+0x50)",
            "    #1 main /t/s.c:29 (s+0x60)",
            "  Mutex M1 (0x7ffc0) created at:",
            "    #0 pthread_mutex_init <null> (s+0x70)",
            "    #1 main /t/s.c:28 (s+0x80)",
            "",
            "SUMMARY: ThreadSanitizer: destroy of a locked mutex /t/s.c:30 in main",
        ]
    )
    errno_report, destroy = parse_log(text).reports
    assert errno_report.other_stacks[0][0] == "Signal 10 handler invoked at"
    assert [label for label, _ in destroy.other_stacks] == ["stack", "stack", "Mutex M1 created at"]
    assert [f.line for f in destroy.other_stacks[1][1]] == [None, 29]


# --- robustness ----------------------------------------------------------------------------------


def comparable(log: ParsedLog) -> list[dict[str, object]]:
    return [r.to_json() for r in log.reports]


REAL_LOGS = [
    "gcc-racy_counter.log",
    "clang-lock_order.log",
    "gcc-signal_unsafe.log",
    "clang-use_after_free.log",
    "pyo3-borrowflag-racy.log",
]


@pytest.mark.parametrize("name", REAL_LOGS)
def test_ci_timestamps_pid_prefixes_colours_and_crlf(name: str) -> None:
    text = stored_log(name)
    plain = parse_log(text)
    stamped = "".join(
        f"2024-12-20T10:11:{i % 60:02d}.{i:07d}Z {line}\r\n"
        for i, line in enumerate(text.splitlines())
    )
    assert comparable(parse_log(stamped)) == comparable(plain)
    assert parse_log(stamped).reported_warnings == plain.reported_warnings
    coloured = text.replace("WARNING:", "\x1b[1m\x1b[31mWARNING:").replace(
        "  Read", "\x1b[1m  Read"
    )
    coloured = coloured.replace("\n", "\x1b[0m\n")
    assert comparable(parse_log(coloured)) == comparable(plain)
    prefixed = "".join(f"==4242== {line}\n" for line in text.splitlines())
    assert [r.kind for r in parse_log(prefixed).reports] == [r.kind for r in plain.reports]


def blocks(text: str) -> list[str]:
    """A log cut at its report separators, the pieces keeping their lines."""
    out: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        current.append(line)
        if line.startswith("SUMMARY: ThreadSanitizer") or line.startswith(
            "ThreadSanitizer: reported"
        ):
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def test_interleaved_processes() -> None:
    names = ["gcc-racy_counter.log", "clang-signal_unsafe.log", "pyo3-borrowflag-racy.log"]
    pieces = [blocks(stored_log(n)) for n in names]
    garbage = [
        "tests/test_x.py::test_threads PASSED                                  [ 50%]",
        "counter=2000",
        "E   assert 1 == 2",
    ]
    mixed: list[str] = []
    i = 0
    while any(pieces):
        for p in pieces:
            if p:
                mixed.append(p.pop(0))
                mixed.append(garbage[i % len(garbage)])
                i += 1
    log = parse_log("\n".join(mixed))
    singles = [parse_log(stored_log(n)) for n in names]
    assert len(log.reports) == sum(len(s.reports) for s in singles) == 1 + 2 + 8
    assert log.reported_warnings == 1 + 2 + 8
    for single in singles:
        pid = single.reports[0].pid
        mine = [r.to_json() for r in log.reports if r.pid == pid]
        assert mine == comparable(single)
    assert len({r.pid for r in log.reports}) == 3


def test_report_on_a_line_after_program_output() -> None:
    text = stored_log("gcc-atomic_plain.log").replace(
        "==================\nWARNING", "flag=1==================\nprefix WARNING", 1
    )
    check_atomic_plain(parse_log(text))


def test_truncated_at_every_line() -> None:
    lines = stored_log("gcc-racy_counter.log").splitlines()
    full = parse_log("\n".join(lines)).reports[0]
    warning_at = next(i for i, line in enumerate(lines) if line.startswith("WARNING"))
    for cut in range(len(lines) + 1):
        log = parse_log("\n".join(lines[:cut]))
        if cut <= warning_at:
            assert log.reports == ()
            continue
        (r,) = log.reports
        assert r.kind == "data race" and r.pid == full.pid
        if r.summary is None:
            assert r.raw == "\n".join(lines[warning_at:cut]).strip("\n")
        else:
            assert r == full
        if r.current is not None:
            assert full.current is not None
            assert r.current.stack == full.current.stack[: len(r.current.stack)]


def test_truncated_mid_line() -> None:
    text = stored_log("clang-racy_counter.log")
    cut = text.index("(BuildId:", text.index("Previous write")) + 4
    (r,) = parse_log(text[:cut]).reports
    assert r.summary is None and r.previous is not None
    assert r.previous.stack[0].function == "increment_counter"
    assert r.previous.stack[0].line == marker_line(src("racy_counter"), "RACE: counter")


def test_new_warning_closes_an_unfinished_report() -> None:
    a = stored_log("gcc-racy_counter.log").splitlines()
    b = stored_log("gcc-thread_leak.log")
    cut = next(i for i, line in enumerate(a) if "Previous write" in line)
    log = parse_log("\n".join(a[:cut]) + "\n" + b)
    assert [r.kind for r in log.reports] == ["data race", "thread leak"]
    assert log.reports[0].previous is None and log.reports[0].summary is None
    check_thread_leak(ParsedLog(reports=log.reports[1:]))


# --- TSAN failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        (
            "gcc-startup-failure.log",
            "ThreadSanitizer: CHECK failed: sanitizer_allocator_primary64",
        ),
        ("clang-startup-failure.log", "ERROR: ThreadSanitizer setrlimit() failed"),
    ],
)
def test_stored_startup_failures(name: str, needle: str) -> None:
    log = parse_log(stored_log(name))
    assert log.reports == ()
    assert log.tsan_failed
    assert any(f.startswith(needle) for f in log.fatal), log.fatal
    assert log.reported_warnings is None


@pytest.mark.parametrize("compiler", C_COMPILERS)
def test_live_startup_failure_is_not_a_race(builder: TsanBuilder, compiler: str) -> None:
    proc = run_tsan(builder.c("racy_counter", compiler), address_space_limit=2_000_000_000)
    log = parse_log(proc.stderr)
    assert log.reports == () and log.tsan_failed, proc.stderr
    assert proc.returncode != 0  # 66 (clang) or a crash (gcc): the code alone would mislead


def test_synthetic_fatal_messages() -> None:
    text = "\n".join(
        [
            "2024-12-20T10:11:12.1234567Z FATAL: ThreadSanitizer: unexpected memory mapping"
            " 0x7f4f2b000000-0x7f4f2b400000",
            "==99==ThreadSanitizer: CHECK failed: tsan_platform_linux.cpp:282 "
            '"((personality(old_personality | ADDR_NO_RANDOMIZE))) != ((-1))" (0xffffffffffffffff,'
            " 0xffffffffffffffff) (tid=99)",
            "==98==ERROR: ThreadSanitizer failed to allocate 0x3000 (12288) bytes at address"
            " 0x7b0000000000 (errno: 12)",
            "ThreadSanitizer: out of memory: allocator is trying to allocate 0x10000000000 bytes",
            "ThreadSanitizer: main thread finished with ignores enabled, created at:",
            "==97==ERROR: ThreadSanitizer: SEGV on unknown address 0x000000000000 (pc 0x1 T0)",
            "ThreadSanitizer:DEADLYSIGNAL",
            "ThreadSanitizer: memory layout is incompatible, possibly due to high-entropy ASLR.",
            "Re-execing with fixed virtual address space.",
        ]
    )
    log = parse_log(text)
    assert log.reports == ()
    assert log.fatal == (
        "FATAL: ThreadSanitizer: unexpected memory mapping 0x7f4f2b000000-0x7f4f2b400000",
        'ThreadSanitizer: CHECK failed: tsan_platform_linux.cpp:282 "((personality(old_personality'
        ' | ADDR_NO_RANDOMIZE))) != ((-1))" (0xffffffffffffffff, 0xffffffffffffffff) (tid=99)',
        "ERROR: ThreadSanitizer failed to allocate 0x3000 (12288) bytes at address 0x7b0000000000"
        " (errno: 12)",
        "ThreadSanitizer: out of memory: allocator is trying to allocate 0x10000000000 bytes",
        "ThreadSanitizer: main thread finished with ignores enabled, created at:",
    )
    assert log.extra["crashes"] == (
        "ERROR: ThreadSanitizer: SEGV on unknown address 0x000000000000 (pc 0x1 T0)",
        "ThreadSanitizer:DEADLYSIGNAL",
    )
    assert len(log.extra["notices"]) == 2


def test_fatal_among_reports_and_warning_counts_are_summed() -> None:
    text = "\n".join(
        [
            stored_log("gcc-racy_counter.log"),
            "FATAL: ThreadSanitizer: unexpected memory mapping 0x7f0000000000-0x7f0000001000",
            stored_log("clang-signal_unsafe.log"),
        ]
    )
    log = parse_log(text)
    assert len(log.reports) == 3 and len(log.fatal) == 1
    assert log.reported_warnings == 3


# --- properties ----------------------------------------------------------------------------------

TSANISH = st.sampled_from(
    [
        "WARNING: ThreadSanitizer: data race (pid=1)",
        "WARNING: ThreadSanitizer: ",
        "  Read of size 4 at 0x1 by thread T1:",
        "  Previous write of size 8 at 0x2 by main thread (mutexes: write M1):",
        "    #0 f a.c:1:2 (a+0x1)",
        "    #1 <null> <null> (a+0x2) (BuildId: ab)",
        "    #3 ",
        "#",
        "  Location is global 'x' of size 4 at 0x3 (a+0x3)",
        "  Location is heap block of size 4 at 0x4 allocated by thread T2:",
        "  Mutex M1 (0x5) created at:",
        "  and:",
        "SUMMARY: ThreadSanitizer: data race a.c:1 in f",
        "==================",
        "ThreadSanitizer: reported 2 warnings",
        "ThreadSanitizer: reported 99999999999999999999 warnings",
        "FATAL: ThreadSanitizer: unexpected memory mapping",
        "2024-12-20T10:11:12.1234567Z ",
        "==1==",
        "\x1b[1m",
        "\r",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(TSANISH, st.text(max_size=40)), max_size=40))
def test_parse_never_raises(pieces: list[str]) -> None:
    log = parse_log("\n".join(pieces))
    assert isinstance(log, ParsedLog)
    for r in log.reports:
        assert r.raw.count("WARNING: ThreadSanitizer") == 1
        r.to_json()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parse_never_raises_on_any_text(text: str) -> None:
    assert isinstance(parse_log(text), ParsedLog)


NOISE = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters=" .,-"),
    max_size=60,
)


PYO3_PLAIN = parse_log(stored_log("pyo3-borrowflag-racy.log"))


@settings(max_examples=25, deadline=None)
@given(st.lists(NOISE, min_size=3, max_size=3))
def test_noise_between_reports_changes_nothing(noise: list[str]) -> None:
    parts = blocks(stored_log("pyo3-borrowflag-racy.log"))
    noisy = "\n".join(part + "\n" + noise[i % len(noise)] for i, part in enumerate(parts))
    log = parse_log(noisy)
    assert comparable(log) == comparable(PYO3_PLAIN)
    assert log.fatal == ()


def test_clean_line() -> None:
    assert clean_line("2024-12-20T10:11:12.1234567Z   Read of size 4") == "  Read of size 4"
    assert clean_line("==1234==WARNING: x\r") == "WARNING: x"
    assert clean_line("\x1b[1m\x1b[31mWARNING: x\x1b[0m") == "WARNING: x"
    assert clean_line("[2024-12-20 10:11:12,345] #0 f") == "#0 f"
    assert clean_line("    #0 f a.c:1") == "    #0 f a.c:1"


def test_every_report_kind_and_pid_in_raw() -> None:
    for name in REAL_LOGS:
        for r in parse_log(stored_log(name)).reports:
            m = re.match(r"WARNING: ThreadSanitizer: (.*) \(pid=(\d+)\)", r.raw)
            assert m is not None
            assert normalise_kind(m.group(1)) == r.kind and int(m.group(2)) == r.pid


# --- the program's own output around a report ------------------------------------------


def _sig(report: Report) -> list[list[str]]:
    return [[f.function for f in a.stack] for a in (report.current, report.previous) if a]


def test_program_output_inside_a_report_is_not_part_of_it() -> None:
    """A thread that prints "status:" (a line ending in a colon, like TSAN's headers) or
    "#1 Heading" (like a frame) while TSAN writes a report: neither is TSAN's."""
    clean = parse_log(stored_log("gcc-racy_counter.log")).reports[0]
    noisy = []
    for line in stored_log("gcc-racy_counter.log").splitlines():
        noisy.append(line)
        if line.rstrip().endswith(":"):
            noisy += ["worker 3 status:", "#1 Heading printed by the program"]
    parsed = parse_log("\n".join(noisy))
    assert len(parsed.reports) == 1
    assert _sig(parsed.reports[0]) == _sig(clean) and _sig(clean)
    assert len(parsed.reports[0].other_stacks) == len(clean.other_stacks)


def test_a_report_in_pytest_failure_lines() -> None:
    """pytest quotes a subprocess's stderr in its "E   " lines (and a diff's "E     + "):
    the report in them is read, columns kept; the assertion's one-line repr of the same
    text (with its \\n's) is no report, and no kind made of a whole line."""
    log = stored_log("gcc-racy_counter.log").splitlines()
    clean = parse_log("\n".join(log)).reports[0]
    quoted = ["E       AssertionError: assert '" + "\\n".join(log[:6]) + "' == ''"]
    quoted += ["E         + " + line for line in log]
    parsed = parse_log("\n".join(quoted))
    assert [r.kind for r in parsed.reports] == ["data race"]
    assert _sig(parsed.reports[0]) == _sig(clean)


def test_an_option_out_of_range_is_a_tsan_failure(builder: TsanBuilder) -> None:
    """gcc's runtime refuses history_size above 7 and runs nothing: a TSAN failure, which
    stress reports as such, not as a crash."""
    proc = run_tsan(builder.c("racy_counter"), tsan_options="history_size=9")
    parsed = parse_log(proc.stderr)
    if "incorrect value" not in proc.stderr:
        pytest.skip(f"this runtime takes history_size=9: {proc.stderr[:200]}")
    assert parsed.fatal and "history_size" in parsed.fatal[0]
