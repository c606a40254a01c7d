#!/usr/bin/env python3
"""What a Dask cluster costs on one machine: the demo's stress, `-j 2` against `--workers 2`.

Both run the same 400 runs of the demo race on the same two cores; the difference is the
cluster's overhead (a task per run, a scheduler round trip, logs sent back). Two figures
per configuration: the stress loop's own time (``elapsed`` in summary.json, from the first
run to the last) and the whole command (for `--workers`, starting and stopping the
LocalCluster too). Configurations alternate, several rounds, medians reported, since this
machine is shared and noisy; odd rounds reverse the order.

``--idle``: instead, what an idle LocalCluster of two workers costs in CPU over 10 s
(user + system time of the whole process tree), with Dask's defaults and with the
settings repro gives it (``QUIET_WORKERS``), alternating.

``--baseline TREE``: a third configuration, `--workers 2` from another repro source tree
(a git worktree of an earlier commit), to measure a change to the cluster in one bench.

Usage: bench/bench_cluster.py [--runs N] [--rounds R] [--idle] [--baseline TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demo"))

from make_repo import make_demo_recipe  # noqa: E402


def stress(
    recipe: Path, runs: int, extra: list[str], work: Path, tag: str, tree: Path = ROOT
) -> tuple[float, float, int]:
    out = work / f"{tag}.json"
    env = {**os.environ, "PYTHONPATH": str(tree), "REPRO_CACHE_DIR": str(work / "cache")}
    t0 = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "repro",
            "stress",
            str(recipe),
            "--runs",
            str(runs),
            *extra,
            "--runs-dir",
            str(work / "runs"),
            "--json-out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        # From the tree itself: `python -m` puts the working directory first on sys.path.
        cwd=tree,
    )
    wall = time.perf_counter() - t0
    if res.returncode not in (0, 1):
        raise SystemExit(f"{tag} failed:\n{res.stdout}\n{res.stderr}")
    summary = json.loads(out.read_text())
    assert summary["runs"] == runs, summary["runs"]
    return float(summary["elapsed"]), wall, int(summary["hits"])


def adjusted(results: dict[str, list[tuple[float, float, int]]], i: int) -> dict[str, float]:
    """Each configuration's mean time (``i``: 0 loop, 1 command) at the mean hit count.

    A hit costs a TSAN report (symbolised stacks): the demo's 400 runs took 6.5 to 11.7 s
    with `-j 2` alone on a quiet machine, with the hits. Time = the configuration's own
    constant + one slope per hit common to all (least squares within configurations),
    so that a configuration is not charged for the hits its rounds happened to draw.
    """
    sxy = sxx = 0.0
    for rows in results.values():
        hm = statistics.fmean(r[2] for r in rows)
        tm = statistics.fmean(r[i] for r in rows)
        sxy += sum((r[2] - hm) * (r[i] - tm) for r in rows)
        sxx += sum((r[2] - hm) ** 2 for r in rows)
    slope = sxy / sxx if sxx else 0.0
    every = statistics.fmean(r[2] for rows in results.values() for r in rows)
    return {
        name: statistics.fmean(r[i] for r in rows)
        - slope * (statistics.fmean(r[2] for r in rows) - every)
        for name, rows in results.items()
    }


def idle_child(quiet: bool, seconds: float) -> None:
    """In a fresh process (Dask's config is per process): print the CPU seconds spent."""
    import logging

    import dask
    import psutil
    from distributed import Client, LocalCluster

    from repro.app.cluster import QUIET_WORKERS

    dask.config.set(QUIET_WORKERS if quiet else {})
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as local,
        Client(local),
    ):
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        before = [p.cpu_times() for p in procs]
        time.sleep(seconds)
        after = [p.cpu_times() for p in procs]
    spent = sum(b.user + b.system - a.user - a.system for a, b in zip(before, after, strict=True))
    print(spent)


def idle(rounds: int, seconds: float = 10.0) -> None:
    got: dict[str, list[float]] = {"defaults": [], "quiet": []}
    for r in range(rounds):
        for name in got:
            out = subprocess.run(
                [sys.executable, __file__, "--idle-child", name, "--seconds", str(seconds)],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got[name].append(float(out.split()[-1]))
            print(f"round {r + 1} {name:8s} {got[name][-1]:.3f} s CPU in {seconds:g} s idle")
    print(f"\nidle LocalCluster of two workers, median of {rounds} rounds:")
    for name, spent in got.items():
        med = statistics.median(spent)
        print(f"  {name:8s} {med:.3f} s CPU in {seconds:g} s: {med / seconds:.1%} of a core")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", action="store_true")
    ap.add_argument("--baseline", type=Path, help="another repro tree: --workers 2 from it too")
    ap.add_argument("--idle-child", choices=("defaults", "quiet"), help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.idle_child:
        idle_child(args.idle_child == "quiet", args.seconds)
        return
    if args.idle:
        idle(args.rounds)
        return
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        recipe = make_demo_recipe(work)
        configs = {"-j 2": ["-j", "2"], "--workers 2": ["--workers", "2"]}
        trees = dict.fromkeys(configs, ROOT)
        if args.baseline is not None:
            configs["baseline tree"] = configs["--workers 2"]
            trees["baseline tree"] = args.baseline.resolve()
        stress(recipe, 10, ["-j", "2"], work, "warm")  # the build, once, outside the timing
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in configs}
        for r in range(args.rounds):
            # Odd rounds run the configurations in the reverse order, so that whatever the
            # second command of a round meets (a warmer machine, another process's burst)
            # falls on each configuration equally (ABBA).
            order = list(configs.items())
            for name, extra in order if r % 2 == 0 else order[::-1]:
                results[name].append(stress(recipe, args.runs, extra, work, f"r{r}", trees[name]))
                loop, wall, hits = results[name][-1]
                print(
                    f"round {r + 1} {name:12s} loop {loop:6.1f} s  command {wall:6.1f} s  "
                    f"hits {hits}"
                )
        print(f"\n{args.runs} demo stress runs, median of {args.rounds} rounds:")
        med = {
            k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in results.items()
        }
        base_loop, base_wall = med["-j 2"]
        for name, (loop, wall) in med.items():
            print(
                f"  {name:12s} loop {loop:6.1f} s ({loop / base_loop - 1:+.1%})  "
                f"command {wall:6.1f} s ({wall / base_wall - 1:+.1%})  "
                f"{args.runs / loop:5.1f} runs/s"
            )
        # Each round's two runs sit minutes apart at most: their ratio shakes off the load
        # that moves both, which the medians above do not.
        for name in configs:
            if name == "-j 2":
                continue
            pairs = list(zip(results["-j 2"], results[name], strict=True))
            loop_r = statistics.median(w[0] / j[0] for j, w in pairs)
            wall_r = statistics.median(w[1] / j[1] for j, w in pairs)
            print(
                f"  per-round ratio {name} / -j 2, median: loop {loop_r - 1:+.1%}, "
                f"command {wall_r - 1:+.1%}"
            )
        report_adjusted(results)


def report_adjusted(results: dict[str, list[tuple[float, float, int]]]) -> None:
    """The overheads at the same hits, with a 90% interval from resampling whole rounds
    (a round's configurations ran a minute apart, so they stay together)."""
    rounds = len(next(iter(results.values())))
    rng = random.Random(1)

    def ratios(picked: list[int]) -> dict[tuple[str, int], float]:
        sub = {k: [v[j] for j in picked] for k, v in results.items()}
        out = {}
        for i in (0, 1):
            a = adjusted(sub, i)
            for name in results:
                if name != "-j 2":
                    out[(name, i)] = a[name] / a["-j 2"] - 1
        return out

    point = ratios(list(range(rounds)))
    draws = [ratios([rng.randrange(rounds) for _ in range(rounds)]) for _ in range(2000)]
    for name in results:
        if name == "-j 2":
            continue
        parts = []
        for i, what in ((0, "loop"), (1, "command")):
            got = sorted(d[(name, i)] for d in draws)
            lo, hi = got[int(0.05 * len(got))], got[int(0.95 * len(got)) - 1]
            parts.append(f"{what} {point[(name, i)]:+.1%} (90%: {lo:+.1%}..{hi:+.1%})")
        print(f"  at the same hits, {name} / -j 2: " + ", ".join(parts))


if __name__ == "__main__":
    main()
