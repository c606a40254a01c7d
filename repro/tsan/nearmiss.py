"""Near misses: races that match part of the target, and a target that names both accesses.

A target that names only one side of a race (the function of one access) never
matches under ``accesses: each``, and every run then reads as "0 hits" while the
race is on screen under "other races". That is the commonest way to write a wrong
target, so instead of leaving the user to compare stacks by eye, each other race is
tried against the target with one rule relaxed at a time (the kind, the depth, the
per-access demand, a pattern the race does not contain at all); the smallest
relaxation that makes it match says what did not match and which recipe change would
make it the target. Pure: reports in, text out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import combinations, product
from pathlib import Path

from repro.tsan.model import Frame, Report
from repro.tsan.parse import normalise_kind
from repro.tsan.signature import (
    DEFAULT_DROP,
    Signature,
    TargetRule,
    access_matches,
    is_library_frame,
    matches,
    names_interpreter_code,
    normalise_function,
    significant_frames,
    starts_inside_interpreter,
    without_parameters,
)

__all__ = [
    "NearMiss",
    "SuggestedTarget",
    "lacking_patterns",
    "near_miss",
    "suggest_target",
]

_KIND, _DEPTH, _ACCESSES, _ABSENT = "kind", "depth", "accesses", "absent"


@dataclass(frozen=True)
class NearMiss:
    """A race that is not the target but would be after one of ``fixes``.

    ``unmatched`` says, one phrase each, what kept it from matching; ``fixes`` are
    alternatives (any one of them makes the race the target), each a recipe change.
    """

    signature: Signature
    unmatched: tuple[str, ...]
    fixes: tuple[str, ...]
    # How many of the target's patterns the race lacks altogether: of two near misses,
    # the one holding every name the user wrote is the race they mean (an add-vs-add
    # race came first, by id, before the add-vs-get race of a target naming both).
    absent: int = 0

    def lines(self) -> list[str]:
        """Plain text for a console or a report."""
        out = [f"race {self.signature.id} ({self.signature.describe()}) nearly matches the target"]
        out += [f"  did not match: {u}" for u in self.unmatched]
        out += [f"  {'to target it' if i == 0 else 'or'}: {f}" for i, f in enumerate(self.fixes)]
        return out


def _deepest(report: Report, drop: tuple[str, ...]) -> int:
    """The most significant frames of any stack: how deep a relaxed target may look."""
    stacks = report.access_stacks() or [frames for _, frames in report.other_stacks]
    return max((len(significant_frames(s, drop)) for s in stacks), default=0)


def _where(frame: Frame) -> str:
    name = normalise_function(frame.function)
    if frame.file:
        line = f":{frame.line}" if frame.line else ""
        return f"{name} ({Path(frame.file).name}{line})"
    return name


def _min_depth(report: Report, rule: TargetRule, drop: tuple[str, ...], most: int) -> int:
    for depth in range(rule.depth + 1, most + 1):
        if matches(report, replace(rule, depth=depth), drop):
            return depth
    return most


def near_miss(
    report: Report, rule: TargetRule, drop: Sequence[str] = DEFAULT_DROP, signature_depth: int = 3
) -> NearMiss | None:
    """How ``report`` misses ``rule``, when a small change to the rule would match it.

    None when it matches already, or when no relaxation of the kind, the depth and
    the per-access demand (alone or together) makes it match: then nothing of the
    target is in it and it is simply another race.
    """
    from repro.tsan.signature import signature_of

    drop = tuple(drop)
    if matches(report, rule, drop):
        return None
    deepest = _deepest(report, drop)
    available = []
    if rule.kind is not None and normalise_kind(rule.kind) != report.kind:
        available.append(_KIND)
    if deepest > rule.depth:
        available.append(_DEPTH)
    two_sided = report.current is not None and report.previous is not None
    if rule.accesses == "each" and two_sided:
        available.append(_ACCESSES)
    # Every pattern must be in the race: a target naming a third function (or the
    # function of another race) never matches the race the other patterns describe.
    absent = _absent_patterns(report, rule, drop, deepest)
    left = len(rule.functions) - len(absent[0]), len(rule.files) - len(absent[1])
    if any(absent) and (left[0] > 0 or (not rule.functions and left[1] > 0)):
        available.append(_ABSENT)
    relaxed: tuple[str, ...] | None = None
    for size in range(1, len(available) + 1):
        for combo in combinations(available, size):
            if _ABSENT in combo and _ACCESSES in combo:
                continue  # a race through one named function, with another: not this one
            if matches(report, _relax(rule, combo, deepest, absent), drop):
                relaxed = combo
                break
        if relaxed:
            break
    if relaxed is None:
        return None
    if (
        _DEPTH in relaxed
        and starts_inside_interpreter(report, drop)
        and not names_interpreter_code(report, rule, drop)
    ):
        # CPython's own race, with the target's extension function far down its stacks
        # (sweep 18: string interning under frozenlist's _check_frozen, frame 14): the
        # advice "remove freeze, target.depth: 15" made the target a race of CPython's.
        return None
    # Each part is stated for the rule with the other parts relaxed, so that the
    # depth named is the one needed together with the other changes.
    unmatched: list[str] = []
    choices: list[list[str]] = []
    if _KIND in relaxed:
        unmatched.append(f"its kind is {report.kind!r}, the target's {rule.kind!r}")
        choices.append([f"target.kind: {json.dumps(report.kind)}"])
    if _ABSENT in relaxed:
        for field, pats in zip(("functions", "files"), absent, strict=True):
            for name in pats:
                unmatched.append(
                    f"target.{field} names {name!r}, which neither access has (every "
                    "pattern must be in the race)"
                )
        choices.append(
            [
                " and ".join(
                    f"remove {json.dumps(name)} from target.{field}"
                    for field, pats in zip(("functions", "files"), absent, strict=True)
                    for name in pats
                )
            ]
        )
    if _DEPTH in relaxed:
        others = tuple(r for r in relaxed if r != _DEPTH)
        base = _relax(rule, others, deepest, absent)
        need = _min_depth(report, base, drop, deepest)
        unmatched.append(
            f"the target's frames are there but deeper than target.depth {rule.depth} "
            f"(frame {need} of an access)"
        )
        choices.append([f"target.depth: {need}"])
    if _ACCESSES in relaxed:
        others = tuple(r for r in relaxed if r != _ACCESSES)
        base = _relax(rule, others, deepest, absent)
        missing = [s for s in report.access_stacks() if not access_matches(s, base, drop)]
        hit = [significant_frames(s, drop)[:1] for s in report.access_stacks() if s not in missing]
        tops = [significant_frames(s, drop)[:1] for s in missing]
        names = [_where(t[0]) for t in tops if t]
        matched = [_where(t[0]) for t in hit if t]
        text = "the other access"
        if names:
            text += f", {', '.join(names)},"
        text += " matches none of target.functions/target.files"
        if matched:
            text += f" (one access matches: {', '.join(matched)})"
        unmatched.append(text)
        adds = []
        for t in tops:
            if not t:
                continue
            name = without_parameters(normalise_function(t[0].function))
            adds.append(f"add {json.dumps(name)} to target.functions")
            if rule.files and t[0].file:
                adds.append(f"add {json.dumps(Path(t[0].file).name)} to target.files")
        alternatives = []
        if adds:
            alternatives.append(" and ".join(adds) + " (a target naming both accesses)")
        alternatives.append("target.accesses: any (the patterns may all sit on one side)")
        choices.append(alternatives)
    fixes = tuple(" and ".join(parts) for parts in product(*choices))
    sig = signature_of(report, depth=signature_depth, drop=drop)
    lacked = len(absent[0]) + len(absent[1]) if _ABSENT in relaxed else 0
    return NearMiss(sig, tuple(unmatched), fixes, lacked)


def lacking_patterns(
    report: Report, rule: TargetRule, drop: Sequence[str] = DEFAULT_DROP
) -> tuple[str, ...]:
    """The target's patterns, functions then files, that no frame of ``report`` holds at
    any depth: what to write otherwise when no race has all of them."""
    drop = tuple(drop)
    deepest = _deepest(report, drop)
    functions, files = _absent_patterns(report, rule, drop, deepest)
    return (*functions, *files)


def _absent_patterns(
    report: Report, rule: TargetRule, drop: tuple[str, ...], deepest: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The function and file patterns of ``rule`` that no frame of ``report`` matches, at
    any kind, depth or side."""
    loose = TargetRule(kind=None, depth=max(rule.depth, deepest), accesses="any")
    functions = tuple(
        f for f in rule.functions if not matches(report, replace(loose, functions=(f,)), drop)
    )
    files = tuple(f for f in rule.files if not matches(report, replace(loose, files=(f,)), drop))
    return functions, files


def _relax(
    rule: TargetRule,
    parts: Sequence[str],
    deepest: int,
    absent: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> TargetRule:
    if _ABSENT in parts:
        rule = replace(
            rule,
            functions=tuple(f for f in rule.functions if f not in absent[0]),
            files=tuple(f for f in rule.files if f not in absent[1]),
        )
    if _KIND in parts:
        rule = replace(rule, kind=None)
    if _DEPTH in parts:
        rule = replace(rule, depth=max(rule.depth, deepest))
    if _ACCESSES in parts:
        rule = replace(rule, accesses="any")
    return rule


@dataclass(frozen=True)
class SuggestedTarget:
    """A target for one race that names the top frame of each access."""

    kind: str
    functions: tuple[str, ...]
    files: tuple[str, ...]
    depth: int = 3

    def yaml(self, indent: str = "") -> str:
        """The ``target:`` block of a recipe (JSON strings are valid YAML scalars)."""
        lines = ["target:", f"  kind: {json.dumps(self.kind)}", "  functions:"]
        lines += [f"    - {json.dumps(f)}" for f in self.functions]
        if self.files:
            lines.append("  files:")
            lines += [f"    - {json.dumps(f)}" for f in self.files]
        lines.append(f"  depth: {self.depth}")
        return "\n".join(indent + line for line in lines) + "\n"

    def rule(self) -> TargetRule:
        return TargetRule(
            kind=self.kind, functions=self.functions, files=self.files, depth=self.depth
        )


def extension_race_first(starts_outside: Iterable[bool]) -> int:
    """Which race to name, of races listed most frequent first, when an extension runs in
    CPython: the first that starts outside CPython, else the first. ``starts_outside`` is
    read lazily, so a caller that parses reports on demand stops at the one it needs."""
    return next((i for i, outside in enumerate(starts_outside) if outside), 0)


def suggest_target(report: Report, drop: Sequence[str] = DEFAULT_DROP) -> SuggestedTarget:
    """The target for ``report``: both accesses' functions (and files), each required.

    Each access is named by its first frame outside the toolchain's libraries
    (``is_library_frame``): a Rust race at ``core::ptr::read_volatile`` is named by the
    project's function that called it, since a target naming the library's function
    would match the same call in any program. The depth reaches that frame. The
    functions are normalised (no Rust hashes, no clone suffixes, no Cython numbers),
    so the target matches the same race in another build.
    """
    drop = tuple(drop)
    functions: list[str] = []
    files: list[str] = []
    depth = 3
    every_access_has_a_file = True
    for stack in report.access_stacks() or [frames for _, frames in report.other_stacks[:1]]:
        frames = significant_frames(stack, drop)
        if not frames:
            frames = tuple(f for f in stack if normalise_function(f.function) not in ("", "<null>"))
        if not frames:
            continue
        at = next((i for i, f in enumerate(frames) if not is_library_frame(f)), 0)
        depth = max(depth, at + 1)
        frame = frames[at]
        name = without_parameters(normalise_function(frame.function))
        if name not in functions:
            functions.append(name)
        if frame.file:
            base = Path(frame.file).name
            if base not in files:
                files.append(base)
        else:
            every_access_has_a_file = False
    # File patterns only when every access has a file: `each` demands a file match on
    # both sides, and an access without one would then never match.
    if not every_access_has_a_file:
        files = []
    return SuggestedTarget(report.kind, tuple(functions), tuple(files), depth)
