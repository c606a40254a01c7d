"""How long builds take: clean, incremental (one commit, one C file), and cache hits.

The bisection's cost is dominated by builds, and the persistent build tree is what
keeps each step cheap; this measures whether it does (goal: an incremental build
at most 25% of a clean one, a cache hit under 2 s).

There is no CPython history on these machines, so the bench makes one: a git
repository from the 3.13.5 tarball (commit 1) plus a commit that reverts the
bytes_hash fix (one C file). ccache is off (REPRO_CCACHE=0) so that "clean" means
clean. Run: .venv/bin/python bench/bench_builds.py [--compilers gcc,clang]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from repro.builds.cache import BuildCache  # noqa: E402
from repro.builds.cpython import apply_patch, ensure_cpython  # noqa: E402
from repro.builds.progress import RichBuildProgress  # noqa: E402
from repro.recipe import PythonSpec  # noqa: E402

PATCH = REPO_ROOT / "recipes" / "patches" / "revert-gh-128133-fix.patch"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def make_history(tarball: Path, where: Path) -> tuple[Path, str, str]:
    """A CPython git repository: the release, then one commit touching one C file."""
    repo = where / "cpython"
    repo.mkdir(parents=True)
    subprocess.run(
        ["tar", "-xf", str(tarball), "-C", str(repo), "--strip-components=1"], check=True
    )
    subprocess.run([*GIT, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*GIT, "add", "-A", "-f"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "Python 3.13.5"], cwd=repo, check=True)
    first = subprocess.run(
        [*GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    apply_patch(repo, PATCH)
    subprocess.run([*GIT, "commit", "-q", "-am", "Revert gh-128133 fix"], cwd=repo, check=True)
    second = subprocess.run(
        [*GIT, "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    return repo, first, second


def timed(label: str, fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    took = time.perf_counter() - t
    print(f"{label:<52} {took:8.1f} s", flush=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("REPRO_SHARED", REPO_ROOT.parent / "shared"))
    ap.add_argument("--tarball", type=Path, default=shared / "cpython" / "Python-3.13.5.tar.xz")
    ap.add_argument("--compilers", default="gcc", help="comma-separated: gcc,clang")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    args = ap.parse_args()
    os.environ["REPRO_CCACHE"] = "0"
    work = args.work or Path(tempfile.mkdtemp(prefix="repro-bench-", dir=Path.home() / ".cache"))
    print(f"scratch: {work}", flush=True)
    repo, first, second = make_history(args.tarball, work)
    results: dict[str, float] = {}
    progress = RichBuildProgress()
    try:
        for compiler in args.compilers.split(","):
            cache = BuildCache(work / f"cache-{compiler}")
            spec = PythonSpec(git=str(repo), ref=first, compiler=compiler)

            def clean(spec: PythonSpec = spec, cache: BuildCache = cache) -> None:
                ensure_cpython(spec, base_dir=work, cache=cache, progress=progress)

            def incremental(cache: BuildCache = cache, compiler: str = compiler) -> None:
                s = PythonSpec(git=str(repo), ref=second, compiler=compiler)
                ensure_cpython(s, base_dir=work, cache=cache, progress=progress)

            results[f"clean {compiler}"] = timed(f"clean build, {compiler} (git, commit 1)", clean)
            results[f"incremental {compiler}"] = timed(
                f"incremental build, {compiler} (commit 2: 1 C file)", incremental
            )
            results[f"hit {compiler}"] = timed(f"cache hit, {compiler}", incremental)
        print()
        for compiler in args.compilers.split(","):
            ratio = results[f"incremental {compiler}"] / results[f"clean {compiler}"]
            hit = results[f"hit {compiler}"]
            print(
                f"{compiler}: incremental/clean = {ratio:.0%} (goal <= 25%): "
                f"{'ok' if ratio <= 0.25 else 'MISSED'}; cache hit {hit:.2f} s (goal < 2 s): "
                f"{'ok' if hit < 2 else 'MISSED'}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
