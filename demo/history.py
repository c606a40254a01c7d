"""Write a generated git history: the part every bundled example shares.

Each example (demo/make_repo.py, demo/make_pkg_repo.py) gives a plan of commits, each
a subject and a state of the tree, and a function that writes a state; this makes the
repository with fixed authors and dates, so that the same plan always gives the same
commit ids.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

State = Mapping[str, Any]


def git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def write_history(
    dest: Path,
    plan: Iterable[tuple[str, State]],
    write_tree: Callable[[Path, State], None],
    month: int,
    force: bool = False,
) -> Path:
    """One commit per step of ``plan`` (tagged where the state names a tag)."""
    if dest.exists():
        if not force and (dest / ".git").exists():
            return dest
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    base_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada Example",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada Example",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
    }
    git(dest, "init", "-q", "-b", "main", env=base_env)
    for n, (subject, st) in enumerate(plan):
        write_tree(dest, st)
        date = f"2025-{month:02d}-{n + 1:02d}T12:00:00+00:00"
        env = {**base_env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        git(dest, "add", "-A", env=env)
        git(dest, "commit", "-q", "-m", subject, env=env)
        if st["tag"]:
            git(dest, "tag", str(st["tag"]), env=env)
    return dest


def main(argv: list[str], doc: str | None, make: Callable[[Path, bool], Path], what: str) -> int:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--force", action="store_true", help="recreate it if it exists")
    args = ap.parse_args(argv)
    path = make(args.dest, args.force)
    print(f"{what}: {path} ({git(path, 'rev-list', '--count', 'HEAD')} commits)")
    return 0
