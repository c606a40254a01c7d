"""Number and text formatting shared by the Markdown and HTML renderings.

Both formats must say the same thing in the same words; keeping the phrasing in
one place is what makes that true.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from repro.text import truncate as truncate


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# The columns of a bisect's step table in every report format, as the console has them.
STEP_COLUMNS = (
    "commit",
    "subject",
    "build",
    "runs",
    "hits",
    "other races",
    "not counted",
    "verdict",
)


def not_counted(step: Mapping[str, Any]) -> int:
    """A step's runs that are no evidence (crashed, timed out, or could not show the race):
    beside `runs`, which counts only the others."""
    return int(step.get("failed_runs") or 0) + int(step.get("invalid_runs") or 0)


def step_verdict(step: Mapping[str, Any]) -> str:
    """A step's verdict, and why when it was skipped (as the console says it)."""
    verdict = str(step.get("verdict") or "")
    why = step.get("unusable")
    return f"{verdict}: {why}" if verdict == "skipped" and why else verdict


def seen(reports: Any, runs: Any) -> str:
    """How often a race showed: "3 reports in 2 runs", "1 report in 1 run"."""
    return f"{plural(reports, 'report')} in {plural(runs, 'run')}"


# Of the target's other signatures, those named in a report's summary.
VARIANTS_SHOWN = 5


def variants(
    entries: Sequence[Mapping[str, Any]], code: Callable[[Any], str], words: Callable[[Any], str]
) -> str:
    """The target's other signatures (the same race where the top frames differ), each
    with where it showed and how often; ``code`` and ``words`` escape for the format."""
    shown = [
        f"{code(e.get('signature'))} ({words(top_frames(list(e.get('top_frames') or [])))}; "
        f"{seen(e.get('reports'), e.get('runs'))})"
        for e in entries[:VARIANTS_SHOWN]
    ]
    more = len(entries) - VARIANTS_SHOWN
    return "; ".join(shown) + (f"; and {more} more (in the JSON report)" if more > 0 else "")


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def rate(summary: Mapping[str, Any]) -> str:
    """``48.3% (95% CI 36.2% to 60.7%), 29 of 60 runs``: hits over the runs that could
    show the race, as the console and summary.json state it; runs that could not are
    named after."""
    runs = int(summary.get("runs") or 0)
    evidence = int(summary.get("evidence_runs", runs) or 0)
    hits = int(summary.get("hits") or 0)
    not_counted = runs - evidence
    tail = f" ({not_counted} more could not show the race)" if not_counted > 0 else ""
    if not evidence:
        return f"no informative runs{tail}"
    ci = summary.get("rate_ci95") or [0.0, 1.0]
    return (
        f"{pct(summary.get('rate'))} (95% CI {pct(ci[0])} to {pct(ci[1])}), "
        f"{hits} of {evidence} runs{tail}"
    )


def outcomes(counts: Mapping[str, int]) -> str:
    names = {
        "target": "target race",
        "other": "other races only",
        "clean": "clean",
        "crash": "crashed",
        "timeout": "timed out",
        "tsan-failure": "TSAN failed to start",
        "unsymbolized": "unsymbolized reports",
        "gil-enabled": "GIL switched back on",
        "incomplete": "incomplete reports",
        "no-test": "no test ran",
        "source-tree": "package imported from its source tree",
    }
    parts = [f"{names.get(k, k)} {v}" for k, v in counts.items() if v]
    return ", ".join(parts) or "none"


def first_hit(summary: Mapping[str, Any]) -> str:
    t = summary.get("time_to_first_hit")
    run = summary.get("first_hit_run")
    if t is None and run is None:
        return "never hit"
    text = seconds(t) if t is not None else "?"
    if run is not None:
        text += f" (run {run})"
    return text


def build_cell(step: Mapping[str, Any]) -> str:
    """A step's build, alike on the console and in every report format."""
    if step.get("built") is False:
        return "fails"
    if step.get("cached"):
        return "cached"
    if step.get("built"):
        return seconds(step.get("build_seconds"))
    return "-"


def probability(x: float) -> str:
    """A probability as a percentage that reads 100% only when it is 1: "likely culprit
    888553ee (100%)" stood beside a bisect still short of the 0.9999 asked."""
    if x < 0.995 or x >= 1.0:
        return f"{x:.0%}"
    return f"{math.floor(x * 10000) / 100:.2f}%"


def begun_text(race: Mapping[str, Any], find: str, unit: str = "commit") -> str:
    """An other race that begins where the target ends (``bisect_answer.begun_at_answer``),
    alike on the console and in every report format; ``begun_advice`` says once what
    to do about them (it was said in full for each of four races, 20 lines)."""
    clean = "fixed" if find == "fix" else "clean"
    return (
        f"race {race['signature']} ({race['description']}) shows only where the target does "
        f"not: in {race['seen_in']} of {race['clean_side_runs']} runs at {clean} {unit}s, in "
        f"none of {race['racy_side_runs']} at racy ones"
    )


def begun_advice(count: int, find: str, unit: str = "commit") -> str:
    """What the races of ``begun_text`` may mean, and what to do."""
    culprit = "first fixed" if find == "fix" else "first bad"
    which = "this race" if count == 1 else "one of these races"
    return (
        f"If the {culprit} {unit} renamed or moved the racing code, {which} may be the target "
        f"under another name and the answer is no {find}: make it the target instead "
        "(replace target.functions with its functions, since every pattern must match; "
        "`repro parse LOG --recipe-skeleton N` writes one from one of its logs) and bisect "
        "again. A race that the fix itself brings shows the same way."
    )


def suppressed_text(suppressed: Mapping[str, Any] | None, runs: int) -> str | None:
    """Reports TSAN's suppressions hid (``Record.summary_json()["suppressed"]``), alike on
    the console and in every report format. Counted nowhere: a suppression that matched
    the target through a frame the static check cannot see (a caller, a module, a
    global's name) left its rate too low, or 0%."""
    if not suppressed or not suppressed.get("reports"):
        return None
    by = list((suppressed.get("by") or {}).items())
    shown = ", ".join(f"{line} x{n}" for line, n in by[:3])
    more = f", and {len(by) - 3} more" if len(by) > 3 else ""
    return (
        f"TSAN's suppressions hid {plural(int(suppressed['reports']), 'report')} in "
        f"{suppressed.get('runs')} of {runs} runs ({shown}{more}); a hidden report is "
        "counted nowhere: if the target race was among them, the rate here is too low "
        "(run without those lines to see what they hide)"
    )


def merge_text(merged: Mapping[str, Any]) -> str:
    """What a culprit that is a merge brought, and the bisect that names one of them,
    alike on the console and in every report format."""
    commits = list(merged.get("commits") or [])
    count = int(merged.get("count") or len(commits))
    shown = ", ".join(f"{c['label']} {c.get('subject') or ''}".strip() for c in commits[:3])
    more = f", and {count - 3} more" if count > 3 else ""
    commands = list(merged.get("commands") or [merged.get("command")])
    if len(commands) > 1:
        how = f"a bisect of each of its {len(commands)} branches names the one among them: "
        how += " ; ".join(str(c) for c in commands)
    else:
        how = f"to name the one among them: {commands[0]}"
    return (
        f"a merge: it brought {plural(count, 'commit')} ({shown}{more}); {how} "
        "(unless the merge made the change itself)"
    )


def not_found(bisect: Mapping[str, Any]) -> str:
    """A bisect without an answer, and where its belief stood when it stopped (the
    console said it while it ran: "likely culprit X (85%)")."""
    likely = bisect.get("likely")
    if not likely or not likely.get("commits"):
        return "not found yet"
    commits = likely["commits"]
    where = commits[0] if len(commits) == 1 else f"one of {commits[0]} .. {commits[-1]}"
    subject = f" {likely['subject']}" if likely.get("subject") and len(commits) == 1 else ""
    asked = bisect.get("requested_confidence")
    below = f", short of the {asked * 100:g}% asked" if asked is not None else ""
    return f"not found yet; most likely {where}{subject} ({likely['confidence']:.1%}{below})"


def confidence(bisect: Mapping[str, Any]) -> str:
    conf = bisect.get("confidence")
    asked = bisect.get("requested_confidence")
    if conf is None:
        return f"not reached (asked {asked})"
    text = f"{conf * 100:.2f}%"
    if asked is not None:
        text += f" (asked {asked * 100:g}%)"
    return text


def top_frames(frames: list[list[str]]) -> str:
    """Both accesses' frames; a side TSAN could not restore is "?", as the console
    shows it (a report that dropped it showed one side as if it were the race)."""
    if not any(frames):
        return "?"
    return " | ".join(" <- ".join(side) or "?" for side in frames)


def lost_stack_note(rows: int) -> str:
    """Why a table of other races has more rows than the count of distinct races."""
    return (
        f"{plural(rows, 'row')} of this table {'is' if rows == 1 else 'are'} another race "
        "of it with one stack that TSAN could not restore (noted): counted once."
    )


def same_race_note(whole: str | None) -> str:
    """The note of a signature that is another race with one stack lost (``Record.
    same_races``), alike on the console and in every report format."""
    return f"one stack lost: race {whole}" if whole else ""


def runs_made(runs: Any, reused: Any = None) -> str:
    """A bisect's runs, and how many of them it took from a stress record rather than ran
    (--calibration-from): the console and every report say it so."""
    text = plural(runs, "run")
    if reused:
        text += f" ({reused} of them from the stress record)"
    return text


def builds(count: int | None, from_cache: int | None) -> str:
    """A bisect's builds, saying how many an earlier run had left in the cache."""
    text = plural(count, "build")
    if from_cache and from_cache == count:
        text += " (all from the cache)" if from_cache > 1 else " (from the cache)"
    elif from_cache:
        text += f" ({from_cache} of them from the cache)"
    return text


def cost(bisect: Mapping[str, Any]) -> str:
    """A report's bisect document: its builds and runs."""
    builds_text = builds(bisect.get("builds"), bisect.get("builds_from_cache"))
    reused = (bisect.get("calibration_from") or {}).get("runs")
    runs = runs_made(bisect.get("runs"), reused)
    return f"{builds_text} ({seconds(bisect.get('build_seconds'))}), {runs}"


def commit_word(bisect: Mapping[str, Any]) -> str:
    return "release" if bisect.get("side") == "versions" else "commit"


def culprit_label(bisect: Mapping[str, Any]) -> str:
    what = "fixed" if bisect.get("direction") == "fix" else "introduced"
    return f"Race {what} by"


def floor_runs(value: Any) -> str:
    """A lower bound on runs as a reader may quote it: never rounded up (3.6 is not "at
    least 4"), to a tenth below 10 and to the run below above it."""
    x = max(0.0, float(value or 0))
    return f"{math.floor(x * 10) / 10:.1f}" if x < 10 else str(math.floor(x))


def at_answer(at: Mapping[str, Any]) -> str:
    """The runs at the clean commit an answer rests on, against the least any bisect needs
    there (``information.at_answer`` of a bisect's JSON); the console says it in these words
    too."""
    return (
        f"{at.get('runs')} of them at {at.get('commit')} (the {at.get('role')}), where no "
        f"bisect can average fewer than {floor_runs(at.get('floor_runs'))}"
    )


def against_bound(info: Mapping[str, Any]) -> str:
    """The bisect's runs against Fano's bound (``information`` of a bisect's JSON), in the
    words the console and every report format use."""
    ratio = info.get("ratio")
    return (
        f"{info.get('bisect_runs')} runs after calibration; no bisect can average fewer "
        f"than {floor_runs(info.get('bound_runs'))} at rate "
        f"{float(info.get('rate_estimate') or 0):.1%}"
        + (f" ({float(ratio):.1f}x the bound)" if ratio else "")
    )


# How many runs the report's plain loop allows, said once for Markdown and HTML.
LOOP_RUNS_WHY = (
    "enough to see the race with 99.9% probability at a quarter of the low end of the "
    "measured rate's 95% interval, as another machine may show it"
)


def beside_recipe_text(names: list[str]) -> str:
    """What to save beside the pasted recipe, alike in every report format."""
    them = "it" if len(names) == 1 else "them"
    return (
        f"Save {', '.join(names)} beside recipe.yaml: the recipe runs {them} from its own "
        "folder ({recipe_dir}); the plain script below carries a small one's text."
    )


def lacking_text(lacking: Sequence[str]) -> str:
    """Which of the target's names a race lacks, and how a template is written, alike on
    the console and in every report format ("" when it lacks none)."""
    if not lacking:
        return ""
    quoted = " and ".join(json.dumps(p) for p in lacking)
    verb = "matches" if len(lacking) == 1 else "match"
    out = f" ({quoted} {verb} no frame of it"
    if any("<" in p and "operator<" not in p for p in lacking):
        out += (
            "; a template's method is named with the arguments TSAN prints, "
            "Accumulator<long>::add, or with none, Accumulator::add"
        )
    return out + ")"


# Operators whose names hold brackets: kept whole, or `operator()` read `operator(...)`.
_OPERATOR = re.compile(r"operator(?:\(\)|\[\]|<=>|<<=?|>>=?|<=|>=|->\*?|<|>)")


def elide_lists(name: str, params: bool = True) -> str:
    """A C++ function's name with its template and argument lists elided ("<...>",
    "(...)"): for a title, and for a console table where C++ frames that share a long
    prefix (`pybind11_init__core(pybind11::module_&)::$_0::operator()(...)`) were all cut
    to the same `pybind11_init__core(py…`.

    A list follows a name; a bracket at the start or after `::` is part of the name and
    stays: Rust's `<T as Trait>::f`, C++'s `(anonymous namespace)::f`. A name whose
    brackets do not pair is kept whole. ``params=False`` keeps argument lists (their
    templates elided): what tells two lambdas of one function apart."""
    opening = "<(" if params else "<"
    closing = ">)" if params else ">"
    operators = _OPERATOR.findall(name)
    marked = _OPERATOR.sub("\0", name)  # a character no demangled name holds
    out: list[str] = []
    depth = 0
    keep = 0  # depth of a group that is part of the name, kept as written
    for i, c in enumerate(marked):
        if keep:
            out.append(c)
            keep += {"<": 1, "(": 1, ">": -1, ")": -1}.get(c, 0)
        elif c in "<(" and depth == 0 and (i == 0 or marked[:i].endswith("::")):
            out.append(c)
            keep = 1
        elif c in opening:
            if depth == 0:
                out.append(c + "...")
            depth += 1
        elif c in closing and depth:
            depth -= 1
            if depth == 0:
                out.append(c)
        elif depth == 0:
            out.append(c)
    if depth or keep:
        return name
    pieces = "".join(out).split("\0")
    return pieces[0] + "".join(op + rest for op, rest in zip(operators, pieces[1:], strict=True))
