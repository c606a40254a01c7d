"""TSAN_OPTIONS as one merge, used by the runner and by the generated reproduce script.

TSAN reads ``key=value`` pairs separated by spaces, colons or commas, a value in
single or double quotes when it holds one of those; a later key wins. The
order of precedence is repro's machine defaults (e.g. the symbolizer), then the user's
own TSAN_OPTIONS, then the recipe's options, then what the caller must own (the
runner's ``log_path``). Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from repro.tsan import suppressions

# Options repro sets for every run, below the user's and the recipe's: which suppressions
# hid reports, so that a stress can say how many reports nobody counted.
COUNTING_DEFAULTS = {"print_suppressions": "1"}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# What separates two options for TSAN's flag parser.
_SEPARATORS = frozenset(" ,:\t\n\r")


def _items(text: str | None) -> Iterator[tuple[str, str | None]]:
    """The ``(name, value)`` items of a TSAN_OPTIONS string, read as TSAN reads it:
    separators, a value in quotes; a word with no ``=`` comes with the value None."""
    s = text or ""
    i, n = 0, len(s)
    while i < n:
        if s[i] in _SEPARATORS:
            i += 1
            continue
        start = i
        while i < n and s[i] != "=" and s[i] not in _SEPARATORS:
            i += 1
        if i >= n or s[i] != "=":
            yield s[start:i], None
            continue
        name = s[start:i]
        i += 1
        if i < n and s[i] in "'\"":
            end = s.find(s[i], i + 1)
            end = n if end < 0 else end
            value = s[i + 1 : end]
            i = end + 1
        else:
            start = i
            while i < n and s[i] not in _SEPARATORS:
                i += 1
            value = s[start:i]
        yield name, value


def stray_words(text: str | None) -> list[str]:
    """Words that are no ``name=value`` (TSAN refuses them: "expected '='"); ``parse``
    passes over them, so they must be said."""
    return [name for name, value in _items(text) if value is None]


def stray_problem(text: str | None) -> str | None:
    """What to say of the stray words of a TSAN_OPTIONS string (None: there are none),
    alike for the user's environment and the recipe's variables."""
    stray = stray_words(text)
    if not stray:
        return None
    return f"{', '.join(map(repr, stray))}: not name=value, so TSAN would refuse to start"


def parse(text: str | None) -> dict[str, str]:
    """The pairs of a TSAN_OPTIONS string (a later name wins, as in TSAN)."""
    return {name: value for name, value in _items(text) if value is not None}


def merge(
    defaults: Mapping[str, Any] | None,
    user: str | None,
    recipe: Mapping[str, Any],
    forced: Mapping[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, str]:
    opts = {k: format_value(v) for k, v in (defaults or {}).items()}
    opts.update(parse(user))
    opts.update({k: format_value(v) for k, v in recipe.items()})
    opts.update({k: format_value(v) for k, v in (forced or {}).items()})
    for key in drop:
        opts.pop(key, None)
    return opts


def quoted(value: str) -> str:
    """A value as TSAN reads it back whole: a path with a space (a run directory under
    "My Projects") once made every run end with "expected '=' in TSAN_OPTIONS"."""
    if not value or not (any(c in _SEPARATORS for c in value) or value[0] in "'\""):
        return value
    quote = "'" if '"' in value else '"'
    return f"{quote}{value}{quote}"


def to_string(opts: Mapping[str, str]) -> str:
    return " ".join(f"{k}={quoted(v)}" for k, v in opts.items())


def flag(value: str | None) -> bool | None:
    """A TSAN boolean as TSAN reads it (``0/no/false``, ``1/yes/true``), else None."""
    low = (value or "").strip().lower()
    if low in ("0", "no", "false"):
        return False
    if low in ("1", "yes", "true"):
        return True
    return None


def defeats_counting(opts: Mapping[str, str]) -> list[tuple[str, str]]:
    """Each option under which runs could not be counted right, with why.

    ``report_bugs=0`` prints no report, so every run reads clean. ``halt_on_error=1``
    ends a run at its first report, so a run in which another race came first reads
    as a miss of the target, evidence that it is not there.
    """
    found: list[tuple[str, str]] = []
    if flag(opts.get("report_bugs")) is False:
        found.append(
            (
                f"report_bugs={opts['report_bugs']}",
                "TSAN then prints no report, so every run would count as clean",
            )
        )
    if flag(opts.get("abort_on_error")):
        found.append(
            (
                f"abort_on_error={opts['abort_on_error']}",
                "TSAN then aborts a run that reported anything, so a run with only "
                "another race reads as a crash and leaves the rate",
            )
        )
    if flag(opts.get("print_summary")) is False:
        found.append(
            (
                f"print_summary={opts['print_summary']}",
                "reports then lack their SUMMARY line, by which repro tells a whole "
                "report from a cut one: every hit would count as incomplete",
            )
        )
    if opts.get("stack_trace_format") not in (None, "", "DEFAULT"):
        found.append(
            (
                f"stack_trace_format={opts['stack_trace_format']}",
                "repro reads frames in TSAN's default format; in another, every report "
                "reads as incomplete",
            )
        )
    for key in ("include", "include_if_exists"):
        if opts.get(key):
            found.append(
                (
                    f"{key}={opts[key]}",
                    "the options in that file reach TSAN unseen by these checks: put "
                    "them in TSAN_OPTIONS or the recipe's tsan.options",
                )
            )
    if flag(opts.get("halt_on_error")):
        found.append(
            (
                f"halt_on_error={opts['halt_on_error']}",
                "a run then ends at its first report, so a run where another race came "
                "first would count as a miss of the target",
            )
        )
    return found


def hidden_target(
    suppressions_text: str, kind: str | None, functions: Sequence[str], files: Sequence[str]
) -> list[str]:
    """Why a suppressions file would hide the target race, a line each (none: it would
    not, as far as the target's names tell)."""
    found = suppressions.hiding_target(
        suppressions.parse(suppressions_text), kind, functions, files
    )
    return [
        f"line {sup.line}: {sup} matches {name!r}, so TSAN would not print the target "
        "race, and every run would count as a miss"
        for sup, name in found
    ]
