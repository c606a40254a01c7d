"""The `repro` command line.

Thin: each command parses its options, calls the modules that do the work, and turns
ReproError into a one-line message and exit status 2. Exit status 0 means "the race
was reproduced" (stress) or "the bisect found its answer", 1 means it did not.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape

from repro import __version__
from repro.app.outputs import check_outputs
from repro.cli.common import (
    ClusterOpt,
    JobsOpt,
    KeepGoingOpt,
    RepoOpt,
    RetryFailedOpt,
    RunsDirOpt,
    SetOpt,
    SharedCacheOpt,
    ThreadsOpt,
    TimeoutOpt,
    WorkersOpt,
    console,
    err_console,
    fail,
    parse_duration,
)
from repro.errors import ReproError

app = typer.Typer(
    name="repro",
    help="Reproduce, measure and bisect free-threading data races found by ThreadSanitizer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Work with recipe files.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(f"repro {__version__}")
        raise typer.Exit(0)


# --- recipe ---------------------------------------------------------------------------


@recipe_app.command("validate")
def recipe_validate(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe files to check.")],
    set_: SetOpt = None,
) -> None:
    """Check recipes against the schema; every problem names its file, line and field."""
    from repro.recipe import FILL_ME, RecipeError, load_recipe

    bad = 0
    for path in recipes:
        try:
            loaded = load_recipe(path, tuple(set_ or ()))
        except RecipeError as exc:
            bad += 1
            err_console.print(f"[red]{escape(str(exc))}[/]", highlight=False)
            continue
        note = ""
        if loaded.recipe.target.unfilled:
            note = f" (target.functions is still {FILL_ME}: stress can run, bisect cannot)"
        console.print(
            f"[green]ok[/] {escape(str(path))}: {escape(loaded.recipe.name)}{note}",
            highlight=False,
        )
    if bad:
        raise typer.Exit(2)


# --- stress ---------------------------------------------------------------------------


@app.command()
def stress(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe file.")] = None,
    runs: Annotated[
        int | None, typer.Option("--runs", "-n", min=1, help="Stop after N runs.")
    ] = None,
    time_: Annotated[
        str | None, typer.Option("--time", "-t", help="Stop after this long (90s, 5m, 1h).")
    ] = None,
    jobs: JobsOpt = None,
    until_first: Annotated[
        bool, typer.Option("--until-first", help="Stop at the first target hit.")
    ] = False,
    ref: Annotated[
        str | None, typer.Option("--ref", help="Extension commit to test (default: recipe's).")
    ] = None,
    repo: RepoOpt = None,
    threads: ThreadsOpt = None,
    switch_interval: Annotated[
        float | None, typer.Option(help="sys.setswitchinterval value (REPRO_SWITCH_INTERVAL).")
    ] = None,
    taskset: Annotated[
        str | None, typer.Option(help="Pin runs to these CPUs (taskset -c).")
    ] = None,
    timeout: TimeoutOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the summary here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an earlier stress run directory.")
    ] = None,
    runs_dir: RunsDirOpt = None,
    set_: SetOpt = None,
    keep_going: KeepGoingOpt = False,
    retry_failed: RetryFailedOpt = False,
    suggest_target: Annotated[
        bool,
        typer.Option(
            "--suggest-target",
            help="At the end, print a recipe `target:` naming both accesses of the race.",
        ),
    ] = False,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
    shared_cache: SharedCacheOpt = None,
) -> None:
    """Run the reproducer again and again; count the target race apart from all others."""
    from repro.app.stress import StressOptions, run_stress

    seconds = parse_duration(time_) if time_ is not None else None
    if seconds is not None and seconds <= 0:
        raise fail(f"--time {time_}: give a time longer than 0 (e.g. 90s, 5m, 1h)")
    if seconds is not None and seconds > MAX_STRESS_SECONDS:
        raise fail(f"--time {time_}: give at most 365d (or leave --time out: --runs decides)")
    opts = StressOptions(
        recipe=recipe,
        runs=runs,
        seconds=seconds,
        jobs=jobs,
        until_first=until_first,
        ref=ref,
        repo=repo,
        threads=threads,
        switch_interval=switch_interval,
        taskset=taskset,
        timeout=timeout,
        json_out=json_out,
        report=report,
        resume=resume,
        runs_dir=runs_dir,
        sets=tuple(set_ or ()),
        keep_going=keep_going,
        suggest_target=suggest_target,
        workers=workers,
        cluster=cluster,
        shared_cache=shared_cache,
    )
    check_outputs(json_out=json_out, report=report, runs_dir=runs_dir, resume=resume)
    _retry_failed(retry_failed)
    code = run_stress(opts, console, err_console, Live)
    raise typer.Exit(code)


# --- parse ----------------------------------------------------------------------------


@app.command()
def parse(
    log: Annotated[
        Path,
        typer.Argument(
            help="A TSAN log (a CI log pasted into a file works; - reads standard input)."
        ),
    ],
    recipe_skeleton: Annotated[
        int | None,
        typer.Option(
            "--recipe-skeleton",
            help="Print a recipe targeting race number N of the list (1 = most frequent).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    depth: Annotated[int, typer.Option(help="Frames per access in a signature.")] = 3,
) -> None:
    """List the distinct races in a log, grouped by signature, with counts."""
    from repro.app.parse import run_parse
    from repro.recipe import SignatureSpec, check_option

    check_option(SignatureSpec, "depth", depth, "--depth")
    if log.is_dir():
        raise fail(f"{log}: is a directory; give a log file (or - for standard input)")
    if str(log) != "-" and not log.exists():
        raise fail(f"{log}: no such file")
    if str(log) == "-" or not log.is_file():
        # Standard input, a pipe, <(...): read once into a file, since a skeleton reads
        # the log again for its race.
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="repro-parse-") as tmp:
            copy = Path(tmp) / ("stdin.log" if str(log) == "-" else log.name or "log")
            with copy.open("wb") as out:
                if str(log) == "-":
                    shutil.copyfileobj(sys.stdin.buffer, out)
                else:
                    with log.open("rb") as src:
                        shutil.copyfileobj(src, out)
            shown = "standard input" if str(log) == "-" else str(log)
            raise typer.Exit(run_parse(copy, recipe_skeleton, as_json, depth, console, shown))
    raise typer.Exit(run_parse(log, recipe_skeleton, as_json, depth, console))


# A year: beyond the timers' range (threading.TIMEOUT_MAX) a wait overflows.
MAX_STRESS_SECONDS = 365 * 86400.0

# --- amplify --------------------------------------------------------------------------


@app.command()
def amplify(
    recipe: Annotated[Path, typer.Argument(help="Recipe file.")],
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Runs per setting.")] = 50,
    threads: Annotated[str | None, typer.Option(help="Thread counts to try, e.g. 2,8,16.")] = None,
    switch_interval: Annotated[
        str | None, typer.Option(help="sys.setswitchinterval values to try, e.g. 1e-6.")
    ] = None,
    taskset: Annotated[str | None, typer.Option(help="CPU lists to try, e.g. 0 or 0,1.")] = None,
    jobs: Annotated[str | None, typer.Option(help="Parallel job counts to try, e.g. 1,2.")] = None,
    repo: RepoOpt = None,
    runs_dir: RunsDirOpt = None,
    set_: SetOpt = None,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
    shared_cache: SharedCacheOpt = None,
) -> None:
    """Measure each amplifier's effect on the rate and on hits per minute."""
    from repro.app.amplify import run_amplify, settings_from
    from repro.app.cluster import open_cluster
    from repro.recipe import load_recipe

    settings = settings_from(os.cpu_count() or 1, threads, switch_interval, taskset, jobs)
    check_outputs(runs_dir=runs_dir)
    # A bad recipe is said before a cluster is started or reached, not seconds after.
    loaded = load_recipe(recipe, tuple(set_ or ()), needs_target=True)  # it counts the target
    dask = open_cluster(workers, cluster, shared_cache)
    try:
        code, _ = run_amplify(loaded, settings, runs, runs_dir, console, repo=repo, cluster=dask)
    finally:
        if dask is not None:
            dask.close()
    raise typer.Exit(code)


# --- bisect ---------------------------------------------------------------------------


@app.command()
def bisect(
    recipe: Annotated[Path | None, typer.Argument(help="Recipe file.")] = None,
    racy: Annotated[str | None, typer.Option(help="A ref where the race shows.")] = None,
    fixed: Annotated[
        str | None, typer.Option(help="A later ref where it is gone (finding a fix).")
    ] = None,
    clean: Annotated[
        str | None, typer.Option(help="An earlier ref without it (finding a regression).")
    ] = None,
    find: Annotated[str | None, typer.Option(help="`fix` (default) or `regression`.")] = None,
    confidence: Annotated[
        float | None, typer.Option(help="Probability the answer is right (default 0.99).")
    ] = None,
    versions: Annotated[
        str | None,
        typer.Option(help="Bisect CPython releases instead of commits: 3.13.0..3.13.5."),
    ] = None,
    then_git: Annotated[
        str | None,
        typer.Option(
            help="After --versions, bisect the CPython commits between the two releases "
            "found, in this git repository (URL or local clone with release tags)."
        ),
    ] = None,
    jobs: JobsOpt = None,
    repo: RepoOpt = None,
    calibration_runs: Annotated[
        int | None, typer.Option(help="Most runs spent measuring the rate at the racy end.")
    ] = None,
    calibration_from: Annotated[
        Path | None,
        typer.Option(
            "--calibration-from",
            help="A stress record of the racy end (its run directory or --json-out file): "
            "its runs are the calibration, if they ran as the bisect runs.",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    timeout: TimeoutOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the result here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue an interrupted bisect.")
    ] = None,
    runs_dir: RunsDirOpt = None,
    set_: SetOpt = None,
    keep_going: KeepGoingOpt = False,
    retry_failed: RetryFailedOpt = False,
    plan: Annotated[
        bool, typer.Option("--plan", help="Calibrate, say what the bisect will cost, stop.")
    ] = False,
    probes: Annotated[
        int | None,
        typer.Option(
            "--probes",
            min=1,
            help="With a cluster: commits probed at once (default: one per worker thread "
            "when a build takes as long as 10 runs or more, else 1).",
        ),
    ] = None,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
    shared_cache: SharedCacheOpt = None,
) -> None:
    """Find the commit that fixed (or caused) an intermittent race, with a stated confidence."""
    from repro.app.bisect import run_bisect
    from repro.app.bisect_run import BisectOptions
    from repro.recipe import BisectSpec, check_option

    # The recipe's `bisect:` rules, for the options that stand in for its fields.
    if confidence is not None:
        check_option(BisectSpec, "confidence", confidence, "--confidence")
    if calibration_runs is not None:
        check_option(BisectSpec, "max_calibration_runs", calibration_runs, "--calibration-runs")
    opts = BisectOptions(
        recipe=recipe,
        racy=racy,
        fixed=fixed,
        clean=clean,
        find=find,
        confidence=confidence,
        versions=versions,
        jobs=jobs,
        repo=repo,
        runs_dir=runs_dir,
        json_out=json_out,
        report=report,
        resume=resume,
        calibration_runs=calibration_runs,
        calibration_from=calibration_from,
        threads=threads,
        timeout=timeout,
        sets=tuple(set_ or ()),
        then_git=then_git,
        keep_going=keep_going,
        plan=plan,
        probes=probes,
        workers=workers,
        cluster=cluster,
        shared_cache=shared_cache,
    )
    check_outputs(json_out=json_out, report=report, runs_dir=runs_dir, resume=resume)
    _retry_failed(retry_failed)
    raise typer.Exit(run_bisect(opts, console))


from repro.cli import builds as cli_builds  # noqa: E402  (registers `build`, `builds`, `doctor`)

cli_builds.register(app)

from repro.cli import report as cli_report  # noqa: E402  (registers `report`)

cli_report.register(app)

from repro.cli import init as cli_init  # noqa: E402  (registers `init`)

cli_init.register(app)


def _retry_failed(wanted: bool) -> None:
    if wanted:
        from repro.builds.cache import BuildCache

        BuildCache.retry_failed_default = True


def _sigterm(signum: int, frame: object) -> None:
    # Treated like Ctrl-C: stop the runs and builds in flight, keep what was measured.
    raise KeyboardInterrupt


def _sighup(signum: int, frame: object) -> None:
    from repro.app.loop import lose_the_terminal

    lose_the_terminal()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> Any:
    import signal

    signal.signal(signal.SIGTERM, _sigterm)
    from repro.host.environ import forget_git_location

    forget_git_location(os.environ)
    # A closed terminal or a dropped ssh session (SIGHUP) ended repro with nothing
    # written: the run directory said neither what was measured nor how to resume.
    # Under nohup it stays ignored.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _sighup)
    # A shell starts background jobs with SIGINT ignored, and children inherit that;
    # `kill -INT` must still stop a run cleanly wherever repro was started from.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return app(argv if argv is not None else sys.argv[1:], standalone_mode=True)
    except ReproError as exc:
        _error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except SystemExit as exc:
        # typer turns a Ctrl-C that no command caught (during a build or a setup step,
        # before any run) into a silent exit 130; the user is owed the word.
        if exc.code == 130 and _interrupted(exc):
            err_console.print("interrupted")
        raise
    except Exception as exc:
        from repro.app.outputs import environment_fault

        fault = environment_fault(exc)
        if fault is not None:  # the user's files or disk, not a bug: say what and where
            _error(fault)
            sys.exit(2)
        _internal_error(exc)
        sys.exit(3)


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is behind this exception (cause or context, any depth)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def _error(message: str) -> None:
    fail(message)


def _internal_error(exc: Exception) -> None:
    """A bug in repro: one line, and the traceback kept where the user can send it."""
    import tempfile
    import traceback

    from rich.markup import escape

    from repro.paths import cache_dir

    details = traceback.format_exc()
    where: Path | None = None
    for folder in (cache_dir, lambda: Path(tempfile.gettempdir())):
        try:
            where = folder() / "last-error.txt"
            where.write_text(details, encoding="utf-8")
            break
        except (OSError, ReproError):
            where = None
    kept = f"the details are in {where}" if where else "the details could not be saved"
    err_console.print(
        f"[bold red]internal error:[/] {escape(f'{type(exc).__name__}: {exc}')}\n"
        f"This is a bug in repro; {escape(kept)}",
        highlight=False,
    )
