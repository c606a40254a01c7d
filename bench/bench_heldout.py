#!/usr/bin/env python3
"""Issue 15's held-out-shaped case with real TSAN runs: repro against git bisect and git-bayesect.

Each trial generates a C project (``heldout_repo.py``): about 200 commits between a racy tag
and ``main``, a race (introduced early) that TSAN reports in about 10% of runs, fixed at a
commit that varies with the trial, and a few commits that do not build. Every method searches
for the fix in its own copy of the same repository:

- ``repro @0.99``: the real CLI, ``repro bisect --json-out``, one run at a time (``-j 1``), in
  its own empty build cache;
- ``git N=20`` / ``git N=50``: ``git bisect run`` with a script that builds the commit (exit
  125 when the build fails) and runs the program up to N times, racy at the first hit;
- ``git-bayesect @0.99``: the PyPI package, installed into a venv that this bench makes,
  driven as ``git-bayesect run --confidence 0.99``, one observation = one run, on the same
  history *without* the unbuildable commits (it has no skip); a commit is built the first time
  it is observed and its binary kept.

Runs and builds of the git methods are counted by the scripts themselves (a line per run, a
line per build attempt); repro's come from its JSON. Before the trials, ``repro stress`` at
the racy tag measures the race's rate; the information bound (``fano_bound``) uses it.

Usage: bench/bench_heldout.py [--trials 10] [--stress-runs 600] [--args "300 6000"]
                              [--methods repro,git20,git50,bayesect] [--work DIR] [--json F]
                              [--baseline OTHER_REPRO_TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from heldout_repo import NARROWED_AT, RACY_AT, History, make_history, pick_case  # noqa: E402

from repro.strategy.information import fano_bound  # noqa: E402

TSAN_CFLAGS = "-fsanitize=thread -O1 -g"
TSAN_LDFLAGS = "-fsanitize=thread"

# One observation script for both git methods. It builds a commit once (binary kept per sha),
# exits 125 when the build fails, and runs the program up to $OBS_N times, stopping at the
# first report of the target race. Exit codes come from the environment, since git bisect
# (old = racy: 0) and git-bayesect (a failure = racy: 1) read them the other way round.
OBSERVE_SH = r"""#!/bin/bash
set -u
sha=$(git rev-parse HEAD)
dir="$OBS_CACHE/$sha"
if [ ! -e "$dir/status" ]; then
    mkdir -p "$dir"
    echo "$sha" >> "$OBS_LOG/builds"
    if make clean >/dev/null 2>&1 && make CFLAGS="$OBS_CFLAGS" LDFLAGS="$OBS_LDFLAGS" \
            > "$dir/build.log" 2>&1; then
        cp sensor_stress "$dir/sensor_stress" && echo ok > "$dir/status"
    else
        echo fail > "$dir/status"
    fi
fi
if [ "$(cat "$dir/status")" != ok ]; then
    exit 125
fi
for i in $(seq "$OBS_N"); do
    echo "$sha" >> "$OBS_LOG/runs"
    "$dir/sensor_stress" $OBS_ARGS > /dev/null 2> "$OBS_LOG/last.err"
    if grep -q "ThreadSanitizer: data race" "$OBS_LOG/last.err" \
            && grep -q "sensor_publish" "$OBS_LOG/last.err"; then
        exit "$OBS_RACY_EXIT"
    fi
done
exit "$OBS_CLEAN_EXIT"
"""

RECIPE = """\
name: heldout-sensord
description: data race on sensor_value in sensord's sensor_publish (bench_heldout.py)
extension:
  repo: {repo}
  ref: {racy}
  build:
    - make
  sanitize: c
reproducer:
  command: ./sensor_stress {args}
  timeout: 30
target:
  kind: data race
  functions: [sensor_publish, sensor_poll]
  files: [sensor.c]
bisect:
  find: fix
  racy: {racy}
  fixed: {fixed}
  confidence: 0.99
"""


@dataclass
class Result:
    method: str
    trial: int
    right: bool
    runs: int
    builds: int
    seconds: float
    answer: str | None
    truth: str
    detail: dict[str, Any] = field(default_factory=dict)


def git_env() -> dict[str, str]:
    return {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}


def clone(src: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(
        ["git", "clone", "-q", str(src), str(dest)], check=True, env=git_env(), capture_output=True
    )
    # The clone's local branch main is the source's main; the racy tag comes along.
    return dest


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def repro_cmd() -> list[str]:
    return [sys.executable, "-m", "repro"]


def repro_env(cache: Path, root: Path = ROOT) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "REPRO_CACHE_DIR": str(cache),
        "TERM": "dumb",
        "COLUMNS": "120",
    }


def write_recipe(path: Path, repo: Path, args: str, racy: str = "v2.0") -> Path:
    path.write_text(RECIPE.format(repo=repo, racy=racy, fixed="main", args=args))
    return path


def measure_rate(
    history: History, work: Path, args: str, runs: int, ref: str = "v2.0", tag: str = ""
) -> dict[str, Any]:
    """``repro stress`` at ``ref`` (the racy tag): the rate the bound and the README quote."""
    recipe = write_recipe(work / f"stress{tag}-recipe.yaml", history.path, args, ref)
    out = work / f"stress{tag}.json"
    t0 = time.perf_counter()
    subprocess.run(
        [
            *repro_cmd(),
            "stress",
            str(recipe),
            "--runs",
            str(runs),
            "-j",
            "1",
            "--runs-dir",
            str(work / f"stress{tag}-runs"),
            "--json-out",
            str(out),
        ],
        env=repro_env(work / f"stress{tag}-cache"),
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    data = json.loads(out.read_text())
    return {
        "runs": data["runs"],
        "hits": data["hits"],
        "rate": data["rate"],
        "rate_ci95": data.get("rate_ci95"),
        "mean_run_seconds": data.get("mean_run_seconds"),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_repro(
    history: History,
    work: Path,
    args: str,
    trial: int,
    timeout: float,
    root: Path = ROOT,
    name: str = "repro @0.99",
    stress_first: int = 0,
) -> Result:
    """One bisect; ``stress_first`` > 0: a stress record of that many runs at the racy tag
    first (the usual order of work), taken as the calibration (``--calibration-from``).
    The result's runs are then the bisect's own; the detail has the stress's."""
    truth = history.sha(history.fix_at)
    recipe = write_recipe(work / "recipe.yaml", history.path, args)
    out = work / "repro.json"
    before: list[str] = []
    stress: dict[str, Any] = {}
    if stress_first:
        subprocess.run(
            [
                *repro_cmd(),
                "stress",
                str(recipe),
                "--runs",
                str(stress_first),
                "-j",
                "1",
                "--runs-dir",
                str(work / "repro-runs"),
                "--json-out",
                str(work / "stress.json"),
            ],
            env=repro_env(work / "repro-cache", root),
            cwd=root,
            check=False,
            capture_output=True,
        )
        stress = json.loads((work / "stress.json").read_text())
        before = ["--calibration-from", str(work / "stress.json")]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [
                *repro_cmd(),
                "bisect",
                str(recipe),
                "-j",
                "1",
                "--confidence",
                "0.99",
                "--runs-dir",
                str(work / "repro-runs"),
                "--json-out",
                str(out),
                *before,
            ],
            env=repro_env(work / "repro-cache", root),
            # `python -m` puts the working directory first on sys.path, before PYTHONPATH:
            # run from the tree itself, or a baseline tree would import this one's repro.
            cwd=root,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        (work / "repro.out").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired:
        return Result(name, trial, False, 0, 0, timeout, None, truth, {"timeout": True})
    seconds = time.perf_counter() - t0
    if not out.exists():
        tail = {"output_tail": (proc.stdout + proc.stderr)[-400:]}
        return Result(name, trial, False, 0, 0, seconds, None, truth, tail)
    data = json.loads(out.read_text())
    culprit = (data.get("culprit") or {}).get("sha")
    info = data.get("information") or {}
    reused = int(((data.get("calibration") or {}).get("reused") or {}).get("runs") or 0)
    calib = int((data.get("calibration") or {}).get("runs") or 0) - reused
    bisect_runs = int(info.get("bisect_runs") or 0)
    evidence = int(data.get("evidence_runs") or 0)
    # Bisect runs by where they fell: racy commits inside the range, the fix commit itself,
    # clean commits after it (positions count from the racy end).
    fix_pos = history.fix_at - RACY_AT
    split = {"racy": 0, "fix": 0, "after": 0}
    for s in data.get("steps") or []:
        if "bisect" in (s.get("phases") or []):
            pos = int(s["pos"])
            side = "racy" if pos < fix_pos else ("fix" if pos == fix_pos else "after")
            split[side] += int(s.get("runs") or 0)
    detail = {
        "confidence": data.get("confidence"),
        "calibration_runs": calib,
        "calibration_hits": (data.get("calibration") or {}).get("hits"),
        "end_check_runs": evidence - reused - calib - bisect_runs,
        "bisect_runs": bisect_runs,
        "racy_side_runs": split["racy"],
        "at_culprit_runs": split["fix"],
        "after_fix_runs": split["after"],
        "rate_estimate": info.get("rate_estimate"),
        "bound_runs": info.get("bound_runs"),
        "ratio": info.get("ratio"),
        "plan": data.get("plan"),
        "plan_runs": (data.get("plan") or {}).get("runs"),
        "culprit_range": data.get("culprit_range"),
        "status": data.get("status"),
        "stress_runs": stress.get("runs"),
        "stress_hits": stress.get("hits"),
        "reused_runs": reused,
        "phases": [[s.get("label"), s.get("runs"), s.get("phases")] for s in data["steps"]],
    }
    return Result(
        name,
        trial,
        culprit == truth,
        int(data["runs"]) - reused,
        int(data["builds"]),
        seconds,
        culprit,
        truth,
        detail,
    )


def observe_env(work: Path, n: int, args: str, racy_exit: int, clean_exit: int) -> dict[str, str]:
    (work / "obs-log").mkdir(parents=True, exist_ok=True)
    return {
        **git_env(),
        "OBS_CACHE": str(work / "obs-cache"),
        "OBS_LOG": str(work / "obs-log"),
        "OBS_N": str(n),
        "OBS_ARGS": args,
        "OBS_CFLAGS": TSAN_CFLAGS,
        "OBS_LDFLAGS": TSAN_LDFLAGS,
        "OBS_RACY_EXIT": str(racy_exit),
        "OBS_CLEAN_EXIT": str(clean_exit),
    }


def run_git_bisect(
    history: History, work: Path, args: str, n: int, trial: int, timeout: float
) -> Result:
    truth = history.sha(history.fix_at)
    repo = clone(history.path, work / "repo")
    script = work / "observe.sh"
    script.write_text(OBSERVE_SH)
    script.chmod(0o755)
    # old = racy (exit 0), new = fixed (exit 1): the first "fixed" commit is the fix.
    env = observe_env(work, n, args, racy_exit=0, clean_exit=1)
    t0 = time.perf_counter()
    subprocess.run(
        ["git", "bisect", "start", "--term-old=racy", "--term-new=fixed", "main", "v2.0"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        proc = subprocess.run(
            ["git", "bisect", "run", str(script)],
            cwd=repo,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        output = "timeout"
    seconds = time.perf_counter() - t0
    (work / "bisect.out").write_text(output)
    m = re.search(r"^([0-9a-f]{40}) is the first fixed commit", output, re.M)
    answer = m.group(1) if m else None
    log = work / "obs-log"
    return Result(
        f"git N={n}",
        trial,
        answer == truth,
        len(lines(log / "runs")),
        len(lines(log / "builds")),
        seconds,
        answer,
        truth,
        {} if m else {"output_tail": output[-400:]},
    )


def bayesect_venv(base: Path) -> Path:
    """The venv with git-bayesect, made once; its executable, or an error saying why not."""
    exe = base / "bin" / "git-bayesect"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, capture_output=True)
    proc = subprocess.run(
        [str(base / "bin" / "pip"), "install", "-q", "git-bayesect"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not exe.exists():
        raise RuntimeError(f"pip install git-bayesect failed: {proc.stderr.strip()[-300:]}")
    return exe


def bayesect_version(exe: Path) -> str:
    py = exe.parent / "python"
    proc = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('git-bayesect'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "?"


def run_bayesect(
    history: History, work: Path, args: str, exe: Path, trial: int, timeout: float
) -> Result:
    truth = history.sha(history.fix_at)
    repo = clone(history.path, work / "repo")
    script = work / "observe.sh"
    script.write_text(OBSERVE_SH)
    script.chmod(0o755)
    # One observation = one run; racy = a failure (nonzero), clean = a pass (0).
    env = observe_env(work, 1, args, racy_exit=1, clean_exit=0)
    t0 = time.perf_counter()
    subprocess.run(
        [str(exe), "start", "--old", "v2.0", "--new", "main"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    try:
        proc = subprocess.run(
            [str(exe), "run", "--confidence", "0.99", str(script)],
            cwd=repo,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        output = "timeout"
    seconds = time.perf_counter() - t0
    (work / "bayesect.out").write_text(output)
    found = re.findall(r"Bisection converged to ([0-9a-f]+) \(([0-9.]+)%\)", output)
    answer = None
    if found:
        short = found[-1][0]
        answer = subprocess.run(
            ["git", "rev-parse", short], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    log = work / "obs-log"
    return Result(
        "git-bayesect @0.99",
        trial,
        answer == truth,
        len(lines(log / "runs")),
        len(lines(log / "builds")),
        seconds,
        answer,
        truth,
        {"confidence": float(found[-1][1]) / 100 if found else None}
        if found
        else {"output_tail": output[-400:]},
    )


def fmt_range(xs: list[float], digits: int = 0) -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs)
    return f"{m:.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def table(results: list[Result], methods: list[str], trials: int) -> str:
    out = [
        "| method | right | runs: mean (min-max) | builds: mean (min-max) | wall s: mean |",
        "|:--|--:|--:|--:|--:|",
    ]
    for m in methods:
        rs = [r for r in results if r.method == m]
        if not rs:
            continue
        right = sum(r.right for r in rs)
        out.append(
            f"| {m} | {right}/{len(rs)} | {fmt_range([r.runs for r in rs])} | "
            f"{fmt_range([r.builds for r in rs], 1)} | "
            f"{statistics.mean(r.seconds for r in rs):.1f} |"
        )
    return "\n".join(out)


def repro_phases(results: list[Result], name: str = "repro @0.99") -> str:
    rs = [r for r in results if r.method == name]
    if not rs:
        return ""
    keys = [
        ("stress_runs", "the stress record's runs, before the bisect (not counted)"),
        ("reused_runs", "calibration taken from the stress record (not counted)"),
        ("calibration_runs", "calibration"),
        ("end_check_runs", "clean-end check"),
        ("bisect_runs", "bisect"),
        ("racy_side_runs", "(bisect: at racy commits inside the range)"),
        ("at_culprit_runs", "(bisect: at the fix commit)"),
        ("after_fix_runs", "(bisect: at clean commits after the fix)"),
        ("bound_runs", "bound at its rate estimate"),
        ("ratio", "bisect / bound"),
        ("plan_runs", "its plan before the bisect (runs)"),
    ]
    out = ["| repro's runs | mean | min-max |", "|:--|--:|--:|"]
    for key, label in keys:
        xs = [float(r.detail[key]) for r in rs if r.detail.get(key) is not None]
        if xs:
            digits = 2 if key == "ratio" else 1
            out.append(
                f"| {label} | {statistics.mean(xs):.{digits}f} | "
                f"{min(xs):.{digits}f}-{max(xs):.{digits}f} |"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--commits", type=int, default=205, help="commits in the history")
    ap.add_argument("--broken", type=int, default=4, help="unbuildable commits in the range")
    ap.add_argument("--args", default="300 6000", help="WINDOW_US POLL_US of the program")
    ap.add_argument("--stress-runs", type=int, default=600, help="0: do not measure the rate")
    ap.add_argument(
        "--inner-window",
        type=float,
        default=1.0,
        help="the race window inside the range relative to the racy tag's (0.5: a commit "
        "after the tag halves it, so the rate inside is about half the calibrated one)",
    )
    ap.add_argument(
        "--methods",
        default="repro,git20,git50,bayesect",
        help="of repro, stressed (repro after a stress of the racy tag, taken as its "
        "calibration), git20, git50, bayesect, base",
    )
    ap.add_argument(
        "--stress-first",
        type=int,
        default=100,
        help="method stressed: the stress's runs (not counted as the bisect's)",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another repro source tree (say a git worktree of an older commit): adds the "
        "method 'base', its CLI on the same histories, for a before/after in one run",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-heldout"))
    ap.add_argument("--venv", type=Path, default=Path("/tmp/bench-heldout-venv"))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per method and trial")
    ap.add_argument("--json", type=Path, default=None, help="write every result here")
    opts = ap.parse_args()

    methods = opts.methods.split(",")
    opts.work.mkdir(parents=True, exist_ok=True)
    n = opts.commits - RACY_AT - 1  # candidate first clean commits after the racy tag
    meta: dict[str, Any] = {
        "commits": opts.commits,
        "candidates": n,
        "args": opts.args,
        "inner_window": opts.inner_window,
    }
    iw = opts.inner_window

    exe: Path | None = None
    if "bayesect" in methods:
        try:
            exe = bayesect_venv(opts.venv)
            meta["bayesect_version"] = bayesect_version(exe)
            print(f"git-bayesect {meta['bayesect_version']} in {opts.venv}", flush=True)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"git-bayesect not available, going on without it: {exc}", flush=True)
            meta["bayesect_error"] = str(exc)
            methods.remove("bayesect")

    t_start = time.perf_counter()
    if opts.stress_runs:
        fix_at, broken = pick_case(opts.commits, opts.first_seed, opts.broken)
        h = make_history(
            opts.work / "stress-repo", opts.commits, fix_at, broken, opts.first_seed, iw
        )
        meta["stress"] = measure_rate(h, opts.work, opts.args, opts.stress_runs)
        s = meta["stress"]
        print(
            f"rate at {h.racy_ref} (repro stress, {s['runs']} runs, -j 1): {s['rate']:.3f} "
            f"(95% CI {s['rate_ci95']}), {s['mean_run_seconds']} s a run",
            flush=True,
        )
        if iw < 1.0:
            inner = h.sha(NARROWED_AT + 1)
            meta["stress_inside"] = si = measure_rate(
                h, opts.work, opts.args, opts.stress_runs, inner, "-inside"
            )
            print(
                f"rate inside the range at {inner[:10]} (window x{iw:g}, {si['runs']} runs): "
                f"{si['rate']:.3f} (95% CI {si['rate_ci95']})",
                flush=True,
            )

    names = {
        "repro": "repro @0.99",
        "git20": "git N=20",
        "git50": "git N=50",
        "bayesect": "git-bayesect @0.99",
        "base": "repro @0.99 (baseline)",
        "stressed": "repro @0.99, stress first",
    }
    if opts.baseline is not None and "base" not in methods:
        methods.insert(1, "base")
    results: list[Result] = []
    for t in range(opts.trials):
        seed = opts.first_seed + t
        fix_at, broken = pick_case(opts.commits, seed, opts.broken)
        tdir = opts.work / f"trial-{seed}"
        if tdir.exists():
            shutil.rmtree(tdir)
        h = make_history(tdir / "repo", opts.commits, fix_at, broken, seed, iw)
        print(f"trial {seed}: fix at index {fix_at} of {opts.commits}, broken {broken}", flush=True)
        for m in methods:
            mdir = tdir / m
            mdir.mkdir(parents=True)
            if m == "repro":
                r = run_repro(h, mdir, opts.args, seed, opts.timeout)
            elif m == "stressed":
                r = run_repro(
                    h, mdir, opts.args, seed, opts.timeout, name=names[m],
                    stress_first=opts.stress_first,
                )  # fmt: skip
            elif m == "base" and opts.baseline is not None:
                root = opts.baseline.resolve()
                r = run_repro(h, mdir, opts.args, seed, opts.timeout, root, names["base"])
            elif m in ("git20", "git50"):
                r = run_git_bisect(h, mdir, opts.args, int(m[3:]), seed, opts.timeout)
            elif m == "bayesect" and exe is not None:
                clean = make_history(tdir / "repo-buildable", opts.commits, fix_at, (), seed, iw)
                r = run_bayesect(clean, mdir, opts.args, exe, seed, opts.timeout)
            else:
                raise SystemExit(f"unknown method {m}")
            results.append(r)
            extra = ""
            if m in ("repro", "base", "stressed") and "bisect_runs" in r.detail:
                d = r.detail
                extra = (
                    f" (calib {d['calibration_runs']}, end {d['end_check_runs']}, "
                    f"bisect {d['bisect_runs']} = racy {d['racy_side_runs']} + fix "
                    f"{d['at_culprit_runs']} + after {d['after_fix_runs']}, "
                    f"conf {d['confidence']})"
                )
            print(
                f"  {r.method:20} {'right' if r.right else 'WRONG'}: {r.runs} runs, "
                f"{r.builds} builds, {r.seconds:.1f} s{extra}",
                flush=True,
            )
        if opts.json:
            opts.json.write_text(
                json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1)
            )

    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    print()
    print(
        f"{opts.trials} trials, {n} candidate commits, program args {opts.args!r}, "
        f"window inside the range x{iw:g}"
    )
    print(table(results, [names[m] for m in methods], opts.trials))
    print()
    print(repro_phases(results))
    if "stressed" in methods:
        print()
        print(repro_phases(results, names["stressed"]))
    if "base" in methods:
        print()
        print("baseline:")
        print(repro_phases(results, names["base"]))
    if "stress" in meta:
        p = float(meta["stress"]["rate"])
        lo, hi = meta["stress"].get("rate_ci95") or (p, p)
        print()
        print(
            f"information bound (fano_bound(n={n}, p, 0.01)): {fano_bound(n, p, 0.01):.0f} runs "
            f"at p = {p:.3f} ({fano_bound(n, hi, 0.01):.0f} to {fano_bound(n, lo, 0.01):.0f} "
            f"over the rate's 95% interval)"
        )
        if "stress_inside" in meta:
            pi = float(meta["stress_inside"]["rate"])
            print(
                f"at the rate inside the range, p = {pi:.3f}: {fano_bound(n, pi, 0.01):.0f} runs "
                "(every run at a racy commit the search probes sees this rate)"
            )
    print(f"total bench time {meta['seconds'] / 60:.1f} min")
    if opts.json:
        opts.json.write_text(
            json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
