#!/usr/bin/env python3
"""The demo bisect for real: one probe at a time with `-j 2` (threads here), one probe at a
time on a LocalCluster of two worker processes, and two probes at once on that cluster.

Same machine, same two cores, same build cache; configurations alternate, several rounds,
medians reported (the machine is shared and noisy). Figures per bisect: the whole command's
wall time, runs, builds and the answer. `-j 2` runs a probe's runs two at a time; two
lanes run two probes, one run each, so the comparison is two ways of spending the same two
slots: more runs of one commit, or one run of each of two.

With ``--build-delay S`` every build sleeps S seconds first and every bisect starts from
an empty cache: builds dominate, which is when probing two commits at once should pay
(their builds overlap, each lane building on its own worker).

With ``--baseline TREE`` two probes at once also run from another repro source tree (a git
worktree of an older commit, say), from its own directory, on the same histories.

With ``--case heldout`` the history is not the demo's 16 commits but ``heldout_repo.py``'s
(205 commits, a race shown in about a tenth of the runs, four commits that do not build;
round ``r`` uses seed ``r``): a longer bisect, where lanes have more to overlap.

Usage: bench/bench_parallel_bisect_real.py [--rounds R] [--slow SECONDS] [--build-delay S]
       [--baseline TREE] [--case demo|heldout]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demo"))
sys.path.insert(0, str(ROOT / "bench"))

from make_repo import make_demo_recipe  # noqa: E402

FIX = "Publish the result before unlocking"


def heldout_case(work: Path, seed: int) -> tuple[Path, str]:
    """The recipe of a held-out-shaped history (bench_heldout.py's) and its fix commit."""
    from bench_heldout import write_recipe
    from heldout_repo import make_history, pick_case

    fix_at, broken = pick_case(205, seed)
    history = make_history(work / f"sensord-{seed}", 205, fix_at, broken, seed)
    recipe = write_recipe(work / f"heldout-{seed}.yaml", history.path, "300 6000")
    return recipe, history.sha(history.fix_at)


def bisect(
    recipe: Path,
    extra: list[str],
    work: Path,
    tag: str,
    slow: float,
    build_delay: float,
    tree: Path = ROOT,
    fix_sha: str | None = None,
) -> dict[str, float]:
    out = work / f"{tag}.json"
    # With builds that cost, every bisect starts from an empty cache (they would find the
    # last one's builds otherwise); without, all share one, as before.
    cache = work / (f"cache-{tag}" if build_delay > 0 else "cache")
    env = {**os.environ, "PYTHONPATH": str(tree), "REPRO_CACHE_DIR": str(cache)}
    if slow > 0:
        # A run that costs what a TSAN interpreter's start-up does, so runs dominate.
        command = f"reproducer.command=sleep {slow:g} && ./stress_test 3 100 1000"
        extra = [*extra, "--set", command]
    if build_delay > 0:
        # A build that costs what a CPython or a big extension does, so builds dominate.
        extra = [*extra, "--set", f'extension.build=["sleep {build_delay:g}", "make"]']
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "repro", "bisect", str(recipe), *extra,
         "--runs-dir", str(work / tag), "--json-out", str(out)],
        capture_output=True, text=True, env=env, timeout=1800, cwd=tree,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{tag}: exit {res.returncode}\n{res.stdout}\n{res.stderr}")
    data = json.loads(out.read_text())
    culprit = data.get("culprit") or {}
    return {
        "wall": wall,
        "runs": float(data["runs"]),
        "builds": float(data["builds"]),
        "right": float(
            (culprit.get("sha") or "").startswith(fix_sha)
            if fix_sha
            else culprit.get("subject") == FIX
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slow", type=float, default=0.5, help="seconds of sleep added to a run")
    ap.add_argument(
        "--build-delay", type=float, default=0.0, help="seconds of sleep added to a build"
    )
    ap.add_argument("--baseline", type=Path, help="another repro tree: two probes from it too")
    ap.add_argument("--case", choices=("demo", "heldout"), default="demo")
    args = ap.parse_args()
    configs = {
        "-j 2 (one probe)": ["-j", "2"],
        "--workers 2 --probes 1": ["--workers", "2", "--probes", "1"],
        "--workers 2 (two probes)": ["--workers", "2", "--probes", "2"],
    }
    trees = dict.fromkeys(configs, ROOT)
    if args.baseline is not None:
        configs["two probes, baseline tree"] = configs["--workers 2 (two probes)"]
        trees["two probes, baseline tree"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="repro-bench-pbisect-") as tmp:
        work = Path(tmp)
        recipe, fix_sha = make_demo_recipe(work), None
        got: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
        for r in range(args.rounds):
            if args.case == "heldout":
                recipe, fix_sha = heldout_case(work, r)
            for name, extra in configs.items():
                tag = f"config{list(configs).index(name)}-{r}"
                got[name].append(
                    bisect(
                        recipe, extra, work, tag, args.slow, args.build_delay, trees[name], fix_sha
                    )
                )
                row = got[name][-1]
                print(
                    f"round {r + 1} {name}: {row['wall']:.1f} s, {row['runs']:.0f} runs, "
                    f"{row['builds']:.0f} builds, right {row['right']:.0f}",
                    flush=True,
                )
        print(
            f"{args.case} bisect, {args.slow:g} s added to a run, {args.build_delay:g} s to a "
            f"build, {args.rounds} rounds, medians"
        )
        print("| configuration | wall s | runs | builds | right |")
        print("|:--|--:|--:|--:|--:|")
        for name, rows in got.items():

            def cell(key: str, rows: list[dict[str, float]] = rows) -> str:
                xs = [x[key] for x in rows]
                return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"

            right = int(sum(x["right"] for x in rows))
            print(
                f"| {name} | {cell('wall')} | {cell('runs')} | {cell('builds')} | "
                f"{right}/{len(rows)} |"
            )
        base = statistics.median(x["wall"] for x in got["-j 2 (one probe)"])
        one = statistics.median(x["wall"] for x in got["--workers 2 --probes 1"])
        par = statistics.median(x["wall"] for x in got["--workers 2 (two probes)"])
        print(
            f"\nwall time, two probes against -j 2: {par / base:.2f}; against one probe "
            f"on the same cluster: {par / one:.2f}"
        )
        if args.baseline is not None:
            old = statistics.median(x["wall"] for x in got["two probes, baseline tree"])
            print(f"two probes, this tree against the baseline tree: {par / old:.2f}")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t:.0f} s in all)")
