"""`repro bisect`: calibrate the racy end, then let the strategy pick commits.

The strategy (repro.strategy.bisect) is pure; this module does the I/O around it:
building commits, running the reproducer, and logging every event to the run
directory (repro.runlog) before acting on it, so that `--resume` replays the same
events into a fresh strategy and continues exactly where the last process stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from repro.app.bisect_run import (
    EXIT_INVALID,
    GIL_UNUSABLE,
    BisectOptions,
    BisectRun,
    Position,
    StopBisect,
    expand_versions,
    fail,
    say_step,
)
from repro.app.calibration import TargetLooksWrong, calibrate
from repro.app.context import (
    Overrides,
    extension_location,
    jobs_on_resume,
    refuse_on_resume,
    say_if_edited,
)
from repro.app.environment import (
    collect_environment,
    interpreter_record,
    this_process_variables,
)
from repro.app.executors import RunnerGone
from repro.app.lanes import LanesDoNotPay, probe_lanes
from repro.app.loop import Limits
from repro.app.outputs import outputs_meta, outputs_of_the_run
from repro.app.reuse import (
    check_racy_commit,
    check_recipe,
    find_stress_record,
    refuse_another_experiment,
    reuse_calibration,
)
from repro.app.runner import discard_unlogged, reap_orphans
from repro.app.view import (
    fmt_seconds,
    other_race_verdicts,
    print_near_misses,
    print_symptom_note,
)
from repro.builds.cache import BuildError
from repro.errors import ReproError
from repro.paths import runs_dir as default_runs_dir
from repro.recipe import (
    BisectSpec,
    LoadedRecipe,
    check_option,
    load_recipe,
    load_run_recipe,
)
from repro.report.fmt import (
    against_bound,
    at_answer,
    begun_advice,
    begun_text,
    merge_text,
    runs_made,
    suppressed_text,
)
from repro.report.fmt import builds as fmt_builds
from repro.runlog import RunDir, RunLog
from repro.runlog.bisect_answer import blame, information
from repro.strategy.bisect import Done, Probe
from repro.strategy.terms import Find, Side, Terms
from repro.tsan.outcome import INVALID_HINTS, Outcome, invalid_runs_kind

if TYPE_CHECKING:
    from repro.app.cluster import Cluster


def _range_problem(repo: Any, terms: Terms, old: str, new: str, old_sha: str, new_sha: str) -> str:
    """Why ``old``..``new`` is no range, in the options the user gave."""
    racy, other = (old, new) if terms.find is Find.FIX else (new, old)
    given = f"--racy {racy} and {terms.clean_option} {other}"
    if repo.is_ancestor(new_sha, old_sha):
        if terms.find is Find.FIX:
            return (
                f"{given}: the racy end is the newer commit; a fix search goes from a racy "
                "commit to a later one where the race is gone (for where it began, "
                "--find regression with --clean OLDER --racy NEWER)"
            )
        return (
            f"{given}: the clean end is the newer commit; a regression search goes from a "
            "clean commit to a later racy one (for where it was fixed, --find fix)"
        )
    return (
        f"{given}: the two are not on one line of history (following first parents from "
        f"{new} does not reach {old}); give two commits of one branch" + str(repo.shallow_note())
    )


def _commit_positions(
    loaded: LoadedRecipe, overrides: Overrides, terms: Terms, old: str, new: str
) -> tuple[list[Position], list[int], dict[str, Any]]:
    from repro.builds.cache import BuildCache
    from repro.gitrepo import GitRepo

    cache = BuildCache()
    web_url = None
    if terms.side is Side.EXTENSION:
        location = extension_location(loaded, overrides)
        ext = loaded.recipe.extension
        web_url = ext.web_url if ext is not None else None
    else:
        py = loaded.recipe.python
        if py is None or not py.git:
            raise ReproError(
                f"{loaded.path}: bisecting CPython commits needs `python.git` in the recipe "
                "(or use --versions to bisect over releases)"
            )
        location = loaded.resolve_repo(py.git)
    # The recipe's web_url from the first bisect on, so links are there from the start.
    repo = GitRepo.open_cached(location, cache.base, web_url=web_url)
    racy_first = terms.find is Find.FIX
    names = ("racy", terms.clean_option.lstrip("-"))
    old_name, new_name = names if racy_first else names[::-1]

    def resolve(name: str, ref: str) -> str:
        try:
            return repo.resolve(ref)
        except ReproError as exc:
            # Which end it was, as the user gave it: an option or the recipe's field.
            raise ReproError(f"--{name} {ref} (or bisect.{name} in the recipe): {exc}") from None

    old_sha, new_sha = resolve(old_name, old), resolve(new_name, new)
    try:
        shas = repo.first_parent_range(old_sha, new_sha)
    except ReproError:
        raise ReproError(_range_problem(repo, terms, old, new, old_sha, new_sha)) from None
    if len(shas) < 2:
        raise ReproError(f"the range {old}..{new} has no commits to search")
    positions = []
    for sha in shas:
        info = repo.info(sha)
        positions.append(
            Position(
                id=sha,
                label=info.short,
                info={
                    "sha": sha,
                    "short": info.short,
                    "subject": info.subject,
                    "author": info.author,
                    "date": info.date,
                    "url": info.url,
                    **({"merge": True} if len(info.parents) > 1 else {}),
                },
            )
        )
    depth0 = repo.depth(shas[0])
    anchors = terms.search_order([depth0 + k for k in range(len(shas))])
    return terms.search_order(positions), anchors, {"repo": location, "web_url": repo.web_url}


def run_bisect(opts: BisectOptions, console: Console) -> int:
    from repro.app.cluster import open_cluster

    # A bad recipe is said before a cluster is started or reached, not seconds after.
    fresh = None
    if opts.resume is None:
        if opts.recipe is None:
            raise ReproError("give a recipe file (or --resume RUN_DIR)")
        fresh = load_recipe(opts.recipe, opts.sets, needs_target=True)
        if opts.calibration_from is not None:
            source = find_stress_record(opts.calibration_from)
            check_recipe(source, fresh, opts.timeout)
            opts = dataclasses.replace(opts, calibration_from=source.path)  # found once
            stress_jobs = source.meta.get("jobs")
            if opts.jobs is None and isinstance(stress_jobs, int) and stress_jobs > 0:
                # Its runs are the calibration only at their own parallelism: without a
                # -j of the user's, take theirs rather than refuse the cores' count.
                opts = dataclasses.replace(opts, jobs=stress_jobs)
    elif opts.calibration_from is not None:
        raise ReproError("--calibration-from starts a bisect; a resumed one has its calibration")
    else:
        refuse_on_resume(
            opts.resume,
            [
                ("a recipe file", opts.recipe),
                ("--racy", opts.racy),
                ("--fixed", opts.fixed),
                ("--clean", opts.clean),
                ("--find", opts.find),
                ("--confidence", opts.confidence),
                ("--versions", opts.versions),
                ("--repo", opts.repo),
                ("--threads", opts.threads),
                ("--timeout", opts.timeout),
                ("--calibration-runs", opts.calibration_runs),
                ("--set", opts.sets),
            ],
            "bisect",
        )
    cluster = open_cluster(opts.workers, opts.cluster, opts.shared_cache)
    if cluster is None:
        return _run_bisect(opts, console, None, fresh)
    with cluster:
        where = cluster.describe()
        console.print(
            f"cluster: {where['workers']} workers at {where['scheduler']}", highlight=False
        )
        return _run_bisect(opts, console, cluster, fresh)


def _run_bisect(
    opts: BisectOptions, console: Console, cluster: Cluster | None, fresh: LoadedRecipe | None
) -> int:
    if opts.resume is not None:
        runlog = RunLog(RunDir.open(opts.resume))
        runlog.dir.lock()
        ended = reap_orphans(runlog.dir.logs)
        discard_unlogged(runlog.dir)
        loaded, meta = load_run_recipe(runlog.dir.path, "bisect")
        opts = outputs_of_the_run(opts, meta)
        say_if_edited(console, loaded)
        overrides = Overrides(**meta.get("overrides", {}))
        jobs = jobs_on_resume(runlog.dir.path, opts.jobs, meta, cluster is not None, "bisect")
        if cluster is None and "shell_env" in meta:
            # On a cluster the workers' environments decide, and each build records its
            # own. "environment" is rewritten by the builds (the reproducer's variables,
            # the recipe's included): the shell's own are kept apart at the start.
            refuse_another_experiment(
                runlog.dir.path,
                "bisect",
                ({"env": meta["shell_env"]}, meta.get("environment") or {}),
                ({"env": this_process_variables()["env"]}, collect_environment(None)),
            )
        run = BisectRun(runlog, loaded, meta, console, jobs, overrides, opts.keep_going)
        runlog.replay()
        for problem in runlog.dir.problems:
            console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)
        if ended:
            console.print(f"ended {len(ended)} reproducer(s) left running by the killed repro")
        console.print(
            f"[bold]resuming[/] bisect of {escape(loaded.recipe.name)}: "
            f"{run.record.counts.runs} runs already measured"
        )
    else:
        assert fresh is not None  # run_bisect loaded it, or said that none was given
        run = _new_run(fresh, opts, console)
    run.probes = opts.probes
    if cluster is not None:
        run.cluster = cluster
        # Probes are batched for the runs that go at once: every worker's thread.
        run.jobs = cluster.threads()
    return _drive(run, opts)


def check_versions(loaded: LoadedRecipe, versions: list[str]) -> None:
    """Every release of the range must be obtainable before the first run.

    A release whose source cannot be had is not a release that does not build:
    skipping it would let the bisect name a neighbour as the culprit.
    """
    from repro.builds.cpython import tarball_origin
    from repro.gitrepo import is_url

    py = loaded.recipe.python
    assert py is not None
    missing = []
    for v in versions:
        try:
            origin = tarball_origin(v, py.source, loaded.base_dir)
        except BuildError as exc:
            missing.append(f"{v} ({exc})")
            continue
        if not is_url(origin):
            named = re.match(r"Python-(\d+\.\d+\.\d+\w*)\.t", Path(origin).name)
            if named and named.group(1) != v:
                missing.append(f"{v} ({origin} is CPython {named.group(1)})")
    if missing:
        raise ReproError(
            f"{loaded.path}: the source of {len(missing)} of {len(versions)} releases cannot "
            "be had, so they could not be tested: "
            + "; ".join(missing)
            + ". Point python.source (or REPRO_CPYTHON_MIRROR) at a directory that holds "
            "them all, or list only releases you have: --versions A,B,C"
        )


def _new_run(loaded: LoadedRecipe, opts: BisectOptions, console: Console) -> BisectRun:
    r = loaded.recipe
    spec = r.bisect or BisectSpec()  # a recipe without `bisect:` has the schema's defaults
    find_text = opts.find or spec.find
    if find_text not in ("fix", "regression"):
        raise ReproError(f"--find takes `fix` or `regression`, not {find_text!r}")
    find = Find(find_text)
    confidence = opts.confidence or spec.confidence
    check_option(BisectSpec, "confidence", confidence, "--confidence")  # the recipe's rule
    if find is Find.FIX and opts.clean is not None:
        raise ReproError(
            "--clean is the end of a regression search; a fix search takes --fixed "
            "(or give --find regression)"
        )
    if find is Find.REGRESSION and opts.fixed is not None:
        raise ReproError(
            "--fixed is the end of a fix search; a regression search takes --clean "
            "(or leave --find regression out)"
        )
    racy = opts.racy or spec.racy
    other = (opts.fixed or spec.fixed) if find is Find.FIX else (opts.clean or spec.clean)
    overrides = Overrides(extension_repo=opts.repo, threads=opts.threads, timeout=opts.timeout)
    if opts.versions:
        if r.python is None or not r.python.version:
            raise ReproError(
                f"{loaded.path}: --versions needs a `python:` section with `version:` "
                "(the releases replace it)"
            )
        terms = Terms(find, Side.VERSIONS)
        versions = expand_versions(opts.versions)
        check_versions(loaded, versions)
        chrono = [Position(id=v, label=v, info={"version": v}) for v in versions]
        positions = terms.search_order(chrono)
        anchors = list(range(len(positions)))
        extra: dict[str, Any] = {"versions": versions}
        racy_ref = positions[0].id
        clean_ref = positions[-1].id
    else:
        terms = Terms(find, Side(spec.side))
        if racy is None or other is None:
            opts_missing = [
                o for o, v in (("--racy", racy), (terms.clean_option, other)) if v is None
            ]
            keys = " and ".join("bisect." + o.lstrip("-") for o in opts_missing)
            why = ""
            wrong = spec.clean if find is Find.FIX else spec.fixed
            if wrong is not None and other is None:
                had, kind = ("clean", "regression") if find is Find.FIX else ("fixed", "fix")
                why = (
                    f"; the recipe's bisect.{had} ({wrong}) ends a {kind} search, and this "
                    f"one looks for a {find.value}"
                )
            raise ReproError(
                f"{loaded.path}: the range is not known: give {' and '.join(opts_missing)} "
                f"(or {keys} in the recipe){why}"
            )
        if r.python is not None and r.python.version and terms.side is Side.EXTENSION:
            check_versions(loaded, [r.python.version])
        old, new = (racy, other) if find is Find.FIX else (other, racy)
        positions, anchors, extra = _commit_positions(loaded, overrides, terms, old, new)
        racy_ref, clean_ref = racy, other
        if opts.calibration_from is not None and terms.side is Side.EXTENSION:
            check_racy_commit(find_stress_record(opts.calibration_from), positions[0].id)
    jobs = opts.jobs or os.cpu_count() or 1
    # Probed before the directory exists: a Ctrl-C during the probe left a directory
    # without meta.json, which neither --resume nor report could open.
    environment = collect_environment(
        None, interpreter_record(r.python, r.reproducer.command, loaded.base_dir)
    )
    meta = {
        "kind": "bisect",
        "recipe": r.name,
        "recipe_path": str(loaded.path),
        "set": list(loaded.sets),
        "find": terms.find.value,
        "side": terms.side.value,
        "racy": racy_ref,
        "clean": clean_ref,
        "confidence": confidence,
        "calibration_runs": opts.calibration_runs or spec.max_calibration_runs,
        "calibration_hits": spec.calibration_hits,
        "calibration_from": (
            None
            if opts.calibration_from is None
            else {"path": str(opts.calibration_from), "status": "pending"}
        ),
        "positions": [vars(p) for p in positions],
        "anchors": anchors,
        "jobs": jobs,
        "overrides": {k: v for k, v in vars(overrides).items() if v is not None},
        "status": "started",
        "environment": environment,
        "shell_env": this_process_variables()["env"],
        **outputs_meta(opts),
        **extra,
    }
    rundir = RunDir.create(opts.runs_dir or default_runs_dir(), r.name, "bisect")
    try:
        rundir.keep_recipe(
            loaded.path, loaded.recipe.recipe_dir_files(), loaded.recipe.reproducer.command
        )
        rundir.write_meta(meta)
    except BaseException:
        shutil.rmtree(rundir.path, ignore_errors=True)
        raise
    console.print(
        f"[bold]repro bisect[/] {escape(r.name)}: find the {terms.find.value} in "
        f"{len(positions)} {terms.units} "
        f"({escape(str(racy_ref))} racy .. {escape(str(clean_ref))} {terms.clean_word}), "
        f"confidence {confidence:g}"
    )
    console.print(f"run directory: {rundir.path}", highlight=False)
    return BisectRun(RunLog(rundir), loaded, meta, console, jobs, overrides, opts.keep_going)


def _drive(run: BisectRun, opts: BisectOptions) -> int:
    console = run.console
    try:
        if run.bisector is None and not reuse_calibration(run, opts):
            return _finish(run, opts, None)
        k = run.parallel_probes()
        laned = False
        if run.bisector is None and k > 1:  # lanes build ahead of the calibration
            try:
                if not probe_lanes(run, k, opts):
                    return _finish(run, opts, None)
                laned = True
            except LanesDoNotPay as why:
                console.print(f"  {escape(str(why))}", highlight=False)
        if run.bisector is None:
            try:
                if not calibrate(run, opts):
                    return _finish(run, opts, None)
            except TargetLooksWrong:
                return _finish(run, opts, None, near_misses_said=True)
            k = run.parallel_probes()  # measured now
        if k > 1 and not laned:
            probe_lanes(run, k)
        if k > 1 and run.stats(len(run.positions) - 1).unusable:
            return _clean_end_unusable(run, opts)
        assert run.bisector is not None
        while True:
            step = run.bisector.next_step()
            if isinstance(step, Done) and step.lo >= len(run.positions):
                last = len(run.positions) - 1
                c = run.stats(last).counts
                fail(
                    run,
                    f"The target race reproduces at the {run.terms.clean_word} end "
                    f"{run.positions[last].label} ({c.hits} of {c.evidence} runs): "
                    f"it is not a clean end. {run.terms.other_end_advice}",
                )
                return _finish(run, opts, None)
            if isinstance(step, Done):
                return _finish(run, opts, step)
            assert isinstance(step, Probe)
            pos = step.index
            console.print(f"[bold]step[/] {run.probe_line(step)}", highlight=False)
            state = run.run(pos, Limits(runs=step.runs, until_hits=1, jobs=run.jobs), "bisect")
            st = run.stats(pos)
            last = len(run.positions) - 1
            if st.unusable and pos == last:
                return _clean_end_unusable(run, opts)
            say_step(run, pos, state)
            if st.unusable == GIL_UNUSABLE and not run.stats(last).counts.runs:
                # Whether a module declares Py_mod_gil is the commit's: one run at the
                # clean end tells whether the search can end there at all (sweep 15 built
                # and skipped 13 commits before it found that the clean end could not).
                console.print(
                    f"[bold]step[/] {escape(run.describe(last))}: 1 run, to see whether "
                    "its runs keep the GIL off",
                    highlight=False,
                )
                state = run.run(last, Limits(runs=1, until_hits=1, jobs=1), "bisect")
                if run.stats(last).unusable:
                    return _clean_end_unusable(run, opts)
                say_step(run, last, state)
    except KeyboardInterrupt:
        run.rundir.update_meta(status="interrupted")
        console.print(
            f"\n[yellow]interrupted[/]; everything measured is saved. Resume with:\n"
            f"  repro bisect --resume {run.rundir.path}"
        )
        _write_outputs(run, opts, None, interrupted=True)
        return 130
    except RunnerGone as gone:
        # As an interrupt: every finished run is in the log; the bisect goes on from
        # there once the cluster is back.
        run.rundir.update_meta(status="interrupted")
        again = f" --cluster {opts.cluster}" if opts.cluster else ""
        on_cluster = opts.cluster or opts.workers or run.cluster is not None
        when = "when the cluster is back, " if on_cluster else ""
        console.print(
            f"\n[red]stopped:[/] {escape(str(gone))}\neverything measured is saved; "
            f"{when}resume with:\n  repro bisect --resume {run.rundir.path}"
            f"{escape(again)}",
            highlight=False,
        )
        _write_outputs(run, opts, None, interrupted=True)
        return EXIT_INVALID  # a fault of the environment, as the README's exit statuses say
    except StopBisect as stop:
        fail(
            run,
            f"a run was {stop.outcome.value} and cannot count: {stop.advice()}"
            + (f" ({stop.detail})" if stop.detail else "")
            + " Pass --keep-going to count such runs apart and go on.",
            "Stopped:",
        )
        _write_outputs(run, opts, None, interrupted=False)
        return EXIT_INVALID


def _finish(
    run: BisectRun, opts: BisectOptions, done: Done | None, near_misses_said: bool = False
) -> int:
    console = run.console
    terms = run.terms
    result = _write_outputs(run, opts, done, interrupted=False)
    console.print(run.steps_table())
    if run.record.other_signature_ids:
        print_symptom_note(console, other_race_verdicts(console, run.rundir.path))
    if done is None and not near_misses_said:
        # With an answer, a race that nearly matches the target is no hint: its advice
        # (sweep 16: "remove PyBuffer_ToContiguous from target.functions") would fold
        # another race into a target that worked.
        print_near_misses(console, run.rundir.path, run.record.counts.runs)
    hidden = suppressed_text(result["suppressed"], run.record.counts.runs)
    if hidden:
        console.print(f"note: {hidden}", style="yellow", highlight=False, markup=False)
    if done is None:
        return 0 if run.meta.get("status") == "planned" else 1
    conf = result["confidence"]
    figures = (
        f"{fmt_builds(result['builds'], result['builds_from_cache'])}, "
        f"{runs_made(result['runs'], (result['calibration']['reused'] or {}).get('runs'))}, "
        f"build time {fmt_seconds(result['build_seconds'])}, "
        f"run time {fmt_seconds(result['run_seconds'])}"
    )
    rng = result.get("culprit_range")
    if rng:
        console.print(
            f"[bold yellow]The {terms.culprit_word} {terms.unit} is one of {len(rng)}[/] "
            f"({terms.units} between could not be tested), with probability {conf:.4f}:"
        )
        for x in rng:
            why = f"  [{x['unusable']}]" if x.get("unusable") else ""
            console.print(
                f"  {escape(x['label'])} {escape(x.get('subject') or '')}{escape(why)}",
                highlight=False,
            )
        console.print(f"  no single {terms.unit} can be named; {figures}")
        info = result.get("information") or {}
        if info.get("ratio") is not None:
            console.print(f"  {escape(against_bound(info))}", highlight=False)
        console.print(f"run directory: {run.rundir.path}", highlight=False)
        return 1
    c = result["culprit"]
    console.print(
        f"[bold green]{terms.culprit_word} {terms.unit}:[/] {escape(c['label'])} "
        f"{escape(c.get('subject') or '')}",
        highlight=False,
    )
    for key in ("author", "date", "url"):
        if c.get(key):
            console.print(f"  {key}: {c[key]}", highlight=False)
    console.print(f"  confidence {conf:.4f} (asked {run.meta['confidence']:g}); {figures}")
    info = result.get("information") or {}
    if info.get("ratio") is not None:
        console.print(f"  {escape(against_bound(info))}", highlight=False)
        if at := info.get("at_answer"):
            console.print(f"  {escape(at_answer(at))}", highlight=False)
    merged = _what_the_merge_brought(run, opts, c)
    if merged is not None:
        console.print(f"  [yellow]{escape(merge_text(merged))}[/]", highlight=False)
    begun = list(result.get("begun_at_answer") or ())
    for race in begun:
        text = begun_text(race, terms.find.value, terms.unit)
        console.print(f"  [yellow]warning: {escape(text)}[/]", highlight=False)
    if begun:
        advice = begun_advice(len(begun), terms.find.value, terms.unit)
        console.print(f"  [yellow]{escape(advice)}[/]", highlight=False)
    if conf < float(run.meta["confidence"]):
        console.print(
            "[yellow]The requested confidence was not reached: nothing more could be "
            "learnt (untestable commits).[/]"
        )
    console.print(f"run directory: {run.rundir.path}", highlight=False)
    if opts.then_git and terms.side is Side.VERSIONS:
        return _continue_over_commits(run, opts, done)
    return 0


def _what_the_merge_brought(
    run: BisectRun, opts: BisectOptions, culprit: Mapping[str, Any]
) -> dict[str, Any] | None:
    """When the answer is a merge commit (the search walks first parents, so a merged
    branch enters as one commit), the commits it brought and the bisect that names one
    of them; kept in meta.json for the report."""
    pos = next((p for p in run.positions if p.id == culprit.get("id")), None)
    if pos is None or not pos.info.get("merge") or run.terms.side is Side.VERSIONS:
        return None
    from repro.builds.cache import BuildCache
    from repro.gitrepo import GitRepo

    try:
        repo = GitRepo.open_cached(str(run.meta["repo"]), BuildCache().base)
        branches = [b for b in repo.merged(pos.id) if b.commits]
        if not branches:
            return None
        short = {c.sha: c.short for b in branches for c in b.commits}
        short.update({b.base: repo.info(b.base).short for b in branches})
    except ReproError:
        return None  # the answer stands; only the hint is lost
    fix = run.terms.find is Find.FIX
    # The bisect as it ran, on the merged branch: printed commands that left out
    # --find regression, --repo or a --set failed as printed.
    same = [str(run.loaded.path)]
    if not fix:
        same += ["--find", "regression"]
    if run.overrides.extension_repo:
        same += ["--repo", run.overrides.extension_repo]
    for item in opts.sets:
        same += ["--set", item]
    same += ["-j", str(run.jobs)]
    recipe = " ".join(shlex.quote(a) for a in same)
    commands = []
    for b in branches:
        racy, clean = (b.base, b.tip) if fix else (b.tip, b.base)
        commands.append(
            f"repro bisect {recipe} --racy {short[racy]} {run.terms.clean_option} {short[clean]}"
        )
    commits = [c for b in branches for c in b.commits]
    merged = {
        "commit": pos.id,
        "label": pos.label,
        "count": len(commits),
        "branches": len(branches),
        "commits": [{"id": c.sha, "label": c.short, "subject": c.subject} for c in commits[:20]],
        # One bisect a merged branch (an octopus merge brings several; the fix may
        # also have been made in the merge itself, which no branch holds).
        "commands": commands,
        "command": commands[0],
    }
    run.rundir.update_meta(merged=merged)
    return merged


def _clean_end_unusable(run: BisectRun, opts: BisectOptions) -> int:
    terms = run.terms
    st = run.stats(len(run.positions) - 1)
    why = f"{st.build_error or st.unusable}"
    kind = None if st.build_error else invalid_runs_kind(st.counts.outcomes)
    if st.counts.outcomes[Outcome.NO_TEST]:
        # Another end will not help where the test itself is missing.
        where = (
            "A fix: pick a fixed commit where the test still runs under this name, or "
            "name it as it is there (the commits between that lack it are skipped)."
            if terms.find is Find.FIX
            else "A regression whose test came after the race: no clean commit has it; "
            "run a test that exists there, or bring it in with reproducer.setup."
        )
        advice = (
            f"The reproducer's test does not run at {run.positions[-1].label} (not there, "
            f"or not collected): {INVALID_HINTS[Outcome.NO_TEST]}. {where}"
        )
    elif kind is Outcome.GIL_ENABLED:
        # A property of the commit (its module does not declare Py_mod_gil), not of the
        # runs: sweep 15's "another end would meet it too" was false where later
        # commits declare it.
        advice = (
            f"Other {terms.units} may declare Py_mod_gil, but any that does not is skipped "
            "so; with PYTHON_GIL=0 in reproducer.env every one of them can be tested."
        )
    elif kind is not None:
        # The commit built and ran; its runs could not show the race, for a reason that
        # another end would meet too (sweep 14: every run turned the GIL back on, and the
        # advice was to pick an earlier commit).
        advice = (
            f"Its runs were {kind.value}: {INVALID_HINTS[kind]}. That is the runs' "
            f"setting, not the {terms.unit}: another end would meet it too."
        )
    else:
        advice = (
            f"Pick another {terms.clean_word} {terms.unit} ({terms.clean_option}): for a "
            "fix, a later one that builds (it must still contain the fix); for a "
            "regression, an earlier one."
        )
    what = "does not build:" if st.build_error else "built, but"
    fail(
        run,
        f"the {terms.clean_word} end {what} {why}. {advice}",
        f"The {terms.clean_word} end cannot be tested:",
    )
    return _finish(run, opts, None)


def release_tags(run: BisectRun, done: Done) -> tuple[str, str]:
    """The git tags of the last racy and the first clean release around the answer."""
    racy = run.positions[done.lo - 1].id
    clean = run.positions[done.lo].id
    return f"v{racy}", f"v{clean}"


def _continue_over_commits(run: BisectRun, opts: BisectOptions, done: Done) -> int:
    """Second stage: bisect CPython's commits between the two releases just found."""
    racy_tag, clean_tag = release_tags(run, done)
    run.console.print(
        f"\n[bold]continuing[/] over the commits between {racy_tag} and {clean_tag} "
        f"in {opts.then_git}"
    )
    sets = (
        *run.loaded.sets,
        f"python.git={opts.then_git}",
        "python.version=",
        "python.source=",
        f"python.ref={racy_tag}",
        "bisect.side=python",
    )
    fix = run.terms.find is Find.FIX
    follow = BisectOptions(
        recipe=run.loaded.path,
        racy=racy_tag,
        fixed=clean_tag if fix else None,
        clean=None if fix else clean_tag,
        find=run.terms.find.value,
        confidence=float(run.meta["confidence"]),
        jobs=run.jobs,
        runs_dir=opts.runs_dir,
        json_out=opts.json_out,
        report=opts.report,
        threads=opts.threads,
        timeout=opts.timeout,
        sets=sets,
        keep_going=opts.keep_going,
        probes=opts.probes,
        workers=opts.workers,
        cluster=opts.cluster,
        shared_cache=opts.shared_cache,
    )
    run.rundir.unlock()
    return run_bisect(follow, run.console)


def _write_outputs(
    run: BisectRun, opts: BisectOptions, done: Done | None, interrupted: bool
) -> dict[str, Any]:
    meta = run.meta
    record = run.record
    culprit_ids: frozenset[str] = frozenset()
    result: dict[str, Any] = {
        "kind": "bisect",
        "recipe": meta["recipe"],
        "direction": run.terms.find.value,
        "side": run.terms.side.value,
        "racy": meta["racy"],
        "clean": meta["clean"],
        "requested_confidence": meta["confidence"],
        "builds": record.builds,
        "builds_from_cache": record.builds_from_cache,
        "runs": record.counts.runs,
        "evidence_runs": record.counts.evidence,
        "outcomes": record.counts.to_json()["outcomes"],
        "build_seconds": round(record.build_seconds, 1),
        "run_seconds": round(record.run_seconds, 1),
        "positions": len(run.positions),
        "interrupted": interrupted,
        "status": "interrupted"
        if interrupted
        else ("done" if done else str(meta.get("status") or "failed")),
        "failure": meta.get("failure"),
        "culprit": None,
        "culprit_range": None,
        "confidence": None,
        "signatures": record.signatures_json(),
        "suppressed": record.suppressed_json(),
    }
    calib = run.stats(0).counts
    reused = meta.get("calibration_from") or {}
    result["calibration"] = {
        "hits": calib.hits,
        "runs": calib.evidence,
        # of these, the runs taken from a stress record (--calibration-from)
        "reused": (
            {k: reused[k] for k in ("path", "runs", "hits")}
            if reused.get("status") == "imported"
            else None
        ),
    }
    result["plan"] = meta.get("plan")
    positions = [vars(p) for p in run.positions]
    if run.bisector is not None:
        result["information"] = information(
            run.bisector, record, positions, run.terms, float(meta["confidence"]), done
        )
    if done is not None:
        named = blame(done, positions, run.terms, record)
        culprit_ids = named.ids
        result["culprit"] = named.culprit
        result["culprit_range"] = named.culprit_range
        result["confidence"] = done.confidence
        result["begun_at_answer"] = list(named.begun)
    result["steps"] = [r for r in run.rows(culprit_ids) if r["tested"]]
    meta.update(
        status=result["status"],
        result={k: result[k] for k in ("culprit", "culprit_range", "confidence")},
    )
    run.rundir.write_meta(meta)
    run.runlog.write_signatures()
    run.rundir.write("summary.json", result)
    from repro.app.outputs import write_outputs

    text = json.dumps(result, indent=2) + "\n"
    write_outputs(run.rundir.path, text, opts.json_out, opts.report)
    return result
