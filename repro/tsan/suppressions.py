"""Which lines of a TSAN suppressions file would hide the target race. Pure.

A suppressed report is never printed, so a run in which only the target was
suppressed reads as clean: a stress states a rate of 0% and a bisect takes the racy
end for fixed. A user's own TSAN_OPTIONS often carry a suppressions file (CPython's
Tools/tsan/suppressions_free_threading.txt), and the recipe may name one to hide
other races; either can hide the target without anyone seeing it.

The file's format is TSAN's: one ``type:pattern`` a line, ``#`` comments. A pattern
is matched against every frame's function, file and module of the report, as a
substring, with ``*`` for any text, ``^`` anchoring the start and ``$`` the end.
The target's own function and file patterns stand in for the frames they match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The suppression types that can hide a report of each kind (TSAN's names).
_TYPES_BY_KIND = (
    ("thread leak", frozenset({"thread"})),
    ("deadlock", frozenset({"deadlock"})),
    ("mutex", frozenset({"mutex"})),
    ("signal", frozenset({"signal"})),
)
_RACE_TYPES = frozenset({"race", "race_top"})
_GLOB = re.compile(r"[*?\[\]]+")


@dataclass(frozen=True)
class Suppression:
    kind: str
    pattern: str
    line: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"


def parse(text: str) -> list[Suppression]:
    out: list[Suppression] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        kind, pattern = line.split(":", 1)
        if pattern.strip():
            out.append(Suppression(kind.strip(), pattern.strip(), number))
    return out


def matches(pattern: str, name: str) -> bool:
    """Whether a suppression pattern matches a name as TSAN matches a frame's.

    TSAN's reading, not a regular expression's: each literal piece is found at its
    first place after the last (no backtracking), ``^`` anchors only the first piece,
    and ``$`` ends the pattern there (the rest is never read), true when the name is
    used up or a ``*`` came just before.
    """
    if not name:
        return False
    anchored = pattern.startswith("^")
    rest = pattern[1:] if anchored else pattern
    at = 0
    star = False
    while rest:
        if rest[0] == "*":
            rest, anchored, star = rest[1:], False, True
            continue
        if rest[0] == "$":
            return at == len(name) or star
        if at == len(name):
            return False
        cut = min((i for i in (rest.find("*"), rest.find("$")) if i >= 0), default=len(rest))
        piece, rest = rest[:cut], rest[cut:]
        found = name.find(piece, at)
        if found < 0 or (anchored and found != at):
            return False
        at, anchored, star = found + len(piece), False, False
    return True


def _types_for(kind: str | None) -> frozenset[str]:
    low = (kind or "data race").lower()
    for word, types in _TYPES_BY_KIND:
        if word in low:
            return types
    return _RACE_TYPES


def _names(patterns: Iterable[str]) -> list[str]:
    """A target pattern, and the literal pieces of a glob (`tq_pub*` stands for
    names that contain `tq_pub`)."""
    out: list[str] = []
    for pattern in patterns:
        out.append(pattern)
        out.extend(piece for piece in _GLOB.split(pattern) if piece and piece != pattern)
    return out


def hiding_target(
    suppressions: Iterable[Suppression],
    kind: str | None,
    functions: Iterable[str],
    files: Iterable[str],
) -> list[tuple[Suppression, str]]:
    """Each suppression that matches a name the target's report must have, with it."""
    types = _types_for(kind)
    names = _names([*functions, *files])
    file_names = _names(files)
    found: list[tuple[Suppression, str]] = []
    for sup in suppressions:
        if sup.kind not in types:
            continue
        hit = next((name for name in names if matches(sup.pattern, name)), None)
        if hit is None and "/" in sup.pattern:
            # A full path (race:/home/u/proj/src/ext.c) is matched against the frame's
            # full path, which the target's bare file name does not hold: its last part
            # stands for it (the target's file, wherever the checkout is).
            last = _last_part(sup.pattern)
            hit = next((name for name in file_names if last and matches(last, name)), None)
        if hit is not None:
            found.append((sup, hit))
    return found


def _last_part(pattern: str) -> str:
    """The pattern after its last ``/``, anchored at the start of a name unless a glob
    came before it in that part (``*/ext.c`` -> ``ext.c``; ``/src/ext*.c`` -> ``^ext*.c``)."""
    tail = pattern[pattern.rfind("/") + 1 :]
    return "^" + tail if tail and not tail.startswith("*") else tail
