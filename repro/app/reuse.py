"""A stress record of the racy end, reused as the bisect's calibration.

The usual order of work is `repro stress` (does it reproduce, how often) and then
`repro bisect`; the bisect's first act is to measure the rate at the racy end again. When
the stress record ran the same build of the same commit, the same command, target, host
and parallelism, its runs are draws from the same rate, and the bisect takes them as its
calibration instead of spending new ones (it still calibrates on when they hold fewer
hits than the recipe's goal). Anything that could change the rate makes the reuse a
refusal that names the difference, never a silent mix of two rates.

The imported runs go into the bisect's own log (position 0, phase ``calibrate``), so the
fold, the strategy, `--resume` and the report read them like any run; the meta says
where they came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from repro.app.calibration import calibrated
from repro.builds.pypackage import BUILT_PACKAGE_VARIABLES
from repro.errors import ReproError
from repro.recipe import LoadedRecipe, experiment_command, load_run_recipe
from repro.runlog import RunDir
from repro.runlog.events import RunEvent, SignatureEvent
from repro.tsan.outcome import Outcome

if TYPE_CHECKING:
    from repro.app.bisect_run import BisectOptions, BisectRun

# The run context's fields that decide what a run does (``prepare``'s ``info``); the paths
# that follow from them (the build's directory) are left out, the build's key stands in.
_CONTEXT_FIELDS = ("command", "threads", "switch_interval", "prefix", "tsan_options")
# Variables the context sets from the fields above (compared there, once).
_FROM_FIELDS = ("PATH", "REPRO_THREADS", "REPRO_SWITCH_INTERVAL")
# The host's fields that bear on a race's rate: another machine is another rate.
_HOST_FIELDS = (("cpu", "count"), ("cpu", "usable"), ("cpu", "model"), ("os", "machine"))


@dataclass(frozen=True)
class StressSource:
    """A stress record found and read, before it is compared with the racy end."""

    path: Path
    loaded: LoadedRecipe
    meta: dict[str, Any]


def find_stress_record(given: Path) -> StressSource:
    """The stress run directory ``given`` names: the directory itself, or the JSON that
    `repro stress --json-out` wrote (it names its run directory)."""
    path = given.expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReproError(f"--calibration-from {given}: not a stress JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("kind") != "stress":
            raise ReproError(f"--calibration-from {given}: not the JSON of a stress run")
        run_dir = data.get("run_dir")
        if not isinstance(run_dir, str):
            raise ReproError(
                f"--calibration-from {given}: this stress JSON does not name its run "
                "directory (older repro); give the run directory instead"
            )
        path = Path(run_dir)
    if not path.is_dir():
        raise ReproError(f"--calibration-from {given}: no such stress record")
    try:
        loaded, meta = load_run_recipe(path, "stress")
    except ReproError as exc:
        raise ReproError(f"--calibration-from: {exc}") from None
    return StressSource(path.absolute(), loaded, meta)


def _dig(d: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _context(info: Mapping[str, Any], field: str) -> Any:
    """A field of the run context as it bears on the rate (the command without the words
    that change only what pytest prints)."""
    value = info.get(field)
    return experiment_command(value) if field == "command" and isinstance(value, str) else value


def differences(
    stress_info: Mapping[str, Any],
    racy_info: Mapping[str, Any],
    stress_host: Mapping[str, Any],
    racy_host: Mapping[str, Any],
    labels: tuple[str, str] = ("stress", "racy end"),
) -> list[str]:
    """What differs between the stress record's runs and the racy end's, as
    "field: stress X, racy end Y"; empty when its runs can stand for the racy end's.
    A resumed stress asks the same of its record and the runs it is about to add."""
    pairs: list[tuple[str, Any, Any]] = [
        (
            "extension commit",
            _dig(stress_info, "extension", "sha"),
            _dig(racy_info, "extension", "sha"),
        ),
        (
            "extension build",
            _dig(stress_info, "extension", "key"),
            _dig(racy_info, "extension", "key"),
        ),
        ("CPython build", _dig(stress_info, "python", "key"), _dig(racy_info, "python", "key")),
    ]
    pairs += [(f, _context(stress_info, f), _context(racy_info, f)) for f in _CONTEXT_FIELDS]
    env_a = stress_info.get("env") or {}
    env_b = racy_info.get("env") or {}
    pairs += [
        (f"variable {k}", env_a.get(k), env_b.get(k))
        for k in sorted(set(env_a) | set(env_b))
        if k not in _FROM_FIELDS and k not in BUILT_PACKAGE_VARIABLES
    ]
    pairs += [(".".join(k), _dig(stress_host, *k), _dig(racy_host, *k)) for k in _HOST_FIELDS]
    before, after = labels
    return [f"{name}: {before} {_said(a)}, {after} {_said(b)}" for name, a, b in pairs if a != b]


def _said(value: Any) -> str:
    """A value as the user would name it: a variable that is not set is "not set", not
    Python's ``None``."""
    return "not set" if value is None else repr(value)


Snapshot = tuple[Mapping[str, Any], Mapping[str, Any]]  # (run context, environment)


def refuse_another_experiment(run_dir: Path, kind: str, before: Snapshot, now: Snapshot) -> None:
    """A resume adds runs to the rates already measured; runs made under another
    TSAN_OPTIONS (the user's shell, not the recipe), another build or on another
    machine would be counted into them. Said before any run, with what differs."""
    changed = differences(before[0], now[0], before[1], now[1], labels=("the run had", "now"))
    if changed:
        raise ReproError(
            f"--resume {run_dir}: the runs it would add are not the same experiment as "
            "the ones recorded, and both would be counted as one rate:\n  "
            + "\n  ".join(changed)
            + f"\nrun as the record was made (the same environment), or start a new {kind}"
        )


def calibration_prefix(runs: list[RunEvent], goal: int, budget: int) -> list[RunEvent]:
    """The runs a calibration would have made: in order, up to the ``goal``-th hit (or the
    ``budget``); all of them when they hold fewer hits.

    Not the whole record: those runs are draws of the same rate, so the prefix is
    distributed exactly as a calibration run now would be, and every error rate measured
    for the strategy holds unchanged. The whole record makes the rate belief sharper
    (bench_bisect.py --stress-runs 200, 300 histories a cell): 9% fewer bisect runs at
    n = 200, p = 0.125, but with half the rate inside the range up to 8 of 300 answers
    wrong at p = 1, against at most 4 with the calibration's 5 hits.
    """
    out: list[RunEvent] = []
    hits = 0
    for ev in runs[:budget]:
        if hits >= goal:
            break
        out.append(ev)
        hits += ev.outcome is Outcome.TARGET
    return out


def check_recipe(source: StressSource, loaded: LoadedRecipe, timeout: float | None) -> None:
    """What can be compared before the bisect starts: the target, the timeout, a hit.

    ``timeout``: the bisect's --timeout, if given."""
    problems = []
    if source.loaded.recipe.target != loaded.recipe.target:
        problems.append("target: the stress record counted another race as the target")
    stress_timeout = (source.meta.get("overrides") or {}).get("timeout") or (
        source.loaded.recipe.reproducer.timeout
    )
    bisect_timeout = timeout or loaded.recipe.reproducer.timeout
    if stress_timeout != bisect_timeout:
        problems.append(f"timeout: stress {stress_timeout!r}, bisect {bisect_timeout!r}")
    _refuse(source, problems)
    counts = RunDir(source.path).record().counts
    if not counts.hits:
        raise ReproError(
            f"--calibration-from {source.path}: the stress record has no hit of the target "
            f"in {counts.evidence} runs, so it cannot show that the racy end is racy; leave "
            "--calibration-from out"
        )


def stressed_commit(meta: Mapping[str, Any]) -> str | None:
    """The extension commit a stress record's runs ran (None: it had no extension)."""
    sha = _dig(meta.get("context"), "extension", "sha")
    return sha if isinstance(sha, str) and sha else None


def check_racy_commit(source: StressSource, racy_sha: str) -> None:
    """Refuse a stress record of another extension commit than the racy end's before
    anything is built (the comparison of the whole run waits for the racy end's build;
    the commits need none, and a refusal came after an 81 s build)."""
    stressed = stressed_commit(source.meta)
    if stressed is not None and stressed != racy_sha:
        _refuse(
            source,
            [
                f"extension commit: stress {stressed}, racy end {racy_sha} (a bisect from "
                f"the commit stressed: --racy {stressed[:12]})"
            ],
        )


def _refuse(source: StressSource, problems: list[str]) -> None:
    if problems:
        raise ReproError(
            f"--calibration-from {source.path}: its runs cannot stand for the racy end's:\n  "
            + "\n  ".join(problems)
            + "\nStress the racy end as the bisect runs it, or leave --calibration-from out."
        )


def import_calibration(run: BisectRun, source: StressSource) -> bool:
    """Put the stress record's runs into the bisect's log as the racy end's calibration,
    or refuse (``ReproError``), naming what differs. False: the racy end does not build
    (the calibration says so). Idempotent: a bisect killed halfway through the import
    imports again under the same run indices, which the fold counts once."""
    meta = run.meta
    stress_meta = source.meta
    problems: list[str] = []
    jobs = stress_meta.get("jobs")
    if jobs != run.jobs:
        problems.append(f"runs at once: stress {jobs!r}, bisect {run.jobs!r} (give --jobs {jobs})")
    if (stress_meta.get("cluster") is None) != (run.cluster is None):
        problems.append("where: one ran on a cluster, the other on this machine")
    _refuse(source, problems)
    prepared = run.build(0)
    if prepared is None:
        return False
    _refuse(
        source,
        differences(
            stress_meta.get("context") or {},
            prepared.info,
            stress_meta.get("environment") or {},
            meta.get("environment") or {},
        ),
    )
    events = list(RunDir(source.path).events())
    first: dict[int, RunEvent] = {}  # a run is counted once, whatever a log holds (the fold)
    for e in events:
        if isinstance(e, RunEvent):
            first.setdefault(e.index, e)
    record = [first[i] for i in sorted(first) if first[i].outcome.is_evidence]
    runs = calibration_prefix(record, int(meta["calibration_hits"]), int(meta["calibration_runs"]))
    used = {s for e in runs for s in e.signatures}
    position = run.positions[0]
    for ev in events:
        if isinstance(ev, SignatureEvent) and ev.id in used:
            run.runlog.log(replace(ev, example=None))  # its log stays in the stress record
    for k, ev in enumerate(runs):
        run.runlog.log(
            replace(
                ev,
                index=k,  # the import comes first: no run has an index yet
                log_dir=None,
                pos=0,
                id=position.id,
                phase="calibrate",
                setting=None,
                worker=None,
            )
        )
    meta["calibration_from"] = {
        **meta["calibration_from"],
        "status": "imported",
        "runs": len(runs),
        "hits": sum(e.outcome is Outcome.TARGET for e in runs),
        "of": len(record),
    }
    run.rundir.update_meta(calibration_from=meta["calibration_from"])
    return True


def reuse_calibration(run: BisectRun, opts: BisectOptions) -> bool:
    """Take a stress record's runs as the calibration, once; False: the racy end does not
    build. A refusal fails the bisect (its run directory says why) and is said as an error."""
    wanted = run.meta.get("calibration_from") or {}
    if wanted.get("status") != "pending":
        return True
    try:
        if not import_calibration(run, find_stress_record(Path(wanted["path"]))):
            return calibrated(run, opts)  # says that the racy end does not build
    except ReproError as exc:
        if opts.resume is None and not run.record.counts.runs:
            # Refused before its first run: the directory would be a husk whose resume
            # went on without the check that refused it.
            shutil.rmtree(run.rundir.path, ignore_errors=True)
            raise
        run.meta.update(status="failed", failure=str(exc))
        run.rundir.write_meta(run.meta)
        raise
    done = run.meta["calibration_from"]
    run.console.print(
        f"[bold]calibration[/] at the racy end {escape(run.describe(0))}: reusing "
        f"{done['hits']} hits in {done['runs']} runs (the first {done['runs']} of "
        f"{done['of']}) of the stress record {escape(done['path'])}",
        highlight=False,
    )
    return True
