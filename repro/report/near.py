"""Near misses of a run directory: the other races that match part of the target.

A run that never hits its target but shows a race in every run is most often a
target that is slightly wrong (one access named, a depth too small, another kind).
The kept example log of each other race is re-parsed (as the report does) and tried
against the recipe's target with repro.tsan.nearmiss, so the console can say, at the
end of a stress run or a bisect, what did not match and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repro.report.fmt import lacking_text
from repro.report.runfiles import RunFiles, example_report, load_run
from repro.report.tsantext import first_not_noise, report_noise_module
from repro.runlog import SignatureStats
from repro.tsan.model import Report
from repro.tsan.nearmiss import (
    NearMiss,
    SuggestedTarget,
    extension_race_first,
    lacking_patterns,
    near_miss,
    suggest_target,
)
from repro.tsan.signature import starts_outside_interpreter

MAX_SHOWN = 3


@dataclass(frozen=True)
class SeenNearMiss:
    miss: NearMiss
    runs: int  # runs that showed it
    log: str | None  # the kept log it was read from, relative to the run directory


def near_misses(run_dir: Path) -> list[SeenNearMiss]:
    """The run's other races that nearly match the target (see ``near_misses_of``)."""
    return near_misses_of(load_run(run_dir))


def near_misses_of(files: RunFiles) -> list[SeenNearMiss]:
    """The run's other races that nearly match the target, those holding more of the
    target's names first, then most runs first: those seen in more runs than the target
    was.

    A race that nearly matches a target that hits at least as often is not a target
    written wrong but another race through the same code: the reference-count races
    that a racy extension causes inside CPython have its function deeper in their
    stacks (a real bisect showed 3 of them in 6, 6 and 5 of 61 runs, the target in 6,
    and suggested `target.depth: 9` for each).
    """
    if files.recipe is None:
        return []
    rule = files.recipe.target.rule()
    depth = files.recipe.signature.depth
    target_runs = files.record.counts.hits
    found = []
    # A race seen with one stack lost, where the record saw it whole too: the whole one
    # is the race to advise on (the other can name one side only).
    partial = files.record.same_races()
    for st in files.record.signatures.values():
        if st.entry.target or st.runs <= target_runs or st.entry.id in partial:
            continue
        report, log = example_report(files, st.entry.id, st.entry.example)
        if report is None:
            continue
        miss = near_miss(report, rule, files.drop, depth)
        if miss is not None:
            found.append(SeenNearMiss(miss, st.runs, log))
    found.sort(key=lambda s: (s.miss.absent, -s.runs, s.miss.signature.id))
    return found


def _report_of(files: RunFiles, sig_id: str, example: str | None) -> Report | None:
    report, _ = example_report(files, sig_id, example)
    return report if isinstance(report, Report) else None


def suggested_target(run_dir: Path) -> tuple[str, SuggestedTarget, str | None] | None:
    """The race a user most likely means (see ``suggested_target_of``)."""
    return suggested_target_of(load_run(run_dir))


def suggested_target_of(
    files: RunFiles, misses: list[SeenNearMiss] | None = None
) -> tuple[str, SuggestedTarget, str | None] | None:
    """(signature id, target naming both accesses, the uninstrumented module the race is
    wholly inside or None) for the race a user most likely means (``_likely_race``)."""
    found = _likely_race(files, misses)
    if found is None:
        return None
    sig_id, report = found
    return sig_id, suggest_target(report, files.drop), report_noise_module(report)


def _likely_race(files: RunFiles, misses: list[SeenNearMiss] | None) -> tuple[str, Report] | None:
    """(signature id, its example report) of the race a user most likely means.

    The target race when runs hit it (its target then names both sides exactly);
    else the near miss seen in most runs; else the other race seen in most runs,
    where the recipe runs an extension in CPython, one that starts in the extension
    before any that lies wholly inside CPython (see ``starts_outside_interpreter``).
    """
    partial = files.record.same_races()  # seen whole too: advise on the whole one
    stats = sorted(
        (s for s in files.record.signatures.values() if s.entry.id not in partial),
        key=lambda s: (not s.entry.target, -s.runs, s.entry.id),
    )
    if not stats:
        return None
    drop = files.drop
    reports: dict[str, Report | None] = {}

    def report_of(st: SignatureStats) -> Report | None:
        if st.entry.id not in reports:
            reports[st.entry.id] = _report_of(files, st.entry.id, st.entry.example)
        return reports[st.entry.id]

    chosen = stats[0]
    if not chosen.entry.target:
        if misses is None:
            misses = near_misses_of(files)
        if misses:
            sig_id = misses[0].miss.signature.id
            chosen = next(s for s in stats if s.entry.id == sig_id)
        elif files.recipe is not None and files.recipe.python and files.recipe.extension:
            outside = (
                (r := report_of(st)) is not None and starts_outside_interpreter(r, drop)
                for st in stats
            )
            chosen = stats[extension_race_first(outside)]
        else:
            # Not a race wholly inside code the build does not instrument (Rust's std,
            # glibc), which the report itself calls noise.
            found = first_not_noise(report_of(st) for st in stats)
            chosen = stats[found] if found is not None else chosen
    report = report_of(chosen)
    return None if report is None else (chosen.entry.id, report)


def unmatched_race(
    files: RunFiles, misses: list[SeenNearMiss]
) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
    """(signature id, its names, the target's patterns it lacks) of the race a user most
    likely means, when no run hit and nothing of the target is in any race seen
    (``misses``: the run's near misses, which the caller has read already): a name
    written otherwise than TSAN prints it, or the wrong race. Saying which race was there,
    and which of the target's names it lacks, lets the user tell."""
    if files.record.counts.hits or misses or files.recipe is None:
        return None
    found = _likely_race(files, misses)
    if found is None or report_noise_module(found[1]) is not None:
        return None
    sig_id, report = _fewest_lacking(files, found)
    target = suggest_target(report, files.drop)
    lacking = lacking_patterns(report, files.recipe.target.rule(), files.drop)
    return sig_id, (*target.functions, *target.files), lacking


# Other races read (their example logs) when looking for the one that lacks fewest names.
_LACKING_LOOK = 20


def _fewest_lacking(files: RunFiles, first: tuple[str, Report]) -> tuple[str, Report]:
    """Of the races seen most often, the one that lacks the fewest of the target's names
    (``first`` where none lacks fewer): with one name misspelt, the race that has all the
    others is the one meant (sweep 15 was shown a race lacking two of four names, beside
    one that lacked only the misspelt one)."""
    assert files.recipe is not None
    rule = files.recipe.target.rule()
    best_id, best = first
    fewest = len(lacking_patterns(best, rule, files.drop))
    partial = files.record.same_races()
    stats = sorted(
        (s for s in files.record.signatures.values() if s.entry.id not in partial),
        key=lambda s: (-s.runs, s.entry.id),
    )
    for st in stats[:_LACKING_LOOK]:
        if fewest <= 1:
            break
        report = _report_of(files, st.entry.id, st.entry.example)
        if report is None or report_noise_module(report) is not None:
            continue
        n = len(lacking_patterns(report, rule, files.drop))
        if n < fewest:
            best_id, best, fewest = st.entry.id, report, n
    return best_id, best


def strongest_near_miss(run_dir: Path) -> int:
    """The runs that showed the most frequent near miss (0: none)."""
    return max((seen.runs for seen in near_misses_of(load_run(run_dir))), default=0)


def near_miss_lines(run_dir: Path, runs: int, hint: bool = True) -> list[str]:
    """What the console prints at the end: each near miss with its runs and fixes."""
    lines: list[str] = []
    files = load_run(run_dir)
    misses = near_misses_of(files)
    for seen in misses[:MAX_SHOWN]:
        body = seen.miss.lines()
        body[0] = f"near miss: {body[0]}, in {seen.runs} of {runs} runs"
        lines += body
        if seen.log:
            lines.append(f"  example log: {run_dir / seen.log}")
    if len(misses) > MAX_SHOWN:
        lines.append(f"... and {len(misses) - MAX_SHOWN} more near misses")
    if misses and hint:
        lines.append(
            "a target naming both accesses: repro stress RECIPE --suggest-target "
            "(or repro parse LOG --recipe-skeleton N)"
        )
    unmatched = unmatched_race(files, misses) if hint else None
    if unmatched is not None:
        sig_id, names, lacking = unmatched
        lines.append(
            f"no race seen has all of the target's names; race {sig_id} has "
            f"{'; '.join(names)}{lacking_text(lacking)}: repro stress RECIPE "
            "--suggest-target prints a target for it"
        )
    return lines
