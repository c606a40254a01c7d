"""Extension builds on a real (test-made) git repository."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from builds_fixtures import cpython_tsan_build  # noqa: F401
from test_gitrepo import commit, git

from repro.builds.cache import BuildCache, BuildError
from repro.builds.cpython import PythonBuild, setarch_prefix
from repro.builds.extension import (
    TSAN_RUSTFLAGS,
    build_env,
    ensure_extension,
    range_applies,
    rustc_info,
)
from repro.gitrepo import GitRepo
from repro.recipe import EnvRange, ExtensionSpec


@pytest.fixture
def project(tmp_path: Path) -> tuple[GitRepo, list[str]]:
    """A linear history c0..c4; the build fails from c3 on (``broken`` marker file)."""
    repo = tmp_path / "ext"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = [commit(repo, "c0"), commit(repo, "c1"), commit(repo, "c2")]
    shas.append(commit(repo, "broken"))
    shas.append(commit(repo, "c4"))
    return GitRepo.open_cached(str(repo), tmp_path / "cache"), shas


def _fake_python(tmp_path: Path, compiler: str = "gcc") -> PythonBuild:
    prefix = tmp_path / "py"
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    return PythonBuild(
        python=prefix / "bin" / "python3",
        prefix=prefix,
        key="pykey",
        version="3.13.5",
        gil_disabled=True,
        tsan=True,
        compiler=compiler,
        compiler_version="gcc 12",
        source="test",
        source_id="x",
    )


def test_env_ranges_before_and_since(project: tuple[GitRepo, list[str]]) -> None:
    repo, c = project
    before = EnvRange(before=c[2], env={"OLD": "1"})
    since = EnvRange(since=c[2], env={"NEW": "1"})
    both = EnvRange(since=c[1], before=c[3], env={"MID": "1"})
    assert [range_applies(before, repo, s) for s in c] == [True, True, False, False, False]
    assert [range_applies(since, repo, s) for s in c] == [False, False, True, True, True]
    assert [range_applies(both, repo, s) for s in c] == [False, True, True, False, False]
    # short shas are fine
    assert range_applies(EnvRange(before=c[2][:9], env={}), repo, c[1])


def test_build_env_c(project: tuple[GitRepo, list[str]], tmp_path: Path) -> None:
    repo, c = project
    py = _fake_python(tmp_path, compiler="clang-19")
    spec = ExtensionSpec(
        repo="x",
        env={"FOO": "bar", "CFLAGS": "-fsanitize=thread -O2"},
        env_ranges=(EnvRange(before=c[2], env={"UNSAFE_PYO3_BUILD_FREE_THREADED": "1"}),),
    )
    base = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/lib"}
    env = build_env(spec, repo, c[0], python=py, cache=BuildCache(tmp_path / "c"), base_env=base)
    assert env["PATH"] == f"{py.bin_dir}:/usr/bin:/bin"
    assert env["PYO3_PYTHON"] == env["PYTHON"] == str(py.python)
    assert env["LD_LIBRARY_PATH"] == f"{py.prefix / 'lib'}:/opt/lib"
    assert env["CFLAGS"] == "-fsanitize=thread -O2"  # the recipe wins over the default
    assert env["LDFLAGS"] == "-fsanitize=thread"
    assert env["CC"] == "clang-19" and env["CXX"] == "clang++-19"
    assert env["FOO"] == "bar" and env["UNSAFE_PYO3_BUILD_FREE_THREADED"] == "1"
    later = build_env(spec, repo, c[4], python=py, cache=BuildCache(tmp_path / "c"), base_env=base)
    assert "UNSAFE_PYO3_BUILD_FREE_THREADED" not in later
    none = build_env(
        spec.model_copy(update={"sanitize": "none"}),
        repo,
        c[4],
        python=None,
        cache=BuildCache(tmp_path / "c"),
        base_env=base,
    )
    assert "PATH" not in none and "LDFLAGS" not in none and "CFLAGS" in none  # from spec.env
    # A recipe's CFLAGS for its own ends (a define) joins repro's TSAN flags: it replaced
    # them, and the build came out without TSAN, blamed on setup.py.
    own = build_env(
        spec.model_copy(update={"env": {"CFLAGS": "-O2 -DNDEBUG", "LDFLAGS": "-lm"}}),
        repo,
        c[4],
        python=py,
        cache=BuildCache(tmp_path / "c"),
        base_env=base,
    )
    assert own["CFLAGS"] == "-fsanitize=thread -g -O1 -O2 -DNDEBUG"
    assert own["LDFLAGS"] == "-fsanitize=thread -lm"
    assert own["CXXFLAGS"] == "-fsanitize=thread -g -O1"


def test_build_env_rust(
    project: tuple[GitRepo, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rustc_info() is None:
        pytest.skip("no rustc")
    repo, c = project
    cache = BuildCache(tmp_path / "c")
    spec = ExtensionSpec(repo="x", sanitize="rust")
    env = build_env(spec, repo, c[0], python=_fake_python(tmp_path), cache=cache, base_env={})
    assert env["RUSTC_BOOTSTRAP"] == "1" and env["RUSTFLAGS"] == TSAN_RUSTFLAGS
    info = rustc_info()
    assert info is not None and env["CARGO_BUILD_TARGET"] == info[0]
    target = Path(env["CARGO_TARGET_DIR"])
    assert target.parent == cache.base / "cargo-target"
    # shared across commits (dependencies compile once), not across pythons
    assert build_env(spec, repo, c[4], python=_fake_python(tmp_path), cache=cache, base_env={})[
        "CARGO_TARGET_DIR"
    ] == str(target)
    other = _fake_python(tmp_path)
    other = PythonBuild(**{**other.__dict__, "key": "other"})
    assert build_env(spec, repo, c[0], python=other, cache=cache, base_env={})[
        "CARGO_TARGET_DIR"
    ] != str(target)
    # nor across machines that share the cache: cargo locks its target for a whole build
    monkeypatch.setattr(socket, "gethostname", lambda: "another-machine")
    assert build_env(spec, repo, c[0], python=_fake_python(tmp_path), cache=cache, base_env={})[
        "CARGO_TARGET_DIR"
    ] != str(target)


def _spec() -> ExtensionSpec:
    return ExtensionSpec(
        repo="x",
        sanitize="c",
        build=(
            "echo building; ls > listing.txt",
            'test ! -e broken || { echo "error: it is broken"; exit 3; }',
            'printf "%s" "$CFLAGS" > cflags.txt; echo run >> runs.txt',
        ),
    )


def test_ensure_extension_builds_reuses_and_records_failures(
    project: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    repo, c = project
    cache = BuildCache(tmp_path / "cache")
    b = ensure_extension(_spec(), repo, c[1], python=None, base_dir=tmp_path, cache=cache)
    assert b.sha == c[1] and b.worktree.is_dir() and b.worktree.parent == cache.path(b.key)
    assert git(b.worktree, "rev-parse", "HEAD") == c[1]
    assert (b.worktree / "cflags.txt").read_text() == "-fsanitize=thread -g -O1"
    assert b.env["CFLAGS"] == "-fsanitize=thread -g -O1"
    assert b.log is not None and "building" in b.log.read_text()
    again = ensure_extension(_spec(), repo, c[1][:10], python=None, base_dir=tmp_path, cache=cache)
    assert again == b
    assert (b.worktree / "runs.txt").read_text() == "run\n"  # not rebuilt
    other = ensure_extension(_spec(), repo, c[2], python=None, base_dir=tmp_path, cache=cache)
    assert other.key != b.key and other.worktree != b.worktree
    assert git(b.worktree, "rev-parse", "HEAD") == c[1]  # each commit keeps its own tree

    with pytest.raises(BuildError) as err:
        ensure_extension(_spec(), repo, c[3], python=None, base_dir=tmp_path, cache=cache)
    key = err.value.key
    assert key is not None and not cache.path(key).exists()
    rec = cache.failure(key)
    assert rec is not None and rec.log is not None
    assert "error: it is broken" in rec.log.read_text()
    assert "exit status 3" in str(err.value)
    # known failure: no second attempt (a bisection skips it cheaply)
    with pytest.raises(BuildError, match="failed before"):
        ensure_extension(_spec(), repo, c[3], python=None, base_dir=tmp_path, cache=cache)
    # the mirror has no stale worktree of the failed build
    listing = git(repo.mirror, "worktree", "list", "--porcelain")
    assert key not in listing
    assert json.loads((cache.path(b.key) / "repro-build.json").read_text())["sha"] == c[1]


def test_extension_key_depends_on_build_steps_and_env(
    project: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    repo, c = project
    cache = BuildCache(tmp_path / "cache")
    spec = ExtensionSpec(repo="x", build=("true",))
    k1 = ensure_extension(spec, repo, c[0], python=None, base_dir=tmp_path, cache=cache).key
    k2 = ensure_extension(
        spec.model_copy(update={"build": ("true", "true")}),
        repo,
        c[0],
        python=None,
        base_dir=tmp_path,
        cache=cache,
    ).key
    k3 = ensure_extension(
        spec.model_copy(update={"env": {"A": "1"}}),
        repo,
        c[0],
        python=None,
        base_dir=tmp_path,
        cache=cache,
    ).key
    k4 = ensure_extension(
        spec.model_copy(update={"sanitize": "none"}),
        repo,
        c[0],
        python=None,
        base_dir=tmp_path,
        cache=cache,
    ).key
    assert len({k1, k2, k3, k4}) == 4


def test_build_runs_with_the_exported_env(
    project: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    repo, c = project
    py = _fake_python(tmp_path)
    (py.bin_dir / "python3").write_text("#!/bin/sh\necho fake-python\n")
    (py.bin_dir / "python3").chmod(0o755)
    spec = ExtensionSpec(repo="x", sanitize="none", build=("python3 > which.txt",))
    b = ensure_extension(
        spec, repo, c[0], python=py, base_dir=tmp_path, cache=BuildCache(tmp_path / "cache")
    )
    assert (b.worktree / "which.txt").read_text().strip() == "fake-python"
    out = subprocess.run(
        ["python3"], env={**os.environ, **b.env}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "fake-python"


RACY_EXT = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static long counter;
static PyObject *bump(PyObject *self, PyObject *args) {
    for (int i = 0; i < 1000; i++) counter++;
    return PyLong_FromLong(counter);
}
static PyMethodDef methods[] = {{"bump", bump, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static PyModuleDef_Slot slots[] = {{Py_mod_gil, Py_MOD_GIL_NOT_USED}, {0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "racy", NULL, 0, methods, slots};
PyMODINIT_FUNC PyInit_racy(void) { return PyModuleDef_Init(&mod); }
"""

USE_RACY_EXT = """
import threading, racy
barrier = threading.Barrier(4)
def work():
    barrier.wait()
    for _ in range(2000):
        racy.bump()
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print("done")
"""


@pytest.mark.slow
def test_c_extension_built_with_tsan_against_the_tsan_python(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    """The env handed back builds a C extension with TSAN, and runs it, as the runner will."""
    repo = tmp_path / "racyext"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    sha = commit(repo, "racy.c", RACY_EXT)
    spec = ExtensionSpec(
        repo=str(repo),
        sanitize="c",
        build=(
            'test "$(command -v python3)" = "$PYTHON"',
            '"$CC" $CFLAGS -shared -fPIC $(python3-config --includes) racy.c '
            "-o racy$(python3-config --extension-suffix) $LDFLAGS",
        ),
    )
    cache = BuildCache(tmp_path / "cache")  # the python comes from the shared test cache
    gitrepo = GitRepo.open_cached(str(repo), cache.base)
    ext = ensure_extension(
        spec, gitrepo, sha, python=cpython_tsan_build, base_dir=tmp_path, cache=cache
    )
    assert list(ext.worktree.glob("racy*.so"))
    texts = []
    for _ in range(5):  # a race between two threads is likely, not certain, in one run
        out = subprocess.run(
            [*setarch_prefix(), "python3", "-c", USE_RACY_EXT],
            cwd=ext.worktree,
            env={**os.environ, **ext.env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        texts.append(out.stdout + out.stderr)
        assert "done" in texts[-1], texts[-1][-3000:]
        if "WARNING: ThreadSanitizer: data race" in texts[-1]:
            break
    assert "WARNING: ThreadSanitizer: data race" in texts[-1], texts[-1][-3000:]
    assert "racy.c:6 in bump" in texts[-1]


def test_console_shows_one_build_line_for_several_commands(
    project: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    """Each build command used to close a phase named "build": two identical lines."""
    import io

    from rich.console import Console

    from repro.builds.progress import RichBuildProgress

    repo, c = project
    out = io.StringIO()
    progress = RichBuildProgress(Console(file=out, width=120, force_terminal=False))
    spec = ExtensionSpec(repo="x", sanitize="c", build=("true", "echo two > two.txt"))
    cache = BuildCache(tmp_path / "cache")
    ensure_extension(
        spec, repo, c[1], python=None, base_dir=tmp_path, cache=cache, progress=progress
    )
    ensure_extension(
        spec, repo, c[2], python=None, base_dir=tmp_path, cache=cache, progress=progress
    )
    lines = [ln for ln in out.getvalue().splitlines() if "✓" in ln]
    builds = [ln for ln in lines if "✓ build" in ln]
    assert len(builds) == 2, out.getvalue()  # one per commit
    assert all("(2 commands)" in ln for ln in builds), builds
    assert sum("✓ worktree" in ln for ln in lines) == 2


def test_a_failing_command_piped_into_tee_fails_at_its_own_step(
    project: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    """`cargo build | tee build.log` whose cargo failed went on: the next step (copying
    its output) failed instead, with `cp: cannot stat ''`. Steps run with pipefail."""
    repo, c = project
    spec = ExtensionSpec(
        repo="x",
        sanitize="c",
        build=(
            "{ echo 'error[E0425]: cannot find value'; exit 101; } | tee build.log",
            "cp nothing here",
        ),
    )
    cache = BuildCache(tmp_path / "cache")
    with pytest.raises(BuildError) as err:
        ensure_extension(spec, repo, c[1], python=None, base_dir=tmp_path, cache=cache)
    said = str(err.value)
    assert "exit status 101" in said and "| tee build.log" in said, said
    assert "cp nothing here" not in said and "\\'" not in said


def test_a_crate_built_for_release_keeps_its_file_names(tmp_path: Path) -> None:
    """`cargo build --release` (and maturin, which builds that profile) strips debug
    info that RUSTFLAGS' `-g` asked for: cargo's release profile has `debug = 0`, and
    since Rust 1.77 that means `strip = "debuginfo"`. The race's frames then named a
    codegen unit (`racy.1a2b-cgu.0`) instead of `main.rs`, and a target with
    `files: [main.rs]` matched no run: a rate of 0 at the racy end."""
    if rustc_info() is None:
        pytest.skip("no rustc")
    from conftest import repro
    from tsan_helpers import PROGRAMS

    crate = tmp_path / "crate"
    (crate / "src").mkdir(parents=True)
    git(crate, "init", "-q", "-b", "main")
    commit(crate, "src/main.rs", (PROGRAMS / "racy.rs").read_text())
    commit(crate, "Cargo.toml", '[package]\nname = "racy"\nversion = "0.1.0"\nedition = "2021"\n')
    recipe = tmp_path / "r.yaml"
    build = 'cargo build --release && cp "$CARGO_TARGET_DIR/$CARGO_BUILD_TARGET/release/racy" .'
    recipe.write_text(
        "name: rust-release\n"
        f"extension: {{repo: {json.dumps(str(crate))}, ref: main, sanitize: rust,\n"
        f"  build: [{json.dumps(build)}]}}\n"
        "reproducer: {command: ./racy}\n"
        "target: {functions: [store_value, load_value], files: [main.rs]}\n"
    )
    runs = tmp_path / "runs"
    env = {"REPRO_CACHE_DIR": str(tmp_path / "cache")}
    res = repro("stress", str(recipe), "-n", "2", "-j", "1", "--runs-dir", str(runs), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 of 2 runs hit the target race" in res.stdout, res.stdout
    logs = "".join(p.read_text() for p in runs.rglob("tsan.*"))
    assert re.search(r"#\d racy::store_value \S*/src/main\.rs:\d+", logs), logs[:3000]
