"""`repro amplify`: measure what each knob does to the reproduction rate.

A knob (more threads, a tiny switch interval, pinning to one CPU, more parallel jobs)
is worth turning on only if it raises hits per minute, not just hits per run: a
reproducer twice as slow must hit more than twice as often. So each setting gets the
same number of runs, one knob changed at a time from the recipe's own settings, and
the table shows both rates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from repro.app.context import Overrides, prepare
from repro.app.executors import RunnerGone
from repro.app.loop import Limits, StressState, Tags, stress_loop
from repro.app.view import StressView
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import LoadedRecipe
from repro.runlog import Counts, RunDir, RunLog

if TYPE_CHECKING:
    from repro.app.cluster import Cluster


@dataclass(frozen=True)
class Setting:
    label: str
    overrides: Overrides
    jobs: int


def parse_values(text: str | None) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()] if text else []


def settings_from(
    base_jobs: int,
    threads: str | None,
    switch_interval: str | None,
    taskset: str | None,
    jobs: str | None,
) -> list[Setting]:
    """The baseline, then one setting per value of each knob asked for."""
    out = [Setting("recipe as is", Overrides(), base_jobs)]
    try:
        for v in parse_values(threads):
            out.append(Setting(f"threads={v}", Overrides(threads=int(v)), base_jobs))
        for v in parse_values(switch_interval):
            out.append(
                Setting(f"switch_interval={v}", Overrides(switch_interval=float(v)), base_jobs)
            )
        for v in parse_values(jobs):
            if int(v) < 1:
                raise ValueError(f"--jobs {v}: give 1 or more runs at once")
            out.append(Setting(f"jobs={v}", Overrides(), int(v)))
    except ValueError as exc:
        raise ReproError(f"cannot read a knob value: {exc}") from None
    for v in parse_values(taskset):
        out.append(Setting(f"taskset={v}", Overrides(taskset=v), base_jobs))
    if len(out) == 1:
        raise ReproError(
            "give at least one knob to compare: --threads 2,8 --switch-interval 1e-6 "
            "--taskset 0 --jobs 1,2"
        )
    return out


def run_amplify(
    loaded: LoadedRecipe,
    settings: list[Setting],
    runs: int,
    runs_dir: Path | None,
    console: Console,
    repo: str | None = None,
    cluster: Cluster | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Each setting in turn; with a cluster, built and run on its workers (the
    `jobs` knob then has no meaning: every worker thread runs)."""
    rundir = RunDir.create(runs_dir or default_runs_dir(), loaded.recipe.name, "amplify")
    rundir.keep_recipe(
        loaded.path, loaded.recipe.recipe_dir_files(), loaded.recipe.reproducer.command
    )
    rundir.write_meta(
        {"kind": "amplify", "recipe": loaded.recipe.name, "recipe_path": str(loaded.path)}
    )
    rows: list[dict[str, Any]] = []
    runlog = RunLog(rundir)
    was_interrupted = False
    gone: str | None = None  # the cluster's scheduler was lost (RunnerGone)
    for setting in settings:
        overrides = dataclasses.replace(setting.overrides, extension_repo=repo)
        executor = None
        if cluster is None:
            prepared = prepare(loaded, overrides)
        else:
            try:
                remote = cluster.prepare_local(loaded, overrides)
            except RunnerGone as exc:
                gone = str(exc)
                break
            prepared, executor = remote, cluster.runner(remote)
            cluster.tell(console)
        counts = runlog.record.settings.setdefault(setting.label, Counts())
        holder: dict[str, StressState] = {}
        view = StressView(holder, f"amplify: {setting.label}", str(rundir.path))

        def on_change(state: StressState, h: dict[str, StressState] = holder) -> None:
            h["state"] = state

        with Live(view, console=console, refresh_per_second=4, transient=True):
            state, interrupted = stress_loop(
                prepared.spec,
                prepared.matcher,
                Limits(runs=runs, jobs=setting.jobs),
                runlog,
                total=counts,
                on_change=on_change,
                tags=Tags(setting=setting.label),
                executor=executor,
            )
        elapsed = max(state.elapsed(), 1e-9)
        lo, hi = counts.ci95
        rows.append(
            {
                "setting": setting.label,
                "runs": counts.runs,
                "evidence_runs": counts.evidence,
                "hits": counts.hits,
                "rate": counts.rate,
                "rate_ci95": [lo, hi],
                "seconds": elapsed,
                "hits_per_minute": 60.0 * counts.hits / elapsed,
            }
        )
        if state.gone:
            gone = state.gone
            break
        if interrupted:
            was_interrupted = True
            break
    rundir.write("summary.json", {"kind": "amplify", "settings": rows})
    if gone is not None:
        console.print(f"[red]stopped:[/] {escape(gone)}", highlight=False)
        if rows:
            console.print("the settings measured before are below")
    if gone is not None and not rows:  # lost while building the first setting
        console.print(f"run directory: {rundir.path}", highlight=False)
        return 2, rows
    table = Table(title=f"Amplifiers for {loaded.recipe.name} ({runs} runs each)")
    for col in ("setting", "hits/runs", "rate (95% CI)", "runs/s", "hits/min"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    best = max(rows, key=lambda r: r["hits_per_minute"])
    for r in rows:
        lo, hi = r["rate_ci95"]
        table.add_row(
            r["setting"],
            # The rate's own denominator: runs that could not count (incomplete, crash
            # of TSAN) stood in it, and 4/10 read beside 44.4% (sweep 14).
            f"{r['hits']}/{r['evidence_runs']}"
            + (
                f" (+{r['runs'] - r['evidence_runs']} not counted)"
                if r["runs"] > r["evidence_runs"]
                else ""
            ),
            f"{r['rate']:.1%} ({lo:.1%}-{hi:.1%})",
            f"{r['runs'] / r['seconds']:.2f}",
            f"{r['hits_per_minute']:.1f}",
            style="bold green" if r is best and r["hits"] else None,
        )
    console.print(table)
    console.print(f"run directory: {rundir.path}", highlight=False)
    if gone is not None:
        return 2, rows  # a fault of the environment, as the README's exit statuses say
    if was_interrupted:
        console.print("interrupted: the settings measured so far are above")
        return 130, rows
    return (0 if any(r["hits"] for r in rows) else 1), rows
