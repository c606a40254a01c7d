"""Building the extension under test at one commit, with TSAN, against one CPython.

Every commit a bisection visits gets its own worktree, kept once built, so asking
again is free; the expensive part (compiling dependencies) is shared between
commits through one cargo target directory per repository and options. The
environment the build ran with is handed back, because the reproducer must run
with the same one (cargo, for one, rebuilds everything if RUSTFLAGS differ).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.builds.cache import BuildCache, BuildContext, BuildError, cache_key, would_build
from repro.builds.cpython import PythonBuild
from repro.builds.progress import BuildProgress, NullProgress, ensure_reported, lost_note
from repro.gitrepo import GitRepo
from repro.host.compilers import cxx_for
from repro.host.environ import child_environ
from repro.recipe import EnvRange, ExtensionSpec
from repro.text import truncate

TSAN_CFLAGS = "-fsanitize=thread -g -O1"
TSAN_LDFLAGS = "-fsanitize=thread"
TSAN_RUSTFLAGS = "-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"
# cargo's release profile (`cargo build --release`, and maturin's wheels) has `debug = 0`,
# which since Rust 1.77 also strips the debug info that `-g` in RUSTFLAGS made: a race's
# frames then named a codegen unit (`racy.1a2b-cgu.0`), never a file, so a target with
# `files: [lib.rs]` matched no run. Set for every cargo build repro makes; a recipe's
# extension.env can still say otherwise.
CARGO_DEBUG_ENV = {"CARGO_PROFILE_RELEASE_DEBUG": "true", "CARGO_PROFILE_RELEASE_STRIP": "none"}


@dataclass(frozen=True)
class ExtensionBuild:
    """A built worktree and the variables (to set on top of os.environ) to use it with."""

    worktree: Path
    env: dict[str, str]
    key: str
    log: Path | None
    sha: str

    def to_json(self) -> dict[str, Any]:
        return {
            "worktree": str(self.worktree),
            "env": dict(self.env),
            "key": self.key,
            "log": str(self.log) if self.log else None,
            "sha": self.sha,
        }


@functools.lru_cache(maxsize=1)
def rustc_info() -> tuple[str, str] | None:
    """(host triple, full ``rustc -vV``); the explicit target is what sanitizers need."""
    if shutil.which("rustc") is None:
        return None
    try:
        out = subprocess.run(
            ["rustc", "-vV"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    host = next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("host:")), None
    )
    return (host, out.strip()) if host else None


def range_applies(rng: EnvRange, repo: GitRepo, sha: str) -> bool:
    """``before: X`` holds where X is not yet in the history, ``since: X`` where it is."""
    if rng.before is not None and repo.is_ancestor(rng.before, sha):
        return False
    return not (rng.since is not None and not repo.is_ancestor(rng.since, sha))


def range_env(spec: ExtensionSpec, repo: GitRepo, sha: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for rng in spec.env_ranges:
        if range_applies(rng, repo, sha):
            env.update(rng.env)
    return env


def cargo_target_dir(
    spec: ExtensionSpec, repo: GitRepo, python: PythonBuild | None, cache: BuildCache
) -> Path:
    """One target directory per (repository, options, machine): dependencies compile once.

    Cargo holds a lock on its target directory for a whole build (a second build prints
    "Blocking waiting for file lock", seen on one machine). Machines that share a cache
    (``--shared-cache``) would each wait for the others' builds, so lanes building
    different commits on different machines would build one after another (and a lock
    over NFS is the filesystem's to honour); each machine keeps its own.
    """
    ident = cache_key(
        {
            "kind": "cargo-target",
            "host": socket.gethostname(),
            "repo": repo.source,
            "sanitize": spec.sanitize,
            "python": python.key if python else None,
            "env": spec.env,
        }
    )
    return cache.base / "cargo-target" / f"{Path(repo.mirror).name[:30]}-{ident[:16]}"


def build_env(
    spec: ExtensionSpec,
    repo: GitRepo,
    sha: str,
    *,
    python: PythonBuild | None,
    cache: BuildCache,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Variables to set on top of ``base_env`` (os.environ) to build and run at ``sha``.

    Values are complete (PATH already contains the inherited PATH). Order of
    precedence: repro's defaults, then the recipe's ``env``, then matching
    ``env_ranges``, so a recipe can always override what repro chose.
    """
    base = child_environ() if base_env is None else dict(base_env)
    env: dict[str, str] = {}
    if python is not None:
        env["PATH"] = os.pathsep.join([str(python.bin_dir), base.get("PATH", "")]).rstrip(
            os.pathsep
        )
        env["PYTHON"] = str(python.python)
        env["PYO3_PYTHON"] = str(python.python)
        old_ld = base.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [str(python.lib_dir), *([old_ld] if old_ld else [])]
        )
    if spec.sanitize == "c":
        env["CFLAGS"] = TSAN_CFLAGS
        env["CXXFLAGS"] = TSAN_CFLAGS
        env["LDFLAGS"] = TSAN_LDFLAGS
        if python is not None and python.compiler:
            env["CC"] = python.compiler
            env["CXX"] = cxx_for(python.compiler)
    elif spec.sanitize == "rust":
        info = rustc_info()
        if info is None:
            raise BuildError(
                "sanitize: rust needs rustc and cargo (install rustup, or apt-get install "
                "rustc cargo); see `repro doctor`"
            )
        env["RUSTC_BOOTSTRAP"] = "1"
        env["RUSTFLAGS"] = TSAN_RUSTFLAGS
        env["RUSTDOCFLAGS"] = TSAN_RUSTFLAGS
        env.update(CARGO_DEBUG_ENV)
        env["CARGO_BUILD_TARGET"] = info[0]
        env["CARGO_TARGET_DIR"] = str(cargo_target_dir(spec, repo, python, cache))
        if python is not None and python.compiler:
            env["CC"] = python.compiler  # C code built by cc-rs must match the runtime
    return with_recipe_env(env, {**spec.env, **range_env(spec, repo, sha)})


# The variables repro sets to build with TSAN that a recipe also sets for its own ends
# (a -D define, -std=...): the two are joined, repro's first, so that the recipe's
# words win where they overlap; a value that names a sanitizer itself replaces repro's.
_FLAG_VARS = ("CFLAGS", "CXXFLAGS", "LDFLAGS", "RUSTFLAGS", "RUSTDOCFLAGS")


def with_recipe_env(ours: Mapping[str, str], recipe: Mapping[str, str]) -> dict[str, str]:
    """``ours`` (repro's build variables) with the recipe's ``env`` over them. A recipe's
    `CFLAGS: "-O2 -DNDEBUG"` replaced repro's `-fsanitize=thread`, and the build failed
    as "built without TSAN" with the blame on setup.py."""
    env = dict(ours)
    for key, value in recipe.items():
        mine = ours.get(key)
        if key in _FLAG_VARS and mine and "sanitize" not in value:
            env[key] = f"{mine} {value}".strip()
        else:
            env[key] = value
    return env


def extension_key(
    spec: ExtensionSpec, repo: GitRepo, sha: str, python: PythonBuild | None, env: Mapping[str, str]
) -> str:
    """Everything that changes the built worktree; paths that derive from the key do not."""
    toolchain: str | None = None
    if spec.sanitize == "rust":
        info = rustc_info()
        toolchain = info[1] if info else None
    elif python is not None:
        toolchain = f"{python.compiler} {python.compiler_version}"
    stable_env = {k: v for k, v in env.items() if k not in ("PATH", "LD_LIBRARY_PATH")}
    return cache_key(
        {
            "kind": "extension",
            "repo": repo.source,
            "sha": sha,
            "build": list(spec.build),
            "env": stable_env,
            "python": python.key if python else None,
            "sanitize": spec.sanitize,
            "toolchain": toolchain,
        }
    )


def run_build_commands(
    spec: ExtensionSpec,
    ctx: BuildContext,
    worktree: Path,
    run_env: Mapping[str, str],
    prog: BuildProgress,
    phase: str = "build",
) -> None:
    """The recipe's `build` commands in the checkout, within `build_timeout` together
    (a python-package's run before its backend: phase "prebuild")."""
    deadline = time.monotonic() + spec.build_timeout
    for i, cmd in enumerate(spec.build, 1):
        prog.phase(phase, f"{i}/{len(spec.build)}: {cmd[:60]}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise BuildError(f"build timed out after {spec.build_timeout:.0f} s")
        ctx.run(
            # pipefail, as CI runners do: `cargo build | tee log` that fails
            # fails here, not at the next step that looks for its output.
            ["bash", "-o", "pipefail", "-c", cmd],
            cwd=worktree,
            env=run_env,
            step=f"build command: {cmd}",
            timeout=left,
        )


def ensure_extension(
    spec: ExtensionSpec,
    repo: GitRepo,
    sha: str,
    *,
    python: PythonBuild | None,
    base_dir: Path,
    cache: BuildCache,
    progress: BuildProgress | None = None,
) -> ExtensionBuild:
    """The extension built at ``sha``; a BuildError (also remembered) if it cannot build.

    ``base_dir`` is accepted for symmetry with ensure_cpython; the build commands
    run in the worktree, where a recipe's relative paths would not mean the same.
    """
    del base_dir
    prog: BuildProgress = progress or NullProgress()
    full = repo.resolve(sha)
    env = build_env(spec, repo, full, python=python, cache=cache)
    key = extension_key(spec, repo, full, python, env)
    dest = cache.path(key)
    worktree = dest / "src"
    hit = cache.lookup(key)
    if hit is not None and (worktree / ".git").exists() and cache.lost_file(key) is None:
        return ExtensionBuild(worktree, env, key, dest / "build.log", full)

    info = repo.info(full)
    what = f"{repo.name} {info.short} ({truncate(info.subject, 60)})"
    gcc_tsan_python = python is not None and python.tsan and "gcc" in python.compiler
    if spec.sanitize == "rust" and gcc_tsan_python:
        prog.waiting(
            "warning: this python has gcc's TSAN runtime and Rust links LLVM's; the two "
            "must not meet in one process: build the python with --compiler clang"
        )

    def build(ctx: BuildContext) -> dict[str, Any]:
        prog.begin(what, key)
        prog.phase("worktree", info.short)
        try:
            repo.worktree(full, worktree)
            run_env = {**child_environ(), **env}
            if "CARGO_TARGET_DIR" in env:
                Path(env["CARGO_TARGET_DIR"]).mkdir(parents=True, exist_ok=True)
            run_build_commands(spec, ctx, worktree, run_env, prog)
        except BaseException:
            repo.remove_worktree(worktree)
            raise
        return {"extension_build": {"worktree": str(worktree), "sha": full}}

    meta = {
        "kind": "extension",
        "what": what,
        "repo": repo.source,
        "mirror": str(repo.mirror),
        "sha": full,
        "build": list(spec.build),
        "python": python.key if python else None,
        "sanitize": spec.sanitize,
        "env": env,
    }
    if hit is not None:  # finished entry whose worktree was removed by hand: redo it
        would_build(key)
        lost = cache.lost_file(key)
        if lost is not None:
            prog.waiting(lost_note(what, lost))
        shutil.rmtree(dest, ignore_errors=True)
    ensure_reported(cache, key, meta, build, prog, what)
    return ExtensionBuild(worktree, env, key, dest / "build.log", full)
