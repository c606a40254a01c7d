"""`repro stress`: prepare the recipe, run the loop with a live display, save the summary."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from repro.context import Overrides, prepare
from repro.environment import collect_environment
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import load_recipe, load_run_recipe
from repro.rundir import RunDir
from repro.stress import Limits, StressState, Tally, load_tally, stress_loop
from repro.stress_view import PlainTicker, StressView, print_summary


@dataclass
class StressOptions:
    recipe: Path | None
    runs: int | None
    seconds: float | None
    jobs: int
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


def build_summary(tally: Tally, meta: dict[str, Any]) -> dict[str, Any]:
    summary = tally.summary()
    summary.update(
        {
            "kind": "stress",
            "recipe": meta.get("recipe"),
            "recipe_path": meta.get("recipe_path"),
            "interrupted": bool(meta.get("interrupted")),
            "finished": bool(meta.get("finished")),
            "elapsed": meta.get("elapsed"),
            "jobs": meta.get("jobs"),
            "limits": meta.get("limits"),
            "context": meta.get("context"),
        }
    )
    return summary


def run_stress(opts: StressOptions, console: Console, err: Console, live_cls: Any) -> int:
    if opts.resume is not None:
        rundir = RunDir.open(opts.resume)
        loaded, meta = load_run_recipe(rundir.path, "stress")
        limits_meta = meta.get("limits", {})
        # Resumed runs keep their original limits unless new ones are given.
        runs = opts.runs if opts.runs is not None else limits_meta.get("runs")
        seconds = opts.seconds if opts.seconds is not None else limits_meta.get("seconds")
        until_first = opts.until_first or bool(limits_meta.get("until_first"))
        ref = opts.ref or (meta.get("context") or {}).get("extension", {}).get("sha")
        overrides = Overrides(**meta.get("overrides", {}))
        tally, first_index = load_tally(rundir)
    else:
        if opts.recipe is None:
            raise ReproError("give a recipe file (or --resume RUN_DIR)")
        loaded = load_recipe(opts.recipe, opts.sets)
        runs, seconds, until_first = opts.runs, opts.seconds, opts.until_first
        if runs is None and seconds is None and not until_first:
            runs = 100
        ref = opts.ref
        overrides = Overrides(
            threads=opts.threads,
            switch_interval=opts.switch_interval,
            taskset=opts.taskset,
            timeout=opts.timeout,
            extension_repo=opts.repo,
        )
        tally, first_index = Tally(), 0
        rundir = RunDir.create(opts.runs_dir or default_runs_dir(), loaded.recipe.name, "stress")
        shutil.copyfile(loaded.path, rundir.path / "recipe.yaml")
        meta = {}

    console.print(f"[bold]repro stress[/] {loaded.recipe.name}  ({loaded.path})", highlight=False)
    from repro.builds.progress import RichBuildProgress

    prepared = prepare(loaded, overrides, ext_ref=ref, progress=RichBuildProgress(console))
    limits = Limits(runs=runs, seconds=seconds, until_first=until_first, jobs=opts.jobs)
    meta.update(
        {
            "kind": "stress",
            "recipe": loaded.recipe.name,
            "recipe_path": str(loaded.path),
            "set": list(loaded.sets),
            "limits": {"runs": runs, "seconds": seconds, "until_first": until_first},
            "jobs": opts.jobs,
            "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
            "context": prepared.info,
            "environment": collect_environment(prepared.info),
            "interrupted": False,
            "finished": False,
            "elapsed": tally.elapsed_before,
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

    if tally.runs:
        console.print(f"resuming: {tally.runs} runs, {tally.hits} hits already measured")
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
            rundir,
            tally=tally,
            first_index=first_index,
            on_change=on_change,
        )
    meta.update(
        {
            "interrupted": interrupted,
            "finished": not interrupted,
            "elapsed": tally.elapsed_before + state.elapsed(),
            "time_to_first_hit": tally.first_hit_seconds,
        }
    )
    rundir.write_meta(meta)
    summary = build_summary(tally, meta)
    rundir.write("summary.json", summary)
    print_summary(console, summary, str(rundir.path))
    if interrupted:
        console.print(f"interrupted: resume with  repro stress --resume {rundir.path}")
    from repro.outputs import write_outputs

    write_outputs(rundir.path, json.dumps(summary, indent=2) + "\n", opts.json_out, opts.report)
    if tally.runs and tally.outcomes.get("tsan-failure", 0) == tally.runs:
        err.print(
            "[red]TSAN failed to start in every run.[/] Try `repro doctor`; on kernels with "
            "vm.mmap_rnd_bits > 28 run `sysctl vm.mmap_rnd_bits=28` or use --setarch."
        )
    return 0 if tally.hits else 1
