#!/usr/bin/env python3
"""A small CPython git history made from a release tarball, for bisecting without network.

CPython's real history is not reachable from every machine, but the gh-128133 fix is
one function pair in Objects/bytesobject.c. This builds a repository whose history
goes racy -> unrelated -> fix -> unrelated, from the 3.13.5 tarball and the revert
patch, so that `repro bisect` can be run over CPython commits (incremental builds,
the python side of a recipe) on any machine:

  c1  3.13.5 with the gh-128133 fix reverted          (tag: racy)
  c2  Lib: a comment in Lib/this.py
  c3  gh-128133: use relaxed atomics for ob_shash      (the fix, back)
  c4  Doc: a line in Doc/whatsnew/3.13.rst             (tag: fixed)

Usage: make_cpython_history.py TARBALL PATCH DEST [--force]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path


def git(root: Path, *args: str, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("tarball", type=Path)
    ap.add_argument("patch", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    dest: Path = args.dest
    if (dest / ".git").exists() and not args.force:
        print(f"exists: {dest}")
        return 0
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(args.tarball) as tf:
        tf.extractall(tmp, filter="data")
    (top,) = list(tmp.iterdir())
    top.rename(dest)
    tmp.rmdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "repro",
        "GIT_AUTHOR_EMAIL": "repro@example.org",
        "GIT_COMMITTER_NAME": "repro",
        "GIT_COMMITTER_EMAIL": "repro@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
    }

    def commit(n: int, msg: str, tag: str | None = None) -> None:
        date = f"2025-06-0{n}T12:00:00+00:00"
        e = {**env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        git(dest, "add", "-A", env=e)
        git(dest, "commit", "-q", "-m", msg, env=e)
        if tag:
            git(dest, "tag", tag, env=e)

    git(dest, "init", "-q", "-b", "main", env=env)
    pristine = (dest / "Objects" / "bytesobject.c").read_text()
    subprocess.run(["patch", "-p1", "-s", "-i", str(args.patch.resolve())], cwd=dest, check=True)
    commit(1, "3.13.5 with the gh-128133 fix reverted (plain ob_shash accesses)", "racy")
    with (dest / "Lib" / "this.py").open("a") as f:
        f.write("# an unrelated change\n")
    commit(2, "Lib: a comment in Lib/this.py")
    (dest / "Objects" / "bytesobject.c").write_text(pristine)
    commit(3, "gh-128133: use relaxed atomics for ob_shash in free-threaded builds")
    with (dest / "Doc" / "whatsnew" / "3.13.rst").open("a") as f:
        f.write("\n.. an unrelated documentation change\n")
    commit(4, "Doc: a line in whatsnew", "fixed")
    print(f"CPython history: {dest} (racy .. fixed, 4 commits)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
