"""Turn ThreadSanitizer output into Report objects.

The text we get is rarely a clean TSAN log: it is the stderr of many processes
(pytest workers, subprocesses), CI logs with a timestamp on every line, logs cut
off by a timeout, with program output in between. So the parser is a forgiving
line-by-line state machine: it recognises the lines TSAN prints and ignores the
rest, and it never raises on any input.

Runtime failures of TSAN itself (it could not map its shadow memory, a CHECK
failed, ...) exit with the same status as "races found", so they are reported
separately in ``ParsedLog.fatal`` and must never be mistaken for races.

Logs can be huge (a CI job that printed a quarter of a million reports), so the
state machine takes one line at a time (``LogScanner``), ``read_reports`` streams
reports from a file, and what any one line, report or message list can hold is
bounded: memory does not grow with the size of the log.

The format is that of the sanitizer runtime shared by gcc (libtsan) and LLVM
(clang, Rust): the report layout of tsan_report.cpp and the default stack frame
format ``    #%n %f %S %M``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from repro.tsan.model import Access, Frame, ParsedLog, Report

__all__ = [
    "KNOWN_KINDS",
    "LogScanner",
    "clean_line",
    "normalise_kind",
    "parse_frame",
    "parse_log",
    "read_lines",
    "read_reports",
]

# --- bounds: TSAN's own output stays far below them -------------------------------------------

MAX_LINE = 64 * 1024  # characters kept of one line (the rest of it is dropped)
MAX_REPORT_LINES = 2000  # lines kept in Report.raw
MAX_FRAMES = 512  # frames of one stack (TSAN prints at most 255)
MAX_SECTIONS = 256  # stacks of one report
MAX_MESSAGES = 1000  # fatal, crash and notice lines kept per log

# --- line prefixes added by whatever captured the output --------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# GitHub Actions ("2024-12-20T10:11:12.1234567Z "), other CI systems and log collectors
# ("[2024-12-20 10:11:12,123] ", "2024-12-20T10:11:12+01:00 ").
_TIMESTAMP = re.compile(
    r"^\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]? ?"
)
_PID_PREFIX = re.compile(r"^==\d+==")
# pytest's failure lines ("E   " and, in a diff, "E     + "): the text after them keeps
# its columns, so the "E" and the diff mark become spaces.
_PYTEST_E = re.compile(r"^E(?P<pad> +)(?:[+-] )?")

# --- report structure --------------------------------------------------------------------------

# A kind is a few words (with parentheses and slashes: "unlock of an unlocked mutex (or
# by a wrong thread)"); a line that quotes a report inside a string (an assertion's repr,
# with its "\n"s) has quotes and backslashes after the colon, and is no report.
_WARNING = re.compile(
    r"WARNING: ThreadSanitizer:\s*(?P<kind>[^\\'\"]{0,120}?)(?: \(pid=(?P<pid>\d+)\))?\s*$"
)
_SUMMARY = re.compile(r"SUMMARY: ThreadSanitizer: (?P<text>.*?)\s*$")
_REPORTED = re.compile(r"ThreadSanitizer: reported (?P<n>\d+) warnings?")
_SEPARATOR = re.compile(r"^={10,}$")
_FRAME = re.compile(r"^#(?P<index>\d+)\s+(?P<rest>.*)$")
_ACCESS = re.compile(
    r"^(?P<prev>previous )?(?P<atomic>atomic )?(?P<op>read|write) of size (?P<size>\d+)"
    r" at \S+ by (?P<thread>.+?)(?: \(mutexes: (?P<mutexes>[^)]*)\))?:$",
    re.IGNORECASE,
)
# Races on "external" objects (annotated via __tsan_external_*): no size.
_EXTERNAL_ACCESS = re.compile(
    r"^(?P<prev>previous )?(?P<mode>modifying|read-only) access of .+? at \S+"
    r" by (?P<thread>.+?)(?: \(mutexes: (?P<mutexes>[^)]*)\))?:$",
    re.IGNORECASE,
)
_LOOKS_LIKE_A_FRAME = re.compile(r"\+0x[0-9a-fA-F]+\)|\(BuildId: |<null>|\.\w+:\d+")
_LOCATION = re.compile(r"^Location is (?P<rest>.*)$")
_FAILED_STACK = "[failed to restore the stack]"

# --- addresses and other per-run noise in headers ----------------------------------------------

_ADDR_NOISE = (
    re.compile(r" \((?:tid=\d+, )?(?:running|finished)\)"),  # "(tid=123, running)"
    re.compile(r" \(tid=\d+\)"),
    re.compile(r" \([^()\s]*\+0x[0-9a-fA-F]+\)"),  # "(binary+0x4010)"
    re.compile(r" \(0x[0-9a-fA-F]+\)"),  # "(0x7f...)"
    re.compile(r" at 0x[0-9a-fA-F]+"),
)

# --- frames ------------------------------------------------------------------------------------

# Matched against the last parenthesised group of a frame line only (found with rfind:
# searching whole lines of long Rust names with regexes is slow).
_FRAME_BUILD_ID = re.compile(r"\(BuildId: [0-9a-fA-F]*\)")
_FRAME_MODULE = re.compile(r"\((?P<module>[^()]+?)\+(?P<offset>0x[0-9a-fA-F]+)\)")
_FRAME_PC = re.compile(r"\((?P<pc>0x[0-9a-fA-F]+)\)")
_FRAME_UNKNOWN_MODULE = "(<unknown module>)"
_FRAME_ASAN_STYLE = re.compile(r"^0x[0-9a-fA-F]+ in ")  # "#0 0x4a1b2c in func file:1"
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_SOURCE = re.compile(r"^(?P<file>.+?):(?P<line>\d+)(?::(?P<col>\d+))?$")

# --- TSAN failures, crashes and notices --------------------------------------------------------

_SIGNAL_CRASH = r"(?:\S+ on unknown address|stack-overflow|(?:SEGV|BUS|FPE|ILL|ABRT|TRAP)\b)"
# The runtime could not do its job: no report can be trusted, and the exit status
# (often 66, the "races found" status) means nothing.
_FATAL = re.compile(
    r"FATAL: ThreadSanitizer"
    r"|(?:Thread)?Sanitizer:? CHECK failed"
    r"|ThreadSanitizer:? failed to "
    r"|ThreadSanitizer\b.*\bout of memory"
    rf"|ERROR: ThreadSanitizer(?!: {_SIGNAL_CRASH})"
    r"|ThreadSanitizer: .*finished with ignores enabled"
    r"|ThreadSanitizer: nested bug"
    r"|ThreadSanitizer: .*\bDying\b"
    r"|ThreadSanitizer: can't "
    r"|ThreadSanitizer: memory layout is incompatible, even though"
    r"|ThreadSanitizer: incorrect value for "  # a TSAN_OPTIONS value out of range
    r"|ThreadSanitizer: ERROR: "  # TSAN_OPTIONS it cannot read ("expected '=' in")
)
# The program crashed; TSAN only printed it (handle_segv=1 and friends).
_CRASH = re.compile(
    rf"ERROR: ThreadSanitizer: {_SIGNAL_CRASH}"
    r"|ThreadSanitizer:DEADLYSIGNAL"
)
_NOTICE = re.compile(r"ThreadSanitizer|Re-execing with|Program is run with")
# print_suppressions=1: "ThreadSanitizer: Matched 2 suppressions (pid=N):", then one line
# "HITS TYPE:PATTERN" for each suppression that hid a report.
_MATCHED = re.compile(r"ThreadSanitizer: Matched (?P<n>\d+) suppressions?")
_MATCHED_LINE = re.compile(r"^(?P<hits>\d+) (?P<supp>[a-z_]+:.+)$")

# --- kinds -------------------------------------------------------------------------------------

_KINDS = {
    "data race": "data race",
    "heap-use-after-free": "heap-use-after-free",
    "lock-order-inversion (potential deadlock)": "lock-order-inversion",
    "lock-order-inversion": "lock-order-inversion",
    "thread leak": "thread leak",
    "signal-unsafe call inside of a signal": "signal-unsafe call",
    "signal-unsafe call": "signal-unsafe call",
    "signal handler spoils errno": "signal handler spoils errno",
    "destroy of a locked mutex": "destroy of a locked mutex",
    "unlock of an unlocked mutex (or by a wrong thread)": "unlock of an unlocked mutex",
    "unlock of an unlocked mutex": "unlock of an unlocked mutex",
    "double lock of a mutex": "double lock",
    "double lock": "double lock",
    "use of an invalid mutex (e.g. uninitialized or destroyed)": "use of an invalid mutex",
    "use of an invalid mutex": "use of an invalid mutex",
}


# Every kind named above, as a target names it, and the two vptr kinds kept verbatim.
KNOWN_KINDS = frozenset(_KINDS.values()) | {
    "data race on vptr (ctor/dtor vs virtual call)",
    "heap-use-after-free (virtual call vs free)",
}


def normalise_kind(text: str) -> str:
    """Short stable names for the kinds we know; TSAN's own words for the others.

    The vptr variants ("data race on vptr (ctor/dtor vs virtual call)",
    "heap-use-after-free (virtual call vs free)") are kept verbatim: they are
    different bugs from the plain kinds and a target for one must not match the other.
    """
    text = " ".join(text.split())
    return _KINDS.get(text, text)


def clean_line(line: str) -> str:
    """Remove what log collectors add in front of TSAN's text (and colours, and CR).

    Indentation is kept, because it is part of what TSAN printed.
    """
    line = _ANSI.sub("", line).rstrip("\r\n")
    line = line.replace("\r", "")
    m = _PYTEST_E.match(line)
    if m and len(m.group("pad")) >= 3:
        line = " " * m.end() + line[m.end() :]
    stripped = line.lstrip()
    changed = True
    while changed:
        changed = False
        m = _TIMESTAMP.match(stripped)
        if m and m.end() > 0:
            line = stripped[m.end() :]
            stripped = line.lstrip()
            changed = True
        m = _PID_PREFIX.match(stripped)
        if m:
            line = stripped[m.end() :]
            stripped = line.lstrip()
            changed = True
    return line


def _last_group(text: str) -> tuple[str | None, str]:
    """The text from the last "(" to the end, and what is before it (stripped)."""
    i = text.rfind("(")
    if i == -1:
        return None, text
    return text[i:].rstrip(), text[:i].rstrip()


def parse_frame(index: int, rest: str) -> Frame:
    """One frame, from the text after ``#N``.

    Function names can contain spaces (C++ signatures, Rust ``<T as Trait>``), so
    the line is taken apart from the right: the BuildId suffix, the
    ``(module+0xoff)`` part, then the source location, which is one token
    (``file:line:col``, ``file`` or ``<null>``); what is left is the function.
    """
    text = rest.strip()
    module: str | None = None
    offset: str | None = None
    tail, head = _last_group(text)
    if tail is not None and ")" not in tail:
        # "(module+0x12" at the end of a truncated log
        text = head
        tail, head = _last_group(text)
    if tail is not None and _FRAME_BUILD_ID.fullmatch(tail):
        text = head
        tail, head = _last_group(text)
    if tail is not None:
        m = _FRAME_MODULE.fullmatch(tail)
        if m:
            module, offset = m.group("module").strip(), m.group("offset")
            text = head
        else:
            m = _FRAME_PC.fullmatch(tail)
            if m:
                offset = m.group("pc")
                text = head
            elif tail == _FRAME_UNKNOWN_MODULE:
                text = head
    text = _FRAME_ASAN_STYLE.sub("", text.strip())

    function, sep, location = text.rpartition(" ")
    if not sep:
        function, location = text, ""
    function = function.strip()
    if not function:
        function = "<null>"
    if _HEX.match(function):  # an unsymbolised PC
        function = "<null>"

    file: str | None = None
    line: int | None = None
    column: int | None = None
    if location and location != "<null>":
        src = _SOURCE.match(location)
        if src:
            file = src.group("file")
            line = int(src.group("line"))
            column = int(src.group("col")) if src.group("col") else None
        else:
            file = location
    return Frame(
        index=index,
        function=function,
        file=file,
        line=line,
        column=column,
        module=module,
        offset=offset,
    )


def _clean_header(text: str) -> str:
    for pattern in _ADDR_NOISE:
        text = pattern.sub("", text)
    return text.rstrip(":. ").strip()


def _thread(text: str) -> str:
    text = text.strip()
    if text.startswith("thread "):
        return text[len("thread ") :]
    return text


def _mutexes(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(" ".join(m.split()) for m in text.split(",") if m.strip())


@dataclass
class _Section:
    """A header line and the stack printed under it."""

    label: str
    frames: list[Frame] = field(default_factory=list)
    access: dict[str, Any] | None = None  # set for memory-access headers


@dataclass
class _Builder:
    kind: str
    pid: int | None
    lines: list[str]
    # The column of the WARNING line: TSAN indents the headers of a report's stacks by
    # two more, and a line of the program's own output that ends in ":" is not one.
    indent: int = 0
    sections: list[_Section] = field(default_factory=list)
    location: str | None = None
    summary: str | None = None

    def add_line(self, line: str) -> None:
        if len(self.lines) < MAX_REPORT_LINES:
            self.lines.append(line)
        s = line.strip()
        if not s:
            return
        m = _FRAME.match(s)
        if m and (len(line) - len(line.lstrip()) > self.indent or _LOOKS_LIKE_A_FRAME.search(s)):
            # TSAN indents frames past the WARNING line; a "#1 ..." of the program's own
            # output is not a frame, unless it reads like one (a log that lost its
            # indentation).
            self._add_frame(int(m.group("index")), m.group("rest"))
            return
        if s == _FAILED_STACK:
            return
        if len(self.sections) >= MAX_SECTIONS:
            return
        m = _ACCESS.match(s)
        if m:
            self.sections.append(
                _Section(
                    label=_clean_header(s),
                    access={
                        "previous": bool(m.group("prev")),
                        "atomic": bool(m.group("atomic")),
                        "op": m.group("op").lower(),
                        "size": int(m.group("size")),
                        "thread": _thread(m.group("thread")),
                        "mutexes": _mutexes(m.group("mutexes")),
                    },
                )
            )
            return
        m = _EXTERNAL_ACCESS.match(s)
        if m:
            self.sections.append(
                _Section(
                    label=_clean_header(s),
                    access={
                        "previous": bool(m.group("prev")),
                        "atomic": False,
                        "op": "write" if m.group("mode").lower() == "modifying" else "read",
                        "size": None,
                        "thread": _thread(m.group("thread")),
                        "mutexes": _mutexes(m.group("mutexes")),
                    },
                )
            )
            return
        m = _LOCATION.match(s)
        if m:
            if self.location is None:
                self.location = _clean_header(m.group("rest"))
            if s.endswith(":"):
                self.sections.append(_Section(label=_clean_header(s)))
            return
        if s == "and:":
            self.sections.append(_Section(label="stack"))
            return
        if s.endswith(":") and len(line) - len(line.lstrip()) == self.indent + 2:
            self.sections.append(_Section(label=_clean_header(s)))
            return
        # Anything else ("Cycle in lock order graph", hints, program output) is ignored.

    def _add_frame(self, index: int, rest: str) -> None:
        current = self.sections[-1] if self.sections else None
        if current is None or (current.frames and index <= current.frames[-1].index):
            # Frames right after the WARNING line (signal-unsafe call, mutex misuse), or a
            # restart at #0 without a header: a new unnamed stack.
            if len(self.sections) >= MAX_SECTIONS:
                return
            current = _Section(label="stack")
            self.sections.append(current)
        if len(current.frames) < MAX_FRAMES:
            current.frames.append(parse_frame(index, rest))

    def build(self) -> Report:
        current: Access | None = None
        previous: Access | None = None
        others: list[tuple[str, tuple[Frame, ...]]] = []
        use_after_free = self.kind.startswith("heap-use-after-free")
        for section in self.sections:
            info = section.access
            if info is None:
                others.append((section.label, tuple(section.frames)))
                continue
            is_previous = bool(info["previous"])
            op = str(info["op"])
            if is_previous and use_after_free:
                # TSAN models free() as a write; the "previous write" of a use-after-free
                # is the free.
                op = "free"
            access = Access(
                op=op,
                atomic=bool(info["atomic"]),
                size=info["size"],
                thread=info["thread"],
                mutexes=info["mutexes"],
                stack=tuple(section.frames),
                previous=is_previous,
            )
            if is_previous and previous is None:
                previous = access
            elif not is_previous and current is None:
                current = access
            else:
                others.append((section.label, access.stack))
        return Report(
            kind=self.kind,
            pid=self.pid,
            current=current,
            previous=previous,
            location=self.location,
            summary=self.summary,
            other_stacks=tuple(others),
            raw="\n".join(self.lines).strip("\n"),
        )


class LogScanner:
    """The parser, one line at a time: ``feed`` returns the report a line completes.

    Reports end at their SUMMARY line, at a ``=====`` separator, at the next
    WARNING or at the end of the log (``finish``); a report cut short (a killed
    process) is kept with what it has, and its ``summary`` is None. ``Report.raw``
    holds the block's lines with collector prefixes (timestamps, ``==pid==``,
    colours) removed.
    """

    def __init__(self) -> None:
        self.fatal: list[str] = []
        self.crashes: list[str] = []
        self.notices: list[str] = []
        self.warnings_total: int | None = None
        # Reports TSAN hid, by suppression ("race:foo" -> hits), summed over processes.
        self.suppressed: dict[str, int] = {}
        self._suppression_lines = 0
        self._builder: _Builder | None = None

    def _close(self) -> Report | None:
        builder, self._builder = self._builder, None
        return builder.build() if builder is not None else None

    @staticmethod
    def _keep(into: list[str], line: str) -> None:
        if len(into) < MAX_MESSAGES:
            into.append(line)

    def feed(self, raw_line: str) -> Report | None:
        """Take one line (without its line break); the report it ends, if any."""
        line = clean_line(raw_line[:MAX_LINE])
        s = line.strip()
        builder = self._builder
        if self._suppression_lines:
            self._suppression_lines -= 1
            m = _MATCHED_LINE.match(s)
            if m:
                if len(self.suppressed) < MAX_MESSAGES or m.group("supp") in self.suppressed:
                    key = m.group("supp")
                    self.suppressed[key] = self.suppressed.get(key, 0) + int(m.group("hits"))
                return None
            self._suppression_lines = 0
        if not s or "Sanitizer" not in s:
            # Most lines: frames, headers, program output. Only TSAN's own lines need the
            # searches below.
            if builder is not None:
                builder.add_line(line)
            elif s and _NOTICE.search(s):
                self._keep(self.notices, s)
            return None

        m = _WARNING.search(s)
        if m:
            done = self._close()
            pid = m.group("pid")
            self._builder = _Builder(
                kind=normalise_kind(m.group("kind")) or "unknown",
                pid=int(pid) if pid else None,
                lines=[s[m.start() :]],
                indent=line.find("WARNING: ThreadSanitizer"),
            )
            return done

        if "WARNING: ThreadSanitizer:" in s:
            # A report quoted inside other text (an assertion's repr): not one, and not
            # part of the report before it either.
            return self._close()

        m = _SUMMARY.search(s)
        if m:
            if builder is not None:
                if len(builder.lines) < MAX_REPORT_LINES + 1:
                    builder.lines.append(line)
                builder.summary = m.group("text")
                return self._close()
            return None

        if _SEPARATOR.match(s):
            return self._close()

        m = _REPORTED.search(s)
        if m:
            self.warnings_total = (self.warnings_total or 0) + int(m.group("n"))
            return self._close()

        m = _MATCHED.search(s)
        if m:
            self._suppression_lines = int(m.group("n"))
            return self._close()

        if _FATAL.search(s):
            self._keep(self.fatal, s)
        elif _CRASH.search(s):
            self._keep(self.crashes, s)
        elif builder is not None:
            builder.add_line(line)
        elif _NOTICE.search(s):
            self._keep(self.notices, s)
        return None

    def finish(self) -> Report | None:
        """The end of the log: the report still open, if any."""
        return self._close()

    def reports(self, lines: Iterable[str]) -> Iterator[Report]:
        """Every report in ``lines``, as each one ends; then ``finish``."""
        for raw_line in lines:
            report = self.feed(raw_line)
            if report is not None:
                yield report
        last = self.finish()
        if last is not None:
            yield last

    def parsed(self, reports: Iterable[Report] = ()) -> ParsedLog:
        """What was found besides the reports, with ``reports`` put in.

        ``extra`` gets, only when there are any: ``"suppressed"`` (reports TSAN hid,
        by suppression, with print_suppressions=1), ``"crashes"`` (the program died of a
        signal that TSAN printed, e.g. ``ERROR: ThreadSanitizer: SEGV on unknown
        address``: not a TSAN failure, not a race) and ``"notices"`` (other
        ThreadSanitizer lines, e.g. the re-exec for high-entropy ASLR), as tuples of
        lines.
        """
        extra: dict[str, Any] = {}
        if self.crashes:
            extra["crashes"] = tuple(self.crashes)
        if self.notices:
            extra["notices"] = tuple(self.notices)
        if self.suppressed:
            extra["suppressed"] = dict(self.suppressed)
        return ParsedLog(
            reports=tuple(reports),
            fatal=tuple(self.fatal),
            reported_warnings=self.warnings_total,
            extra=extra,
        )


def read_lines(stream: TextIO) -> Iterator[str]:
    """The lines of a text stream, as ``str.splitlines`` would cut the whole text,
    read a bounded piece at a time: the part of a line beyond ``MAX_LINE`` is dropped
    unread into memory. Open files with ``newline=""`` so that no line break is
    translated before it is seen here.
    """
    skipping = False
    while True:
        chunk = stream.readline(MAX_LINE)
        if not chunk:
            return
        ended = chunk.endswith(("\n", "\r"))
        if skipping:
            skipping = not ended
            continue
        if not ended and len(chunk) >= MAX_LINE:
            skipping = True
        yield from chunk.splitlines()


def read_reports(stream: TextIO, scanner: LogScanner | None = None) -> Iterator[Report]:
    """The reports of a TSAN log read from ``stream``, one at a time.

    Pass a ``scanner`` to read the fatal errors, crashes and warning counts from it
    afterwards (``scanner.parsed()``).
    """
    return (scanner or LogScanner()).reports(read_lines(stream))


def parse_log(text: str) -> ParsedLog:
    """Every TSAN report, failure and warning count in ``text`` (see ``LogScanner``
    for how reports are cut out and ``LogScanner.parsed`` for ``extra``)."""
    scanner = LogScanner()
    reports = list(scanner.reports(text.splitlines()))
    return scanner.parsed(reports)
