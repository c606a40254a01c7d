"""The words of a bisect: which way it searches, what its ends are called, what it blames.

git names its terms (good/bad, or --term-old/--term-new) once and carries them
everywhere; so does repro. Positions are kept in *search order*, the racy end
first (position 0) and the clean end last, which is oldest-first when finding a
fix and newest-first when finding a regression. Everything that turns a position
back into history order, or a first-clean position into the commit to blame, asks
this module. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")

# Below this posterior, the most probable answer is not named as "likely" (on the console
# while a bisect runs, in the report of one that stopped): a 1-in-26 prior read as
# "most likely X (3.8%)", and near ties were broken two ways.
LIKELY_AT = 0.25


class Find(StrEnum):
    FIX = "fix"
    REGRESSION = "regression"


class Side(StrEnum):
    EXTENSION = "extension"  # the extension's git history
    PYTHON = "python"  # CPython's git history
    VERSIONS = "versions"  # CPython releases


@dataclass(frozen=True)
class Terms:
    find: Find
    side: Side = Side.EXTENSION

    @classmethod
    def parse(cls, find: str, side: str = "extension") -> Terms:
        try:
            return cls(Find(find), Side(side))
        except ValueError:
            raise ValueError(
                f"unknown bisect terms find={find!r} side={side!r} "
                "(find: fix or regression; side: extension, python or versions)"
            ) from None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Terms:
        return cls.parse(str(meta.get("find") or "fix"), str(meta.get("side") or "extension"))

    # -- words -------------------------------------------------------------------------

    @property
    def unit(self) -> str:
        return "release" if self.side is Side.VERSIONS else "commit"

    @property
    def units(self) -> str:
        return self.unit + "s"

    @property
    def racy_word(self) -> str:
        return "racy"

    @property
    def clean_word(self) -> str:
        """The other end: 'fixed' when looking for a fix, 'clean' for a regression."""
        return "fixed" if self.find is Find.FIX else "clean"

    @property
    def culprit_word(self) -> str:
        return "first fixed" if self.find is Find.FIX else "first bad"

    @property
    def answer_clean_word(self) -> str:
        """The clean commit an answer rests on: the fix itself, or the last clean one before
        the regression (the search's first clean position either way)."""
        return "first fixed" if self.find is Find.FIX else "last clean"

    @property
    def other_end_advice(self) -> str:
        """Where to look for an end that is clean, when the one given races: later for a
        fix, earlier for a regression (a regression's "later fixed" sent users the
        wrong way)."""
        if self.find is Find.FIX:
            return f"Pick a later {self.clean_word} {self.unit} ({self.clean_option})."
        return f"Pick an earlier {self.clean_word} {self.unit} ({self.clean_option})."

    @property
    def clean_option(self) -> str:
        return "--fixed" if self.find is Find.FIX else "--clean"

    # -- order -------------------------------------------------------------------------

    def search_order(self, old_to_new: Sequence[T]) -> list[T]:
        """History order -> search order (racy end first)."""
        return list(old_to_new) if self.find is Find.FIX else list(reversed(old_to_new))

    def history_order(self, search: Sequence[T]) -> list[T]:
        """Search order -> history order (oldest first); its own inverse."""
        return self.search_order(search)

    def history_positions(self, n: int) -> list[int]:
        """Positions 0..n-1 listed oldest commit first."""
        return self.search_order(list(range(n)))

    def culprit_positions(self, lo: int, hi: int) -> tuple[int, int]:
        """Positions to blame, given the range of possible first clean positions.

        Finding a fix, the first clean commit is the fix. Finding a regression the
        search runs newest to oldest, so the culprit is the last racy one, just before.
        """
        if self.find is Find.FIX:
            return lo, hi
        return lo - 1, hi - 1
