"""TSAN reports made readable for someone who did not run them.

A raw report is mostly noise to a reader: interceptor and thread start-up frames,
and paths into repro's build cache that are 120 characters long and meaningless on
any other machine. What stays is what a maintainer needs to recognise the race:
the two accesses, their stacks in the project's own files, the location, the
summary. Frame numbers are kept as TSAN printed them, so a gap shows where frames
were hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from repro.tsan.model import Access, Frame, Report
from repro.tsan.parse import parse_frame
from repro.tsan.signature import (
    function_template,
    is_glibc_frame,
    is_interpreter_frame,
    is_library_frame,
    is_rust_std_frame,
    normalise_function,
    significant_frames,
)

# What is hidden from a displayed report: the sanitizer runtime and the plumbing that
# starts threads. Unlike signatures, libc functions (memcpy, malloc) stay: in a
# displayed stack they say what the code was doing.
HIDDEN_FRAMES: tuple[str, ...] = (
    "__tsan_*",
    "__tsan::*",
    "__interceptor_*",
    "___interceptor_*",
    "__sanitizer*",
    "libtsan.so*",
    "*/libsanitizer/*",
    "*compiler-rt/lib/*",
    "*tsan_interceptors*",
    "*sanitizer_common_interceptors*",
    "_start",
    "__libc_start*",
    "start_thread",
    "clone",
    "clone3",
    "__clone*",
    "std::sys::*",
    "std::rt::*",
    "std::panicking::*",
    "std::panic::*",
    "core::ops::function::*",
    "<core::panic::unwind_safe::*",
    "__rust_try*",
    "*__rust_begin_short_backtrace*",
    "<std::thread::*",
    "<std::sys::*",
)

_FRAME_LINE = re.compile(r"^(?P<indent>\s*)#(?P<index>\d+)\s+(?P<rest>.*)$")
# Paths into repro's cache (an extension worktree is <cache>/builds/<sha256>/src, a
# CPython tree <cache>/trees/cpython-<hex>/src): the reader wants the path inside the
# project, which is what follows.
_CACHE_TREE = re.compile(r"(?:/[^\s:()'\"]*)?/(?:[0-9a-f]{32,}|cpython-[0-9a-f]{8,})/src/")
_CARGO_REGISTRY = re.compile(r"(?:/[^\s:()'\"]*)?/\.cargo/registry/src/[^/\s]+/")
_RUSTC_SRC = re.compile(r"/rustc/([0-9a-f]{9})[0-9a-f]{31}/")
_SANITIZER_SRC = re.compile(r"(?:\.\./)+src/libsanitizer/")
_ABS_PATH = re.compile(r"(?<![\w.~])/(?:[^\s:()'\"/]+/){4,}[^\s:()'\"/]+")
# The toolchain's build id after each frame: the same on every line of a binary, and
# 60 characters that say nothing to a reader (146 of them made a PyO3 report too long).
_BUILD_ID = re.compile(r"\s*\(BuildId: [0-9a-fA-F]*\)")

MAX_LINES = 160
MAX_FRAMES = 12


def shorten_paths(text: str, roots: Iterable[str] = ()) -> str:
    """Paths shown relative to the project where possible, else cut to their tail.

    ``roots`` are directories (e.g. the worktree the reproducer ran in) whose
    prefix is removed outright; cache trees are recognised by their shape.
    """
    for root in sorted({r.rstrip("/") for r in roots if r and len(r) > 1}, key=len, reverse=True):
        text = text.replace(root + "/", "")
    text = _CACHE_TREE.sub("", text)
    text = _CARGO_REGISTRY.sub("", text)
    text = _RUSTC_SRC.sub(r"/rustc/\1/", text)
    text = _SANITIZER_SRC.sub("libsanitizer/", text)

    def tail(m: re.Match[str]) -> str:
        path = m.group(0)
        # Kept whole: /rustc/<hash>/library/std/... says "Rust's std", which the
        # report uses to tell races inside uninstrumented code (see noise_module).
        if len(path) <= 60 or path.startswith("/rustc/"):
            return path
        return ".../" + "/".join(path.split("/")[-3:])

    return _ABS_PATH.sub(tail, text)


def is_hidden(frame: Frame, extra: Sequence[str] = ()) -> bool:
    return not significant_frames((frame,), (*HIDDEN_FRAMES, *extra))


def trim_report(
    raw: str,
    roots: Iterable[str] = (),
    extra_hidden: Sequence[str] = (),
    max_frames: int = MAX_FRAMES,
) -> str:
    """The report text without runtime frames, with short paths, at most MAX_LINES.

    Each stack keeps its first ``max_frames`` shown frames: the top of a stack says
    where the race is; the bottom of an interpreter's stack (the eval loop, thread
    start-up) is the same for every race and would bury it.
    """
    out: list[str] = []
    shown = cut = 0
    indent = ""

    def flush_cut() -> None:
        nonlocal cut
        if cut:
            out.append(f"{indent}... ({cut} more frames)")
            cut = 0

    for line in _BUILD_ID.sub("", raw).splitlines():
        m = _FRAME_LINE.match(line)
        if not m:
            flush_cut()
            shown = 0
            out.append(line.rstrip())
            continue
        if is_hidden(parse_frame(int(m.group("index")), m.group("rest")), extra_hidden):
            continue
        if shown >= max_frames:
            cut += 1
            indent = m.group("indent")
            continue
        shown += 1
        out.append(line.rstrip())
    flush_cut()
    # Blank runs left behind by hidden sections collapse to one line.
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")
    lines = shorten_paths(text, roots).splitlines()
    if len(lines) > MAX_LINES:
        hidden = len(lines) - MAX_LINES
        lines = [*lines[:MAX_LINES], f"    ... ({hidden} more lines in the run directory's log)"]
    return "\n".join(lines)


# Code that a TSAN build of the project does not instrument: TSAN sees neither its
# accesses nor its synchronisation, so races reported where the project's code meets
# it (thread spawn and join, Arc drops, the test harness's channels) are false
# positives. Rust's standard library ships precompiled without TSAN unless it is
# rebuilt with -Zbuild-std; glibc never is.
RUST_STD = "Rust's standard library (std, core, alloc, test)"
GLIBC = "glibc"
LIBPYTHON = "CPython (libpython), built without TSAN"
NOISE_FIX = {
    RUST_STD: "to check them, rebuild std with TSAN (cargo -Zbuild-std)",
    GLIBC: "suppress them if they get in the way",
    LIBPYTHON: "to check them, use a CPython configured --with-thread-sanitizer",
}
# An access counts as inside a module when its first frames all are: a race whose
# top frame is an inlined std generic (core::ptr::read_volatile) called from the
# project's own code is the project's race, not noise.
NOISE_DEPTH = 3


def frame_module(frame: Frame, python_tsan: bool | None = None) -> str | None:
    """The uninstrumented module a frame is in (RUST_STD, GLIBC, LIBPYTHON), if any.

    libpython only counts when the run is known to have used a CPython without
    TSAN: with a TSAN CPython its frames are instrumented like the project's.
    """
    if is_rust_std_frame(frame):
        return RUST_STD
    if is_glibc_frame(frame):
        return GLIBC
    if python_tsan is False and is_interpreter_frame(frame):
        return LIBPYTHON
    return None


def python_tsan(doc: Mapping[str, Any]) -> bool | None:
    """Whether a report document's run used a CPython with TSAN (None: not recorded),
    which decides whether libpython's frames count as uninstrumented."""
    py = ((doc.get("environment") or {}).get("snapshot") or {}).get("cpython") or {}
    return bool(py["tsan"]) if isinstance(py, Mapping) and "tsan" in py else None


def noise_note(module: str, count: int | None = None) -> str:
    """Why races inside ``module`` are expected noise, the same words in every format."""
    who = "This race is" if count is None else f"{count} of these races are"
    if count is not None and count == 1:
        who = "1 of these races is"
    return (
        f"{who} inside {module}, which this build does not instrument: TSAN sees neither "
        "its accesses nor its synchronisation, so races reported inside it are expected "
        f"noise rather than bugs in the project; {NOISE_FIX[module]}."
    )


def _accesses(report: Report) -> list[Access]:
    """The report's two accesses that have a stack (a lock-order report has none)."""
    return [a for a in (report.current, report.previous) if a is not None and a.stack]


def noise_module(text: str, python_tsan: bool | None = None) -> str | None:
    """The uninstrumented module that every access of a (trimmed) report is inside.

    None when any access reaches the project's own code within NOISE_DEPTH frames,
    or when the text has no parsed accesses (a lock-order report, a thread leak).
    """
    from repro.tsan.parse import parse_log

    reports = parse_log(text).reports
    if not reports:
        return None
    return report_noise_module(reports[0], python_tsan)


def first_not_noise(reports: Iterable[Report | None]) -> int | None:
    """The index of the first report not wholly inside uninstrumented code (None: every
    one is, or none could be read); the reports are asked lazily, in order."""
    for i, report in enumerate(reports):
        if report is not None and report_noise_module(report) is None:
            return i
    return None


def report_noise_module(report: Report, python_tsan: bool | None = None) -> str | None:
    """``noise_module`` of a parsed report."""
    accesses = _accesses(report)
    if not accesses:
        return None
    found: set[str | None] = set()
    for access in accesses:
        frames = significant_frames(access.stack, HIDDEN_FRAMES)[:NOISE_DEPTH]
        modules = {
            None if _inlined_into_own(f, access.stack) else frame_module(f, python_tsan)
            for f in frames
        }
        if len(modules) != 1:
            return None
        found |= modules
    return found.pop() if len(found) == 1 else None


def _inlined_into_own(frame: Frame, stack: Sequence[Frame]) -> bool:
    """A library's frame at the address of a frame of the project's own: code inlined
    into it, compiled with the project's flags (TSAN's), so no uninstrumented noise.
    cramjam's `<[u8]>::copy_from_slice` in its `PythonBuffer::write` (one address, five
    frames) was called a race inside Rust's std, of the bug its bisect had just found."""
    if not frame.module or not frame.offset:
        return False
    return any(
        f.module == frame.module and f.offset == frame.offset and frame_module(f) is None
        for f in stack
    )


def _starts_in_interpreter(text: str, drop: Sequence[str]) -> bool | None:
    """Whether every access of a (trimmed) report starts inside CPython; None when the
    text has no parsed accesses (a lock-order report, a thread leak)."""
    from repro.tsan.parse import parse_log
    from repro.tsan.signature import starts_outside_interpreter

    reports = parse_log(text).reports
    if not reports or not _accesses(reports[0]):
        return None
    return not starts_outside_interpreter(reports[0], drop)


def symptom_flags(
    doc: Mapping[str, Any], others: Sequence[Mapping[str, Any]], drop: Sequence[str]
) -> list[bool]:
    """For each of ``others``: a race wholly inside CPython beside a target that starts in
    the extension's code, which the target's race may cause.

    A ringlite run showed six such races beside its one bug (an object published half
    made races later in the reference counts of the threads that use it): listed bare,
    they read as CPython bugs to report. Only with a CPython that has TSAN; without,
    its races are uninstrumented noise (``noise_note``) whatever the target. Nor one
    that showed in a run without the target: at frozenlist's fixed commits, CPython's
    string interning raced as it did beside the target (sweep 18), and the note told
    the user to fix the target first. ``drop``: the run's frames to skip
    (``RunFiles.drop``), as the target's suggestion reads them.
    """
    t = doc.get("target") or {}
    if python_tsan(doc) is False or not t.get("report"):
        return [False] * len(others)
    if _starts_in_interpreter(str(t["report"]), drop) is not False:
        return [False] * len(others)
    return [
        bool(o.get("report"))
        and not o.get("runs_without_target")
        and _starts_in_interpreter(str(o["report"]), drop) is True
        for o in others
    ]


def symptom_note(count: int) -> str:
    """Why races inside CPython may be the target's doing, the same words in every format."""
    who = "1 of these races starts" if count == 1 else f"{count} of these races start"
    return (
        f"{who} inside CPython, while the target starts in the extension's code. A race "
        "in an extension makes races inside CPython too: an object published before it "
        "is complete races later in the reference counts (Py_INCREF) and fields of the "
        "threads that use it. Fix the target first and run again; these may go with it."
    )


def _top(stack: Sequence[Frame]) -> Frame | None:
    """The frame that names an access: its first shown frame that is not a library's
    (a wrapper such as ``_Py_atomic_store_ptr_release`` names its caller), else its first."""
    frames = significant_frames(stack, HIDDEN_FRAMES)
    own = next((f for f in frames if not is_library_frame(f)), None)
    return own or (frames[0] if frames else (stack[0] if stack else None))


def race_site(report: Report) -> tuple[str | None, str | None]:
    """(function, file name) that names a race in a title.

    Which access TSAN calls "current" changes from run to run, so naming the race
    after it would give the same race different titles. An access in the extension's
    code wins over one inside CPython (the title of a multidict race named CPython's
    list store); then the writer, which is stable (a read/write race always has the
    same writer); between equals, the alphabetically first function.
    """
    accesses = _accesses(report)
    candidates: list[tuple[bool, int, str, Frame]] = []
    for a in accesses:
        top = _top(a.stack)
        if top is None:
            continue
        rank = 0 if a.op in ("write", "free") and not a.atomic else 1
        inside = is_interpreter_frame(top)
        candidates.append((inside, rank, normalise_function(top.function), top))
    if not candidates:
        stacks = [frames for _, frames in report.other_stacks if frames]
        top = _top(stacks[0]) if stacks else None
        if top is None:
            return None, None
        candidates.append((False, 0, normalise_function(top.function), top))
    *_, name, frame = min(candidates, key=lambda c: c[:3])
    file = frame.file.rsplit("/", 1)[-1] if frame.file else None
    return name, file


@dataclass(frozen=True)
class Suppression:
    """What a suppressions file should name: ``race_top`` (the top frame only) or ``race``
    (any frame of either stack), and the functions as TSAN printed them (TSAN matches
    the printed names, not repro's normalised ones)."""

    kind: str
    functions: list[str]


def suppression_sites(report: Report, drop: Sequence[str]) -> Suppression | None:
    """The entries that should hide ``report``, or None to take the signature's tops.

    TSAN hides a report when the top frame of either access matches, so one access is
    enough: the extension's, where it has one, and never a library's or a wrapper's
    (``race_top:_Py_atomic_store_ptr_release`` hid every release store in CPython).
    When every access starts in a library (Rust's ``Cursor::seek`` under cramjam's
    buffer), ``race_top`` of it hid that race in every crate of the process: the first
    frame of one's own code, anywhere in a stack, is named under ``race:`` instead; so
    too when no access that ``race_top`` can name (its frame #0 is no interceptor)
    starts in the project's own code outside CPython. A race wholly inside CPython is
    named by CPython's frames.
    """
    pairs = [(a, fs) for a in _accesses(report) if (fs := significant_frames(a.stack, drop))]
    stacks = [fs for _, fs in pairs]
    tops = [fs[0] for fs in stacks]
    if not tops:
        return None
    # race_top matches frame #0 as TSAN printed it: below an interceptor there
    # (`__tsan_memcpy`) it matched nothing, and the race went on showing in 6 of 12 runs.
    named = [fs[0] for a, fs in pairs if a.stack[0] is fs[0]]
    own = [f for f in named if not is_library_frame(f)]
    outside = [f for f in own if not is_interpreter_frame(f)]
    if outside:
        return Suppression("race_top", [f.function for f in outside])
    for frames in stacks:
        mine = next(
            (f for f in frames if not is_library_frame(f) and not is_interpreter_frame(f)), None
        )
        if mine is not None:
            return Suppression("race", [mine.function])
    return Suppression("race_top", [f.function for f in own or tops])


def suppression_pattern(function: str) -> str:
    """A function name (as TSAN printed it, or normalised) as a TSAN suppression
    template that matches it on any build (``function_template``)."""
    return function_template(function)


def suppression_lines(
    top_frames: Sequence[Sequence[str]], comment: Sequence[str], kind: str = "race_top"
) -> list[str]:
    """``race_top:`` lines for the top frame of each access, CPython's file format.

    ``race_top`` is the narrowest entry TSAN has: it only hides reports whose top
    frame is that function, so unrelated races deeper in the same code still show.
    Both accesses get a line because either may be the one TSAN reports first.
    ``kind`` "race" names a frame below a library's (``suppression_sites``).
    """
    lines = [f"# {c}" if c else "#" for c in comment]
    seen: list[str] = []
    for frames in top_frames:
        if frames:
            pat = suppression_pattern(frames[0])
            if pat and pat not in seen:
                seen.append(pat)
    lines += [f"{kind}:{p}" for p in sorted(seen)]
    return lines
