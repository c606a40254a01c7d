"""`repro stress`: prepare the recipe, run the loop with a live display, save the summary."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from repro.app.context import (
    Overrides,
    jobs_on_resume,
    prepare,
    refuse_on_resume,
    say_if_edited,
)
from repro.app.environment import InterpreterSoon, collect_environment
from repro.app.loop import Limits, StressState, stop_advice, stress_loop
from repro.app.outputs import outputs_meta, outputs_of_the_run
from repro.app.reuse import refuse_another_experiment, stressed_commit
from repro.app.runner import LINGER, discard_unlogged, reap_orphans
from repro.app.view import (
    PlainTicker,
    StressView,
    other_race_verdicts,
    print_near_misses,
    print_summary,
)
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import FILL_ME, LoadedRecipe, edited_since, load_recipe, load_run_recipe
from repro.report.fmt import suppressed_text
from repro.runlog import Record, RunDir, RunLog
from repro.tsan.outcome import STOP_A_STRESS

if TYPE_CHECKING:
    from repro.app.cluster import Cluster
    from repro.gitrepo import GitRepo

# Exit status of a stress run stopped because its runs could not show the race.
EXIT_INVALID = 2


@dataclass
class StressOptions:
    recipe: Path | None
    runs: int | None
    seconds: float | None
    jobs: int | None  # None: the machine's cores (on a resume, the run's own)
    until_first: bool
    ref: str | None = None
    repo: str | None = None
    threads: int | None = None
    switch_interval: float | None = None
    taskset: str | None = None
    timeout: float | None = None
    json_out: Path | None = None
    report: Path | None = None
    resume: Path | None = None
    runs_dir: Path | None = None
    sets: tuple[str, ...] = ()
    keep_going: bool = False  # count unsymbolized runs apart instead of stopping
    suggest_target: bool = False  # print a target naming both accesses at the end
    workers: int | None = None  # a LocalCluster of this many worker processes
    cluster: str | None = None  # or the address of a Dask scheduler
    shared_cache: Path | None = None  # a cache every worker sees


def build_summary(record: Record, meta: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """summary.json, --json-out and the console's closing lines: one dict. It names its
    run directory, so `repro bisect --calibration-from stress.json` finds the runs."""
    summary = record.summary_json()
    summary.update(
        {
            "kind": "stress",
            "run_dir": str(run_dir),
            "recipe": meta.get("recipe"),
            "recipe_path": meta.get("recipe_path"),
            "interrupted": bool(meta.get("interrupted")),
            "finished": bool(meta.get("finished")),
            "stopped_by": meta.get("stopped_by"),
            "elapsed": meta.get("elapsed"),
            "jobs": meta.get("jobs"),
            "limits": meta.get("limits"),
            "context": meta.get("context"),
        }
    )
    return summary


def _tested_sha(loaded: LoadedRecipe, meta: dict[str, Any]) -> str | None:
    """The extension commit the stress ran, where a bisect of the recipe searches the
    extension's history (a bisect over CPython's has its racy end on CPython's side)."""
    spec = loaded.recipe.bisect
    if spec is None or spec.side != "extension":
        return None
    return stressed_commit(meta)


def _racy_end_sha(loaded: LoadedRecipe, overrides: Overrides) -> str | None:
    """The commit the recipe's bisect starts from (None: it names none, or it does not
    resolve here)."""
    spec = loaded.recipe.bisect
    racy = spec.racy if spec is not None else None
    if racy is None:
        return None
    try:
        repo = _extension_repo(loaded, overrides)
        return None if repo is None else repo.resolve(racy)
    except ReproError:
        return None


def _extension_repo(loaded: LoadedRecipe, overrides: Overrides) -> GitRepo | None:
    """The extension's mirror, which prepare made (None: the recipe has no extension)."""
    ext = loaded.recipe.extension
    if ext is None:
        return None
    from repro.app.context import extension_location
    from repro.builds.cache import BuildCache
    from repro.gitrepo import GitRepo

    location = extension_location(loaded, overrides)
    return GitRepo.open_cached(location, BuildCache().base, web_url=ext.web_url)


def _say_bisect_hint(
    console: Console,
    loaded: LoadedRecipe,
    overrides: Overrides,
    meta: dict[str, Any],
    run_dir: Path,
) -> None:
    """The bisect that can take this stress record as its calibration, spelled out with
    the options that make it run as the stress did (none when the bisect has no option
    for one of them: it would refuse the record)."""
    if overrides.taskset or overrides.switch_interval is not None:
        return
    extra = [f"--set {shlex.quote(s)}" for s in loaded.sets]
    tested = _tested_sha(loaded, meta)
    if tested is not None and tested != _racy_end_sha(loaded, overrides):
        # Stressed elsewhere than the recipe's racy end (`--ref`): the bisect from this
        # commit is the one that can take its runs; the recipe's would refuse them.
        extra.append(f"--racy {tested[:12]}")
    for option, value in (
        ("--repo", overrides.extension_repo),
        ("--threads", overrides.threads),
        ("--timeout", overrides.timeout),
    ):
        if value is not None:
            extra.append(f"{option} {shlex.quote(str(value))}")
    console.print(
        "if this is the racy end of the recipe's range, a bisect can take these runs as its "
        f"calibration:  repro bisect {shlex.quote(str(loaded.path))} -j {int(meta['jobs'])} "
        + "".join(f"{x} " for x in extra)
        + f"--calibration-from {shlex.quote(str(run_dir))}",
        highlight=False,
        markup=False,
    )


def _extension_web_url(loaded: LoadedRecipe, overrides: Overrides) -> str | None:
    """The extension's project page (the recipe's `web_url`, else its mirror's origin's).

    Reports use it for links and for reproduce steps that clone from it rather than
    from this machine's copy. The mirror exists already (prepare made it).
    """
    ext = loaded.recipe.extension
    if ext is None:
        return None
    try:
        repo = _extension_repo(loaded, overrides)
        return None if repo is None else repo.web_url
    except ReproError:
        return ext.web_url


def run_stress(opts: StressOptions, console: Console, err: Console, live_cls: Any) -> int:
    from repro.app.cluster import open_cluster

    # A bad recipe is said before a cluster is started or reached, not seconds after.
    fresh = None
    interpreter = None
    if opts.resume is not None:
        refuse_on_resume(
            opts.resume,
            [
                ("a recipe file", opts.recipe),
                ("--ref", opts.ref),
                ("--repo", opts.repo),
                ("--threads", opts.threads),
                ("--switch-interval", opts.switch_interval),
                ("--taskset", opts.taskset),
                ("--timeout", opts.timeout),
                ("--set", opts.sets),
            ],
            "stress",
            " (only --runs, --time, --until-first and where to run)",
        )
    if opts.resume is None:
        if opts.recipe is None:
            raise ReproError("give a recipe file (or --resume RUN_DIR)")
        fresh = load_recipe(opts.recipe, opts.sets)
        interpreter = InterpreterSoon(fresh)
    settle = interpreter.wait if interpreter is not None else None
    cluster = open_cluster(opts.workers, opts.cluster, opts.shared_cache, settle)
    if cluster is None:
        return _run_stress(opts, console, err, live_cls, None, fresh, interpreter)
    with cluster:
        return _run_stress(opts, console, err, live_cls, cluster, fresh, interpreter)


def _run_stress(
    opts: StressOptions,
    console: Console,
    err: Console,
    live_cls: Any,
    cluster: Cluster | None,
    fresh: LoadedRecipe | None,
    interpreter: Callable[[], dict[str, Any] | None] | None,
) -> int:
    """``interpreter``: the interpreter probe under way (``InterpreterSoon``), or
    None on a resume, whose recipe is read here."""
    if opts.resume is not None:
        runlog = RunLog.resume(opts.resume)
        rundir = runlog.dir
        ended = reap_orphans(rundir.logs)
        if ended:
            console.print(f"ended {len(ended)} reproducer(s) left running by the killed repro")
        discard_unlogged(rundir)
        loaded, meta = load_run_recipe(rundir.path, "stress")
        say_if_edited(console, loaded)
        interpreter = InterpreterSoon(loaded)
        opts = outputs_of_the_run(opts, meta)
        limits_meta = meta.get("limits", {})
        # Resumed runs keep their original limits unless new ones are given.
        runs = opts.runs if opts.runs is not None else limits_meta.get("runs")
        seconds = opts.seconds if opts.seconds is not None else limits_meta.get("seconds")
        until_first = opts.until_first or bool(limits_meta.get("until_first"))
        ref = (meta.get("context") or {}).get("extension", {}).get("sha")
        jobs = jobs_on_resume(rundir.path, opts.jobs, meta, cluster is not None, "stress")
        overrides = Overrides(**meta.get("overrides", {}))
        for problem in rundir.problems:
            err.print(f"[yellow]warning:[/] {problem}", highlight=False)
    else:
        # run_stress loaded it (and started its interpreter probe), or said none was given
        assert fresh is not None and interpreter is not None
        loaded = fresh
        runs, seconds, until_first = opts.runs, opts.seconds, opts.until_first
        if runs is None and seconds is None and not until_first:
            runs = 100
        ref = opts.ref
        jobs = opts.jobs or os.cpu_count() or 1
        overrides = Overrides(
            threads=opts.threads,
            switch_interval=opts.switch_interval,
            taskset=opts.taskset,
            timeout=opts.timeout,
            extension_repo=opts.repo,
        )
        rundir = RunDir.create(opts.runs_dir or default_runs_dir(), loaded.recipe.name, "stress")
        runlog = RunLog(rundir)
        rundir.keep_recipe(
            loaded.path, loaded.recipe.recipe_dir_files(), loaded.recipe.reproducer.command
        )
        meta = {}

    record = runlog.record
    elapsed_before = float(meta.get("elapsed") or 0.0)
    console.print(f"[bold]repro stress[/] {loaded.recipe.name}  ({loaded.path})", highlight=False)
    suggest = opts.suggest_target or loaded.recipe.target.unfilled
    if loaded.recipe.target.unfilled:
        console.print(
            f"target.functions is still {FILL_ME}: every race counts as other, and the end "
            "names a target for the race you most likely mean",
            highlight=False,
            markup=False,
        )
    from repro.builds.progress import RichBuildProgress

    # --until-first given now asks for a hit of this session; one the run began with is
    # met once the record has a hit (a resumed run that had hit ran on for thousands).
    first_now = opts.until_first
    if until_first and not first_now and record.counts.hits and runs is None and seconds is None:
        runs = record.counts.runs  # its first hit is in: nothing left to run
    limits = Limits(
        runs=None if runs is None else max(0, int(runs) - record.counts.runs),
        seconds=None if seconds is None else max(0.0, float(seconds) - elapsed_before),
        until_first=first_now or (until_first and not record.counts.hits),
        jobs=jobs,
        stop_on=frozenset() if opts.keep_going else STOP_A_STRESS,
    )
    executor = None
    if cluster is None:
        try:
            prepared = prepare(loaded, overrides, ext_ref=ref, progress=RichBuildProgress(console))
        except (ReproError, KeyboardInterrupt):
            # Nothing was run: a new run directory would only be a husk that report and
            # --resume refuse ("no meta.json"). A resumed one keeps its runs.
            if opts.resume is None:
                shutil.rmtree(rundir.path, ignore_errors=True)
            raise
    else:
        where = cluster.describe()
        console.print(
            f"cluster: {where['workers']} workers at {where['scheduler']}; building on each",
            highlight=False,
        )
        prepared = cluster.prepare_local(loaded, overrides, ext_ref=ref)
        cluster.tell(console)
        from repro.app.cluster import LONG_CHUNKS, SHORT_CHUNKS

        # Only a hit that ends the loop wastes the rest of its chunk (a resumed
        # --until-first that already hit has no hit goal left).
        chunking = SHORT_CHUNKS if limits.hit_goal is not None else LONG_CHUNKS
        executor = cluster.runner(prepared, chunking)
    environment = collect_environment(prepared.info, interpreter())
    if opts.resume is not None and cluster is None:
        # On a cluster the workers' environments decide, and a resume has new ones.
        refuse_another_experiment(
            rundir.path,
            "stress",
            (meta.get("context") or {}, meta.get("environment") or {}),
            (prepared.info, environment),
        )
    meta.update(
        {
            "kind": "stress",
            "recipe": loaded.recipe.name,
            "recipe_path": str(loaded.path),
            "set": list(loaded.sets),
            "limits": {"runs": runs, "seconds": seconds, "until_first": until_first},
            "jobs": jobs if executor is None else executor.threads,
            "cluster": cluster.describe() if cluster is not None else None,
            "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
            "context": prepared.info,
            "web_url": _extension_web_url(loaded, overrides),
            "environment": environment,
            "interrupted": False,
            "finished": False,
            "elapsed": elapsed_before,
            **outputs_meta(opts),
        }
    )
    rundir.write_meta(meta)
    console.print(f"command: {prepared.spec.command}", highlight=False, markup=False)
    console.print(f"in: {prepared.spec.cwd}", highlight=False, markup=False)

    holder: dict[str, StressState] = {}
    view = StressView(holder, f"stress {loaded.recipe.name}", str(rundir.path))

    ticker = PlainTicker(console)

    def on_change(state: StressState) -> None:
        holder["state"] = state
        ticker(state)

    if record.counts.runs:
        console.print(
            f"resuming: {record.counts.runs} runs, {record.counts.hits} hits already measured"
        )
    with live_cls(
        view,
        console=console,
        refresh_per_second=4,
        transient=False,
        auto_refresh=console.is_terminal,
    ):
        state, interrupted = stress_loop(
            prepared.spec,
            prepared.matcher,
            limits,
            runlog,
            on_change=on_change,
            elapsed_before=elapsed_before,
            other_races=lambda: (
                record.runs_with_other,
                record.distinct_races(record.other_signature_ids),
            ),
            executor=executor,
        )
    meta.update(
        {
            "interrupted": interrupted,
            "finished": not interrupted and state.stopped_by is None,
            "stopped_by": state.stopped_by.value if state.stopped_by else None,
            "elapsed": elapsed_before + state.elapsed(),
        }
    )
    if executor is not None and meta.get("cluster"):
        # How many Dask tasks carried the runs (chunks: see DaskRunner).
        meta["cluster"]["tasks"] = meta["cluster"].get("tasks", 0) + executor.tasks
        meta["cluster"]["chunk_seconds"] = executor.chunking.seconds
    rundir.write_meta(meta)
    runlog.write_signatures()
    summary = build_summary(record, meta, rundir.path)
    rundir.write("summary.json", summary)
    inside = other_race_verdicts(console, rundir.path) if record.other_signature_ids else []
    print_summary(console, summary, str(rundir.path), inside)
    print_near_misses(console, rundir.path, record.counts.runs, suggest)
    hidden = suppressed_text(summary.get("suppressed"), record.counts.runs)
    if hidden:
        console.print(f"note: {hidden}", style="yellow", highlight=False, markup=False)
    if record.lingered:
        console.print(
            f"note: in {record.lingered} of {record.counts.runs} runs the reproducer exited "
            f"with processes of its own still running; they were killed {LINGER:g} s later, "
            "and a race of theirs after that is not counted (make the reproducer wait for "
            "its children)",
            style="yellow",
            highlight=False,
            markup=False,
        )
    if state.lost:
        console.print(
            f"{state.lost} run(s) lost with the worker that ran them (not counted; "
            "made again in their place)"
        )
    if state.gone:
        err.print(f"[red]stopped:[/] {escape(state.gone)}", highlight=False)
        again = f" --cluster {opts.cluster}" if opts.cluster else ""
        when = "when the cluster is back, " if cluster is not None else ""
        console.print(
            f"{record.counts.runs} runs kept; {when}resume with  "
            f"repro stress --resume {rundir.path}{again}",
            highlight=False,
            markup=False,
        )
    elif interrupted:
        console.print(f"interrupted: resume with  repro stress --resume {rundir.path}")
    elif (
        record.counts.hits
        and loaded.recipe.bisect is not None
        and executor is None
        and not edited_since(loaded)  # a bisect of the file now is not this record's
    ):
        _say_bisect_hint(console, loaded, overrides, meta, rundir.path)
    from repro.app.outputs import write_outputs

    write_outputs(rundir.path, json.dumps(summary, indent=2) + "\n", opts.json_out, opts.report)
    if state.gone:
        return EXIT_INVALID  # a fault of the environment, as the README's exit statuses say
    if interrupted:
        return 130
    if state.stopped_by is not None:
        advice = stop_advice(
            state.stopped_by, state.stopped_detail, prepared.info.get("symbolizer")
        )
        err.print(
            f"[red]stopped: a run was {state.stopped_by.value}[/] and cannot count. "
            f"{escape(advice)} Pass --keep-going to count such runs apart and go on.",
            highlight=False,
        )
        return EXIT_INVALID
    return 0 if record.counts.hits else 1
