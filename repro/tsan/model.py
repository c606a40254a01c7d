"""Data types for parsed ThreadSanitizer output.

These types are shared by the parser, the signature code, the stress loop and the
reports, so they are plain frozen dataclasses that serialise to JSON without help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Frame:
    """One line of a TSAN stack (``#3 func file:line:col (module+0xoff)``)."""

    index: int
    function: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    module: str | None = None
    offset: str | None = None


@dataclass(frozen=True)
class Access:
    """One side of a race: the current access or the previous one."""

    op: str  # "read" or "write" (for other kinds: free, lock, ...; see Report.kind)
    atomic: bool
    size: int | None
    thread: str | None  # "T8", "main thread", ...
    mutexes: tuple[str, ...] = ()
    stack: tuple[Frame, ...] = ()
    previous: bool = False


@dataclass(frozen=True)
class Report:
    """One ``WARNING: ThreadSanitizer: ...`` block.

    ``kind`` is normalised: "data race", "heap-use-after-free", "lock-order-inversion",
    "thread leak", "signal-unsafe call", "signal handler spoils errno",
    "destroy of a locked mutex", "unlock of an unlocked mutex", "double lock",
    "use of an invalid mutex", or the text TSAN printed for anything else.
    """

    kind: str
    pid: int | None
    current: Access | None
    previous: Access | None
    location: str | None  # first line of "Location is ..." (addresses removed)
    summary: str | None  # the text after "SUMMARY: ThreadSanitizer: "
    other_stacks: tuple[tuple[str, tuple[Frame, ...]], ...] = ()  # ("Mutex M1 created at", ...)
    raw: str = ""

    def access_stacks(self) -> list[tuple[Frame, ...]]:
        """The stacks of the accesses TSAN printed (current, then previous)."""
        return [a.stack for a in (self.current, self.previous) if a is not None]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ParsedLog:
    """Everything found in one log text (possibly several processes interleaved)."""

    reports: tuple[Report, ...] = ()
    # TSAN start-up / runtime failures ("FATAL: ThreadSanitizer", "CHECK failed")
    fatal: tuple[str, ...] = ()
    reported_warnings: int | None = None  # "ThreadSanitizer: reported N warnings", summed
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tsan_failed(self) -> bool:
        return bool(self.fatal)
