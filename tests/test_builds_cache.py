"""The build cache: keys, one build per key across processes, atomic entries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from repro.builds.cache import (
    META_FILE,
    BuildCache,
    BuildContext,
    BuildError,
    NotInCache,
    cache_key,
    lookup_only,
    sha256_file,
)
from repro.builds.cpython import Compiler, cpython_key
from repro.recipe import PythonSpec

REPO_ROOT = Path(__file__).resolve().parent.parent


def _compiler(**over: str) -> Compiler:
    base = {
        "requested": "gcc",
        "command": "gcc",
        "path": "/usr/bin/x86_64-linux-gnu-gcc-12",
        "version": "gcc (Debian 12.2.0-14) 12.2.0",
        "version_output": "gcc (Debian 12.2.0-14) 12.2.0\nCopyright...",
        "family": "gcc",
    }
    base.update(over)
    return Compiler(**base)


def test_cache_key_is_canonical() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert len(cache_key({})) == 64


def test_cpython_key_changes_with_each_input_and_nothing_else() -> None:
    spec = PythonSpec(version="3.13.5")
    src = {"tarball_sha256": "aa" * 32}
    base = cpython_key(src, spec, _compiler(), ["p1"])
    variants = {
        "source": cpython_key({"tarball_sha256": "bb" * 32}, spec, _compiler(), ["p1"]),
        "git source": cpython_key({"git_sha": "aa" * 20}, spec, _compiler(), ["p1"]),
        "patch content": cpython_key(src, spec, _compiler(), ["p2"]),
        "no patch": cpython_key(src, spec, _compiler(), []),
        "patch order": cpython_key(src, spec, _compiler(), ["p1", "p0"]),
        "free threading": cpython_key(
            src, spec.model_copy(update={"free_threading": False}), _compiler(), ["p1"]
        ),
        "tsan": cpython_key(src, spec.model_copy(update={"tsan": False}), _compiler(), ["p1"]),
        "debug": cpython_key(src, spec.model_copy(update={"debug": True}), _compiler(), ["p1"]),
        "configure args": cpython_key(
            src, spec.model_copy(update={"configure_args": ("--with-lto",)}), _compiler(), ["p1"]
        ),
        "compiler path": cpython_key(src, spec, _compiler(path="/opt/gcc"), ["p1"]),
        "compiler version": cpython_key(src, spec, _compiler(version_output="gcc 13.1.0"), ["p1"]),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)
    # where the tarball came from, or what the patch file is called, does not matter:
    # only their contents (passed as digests) do
    moved = spec.model_copy(update={"source": "/elsewhere/Python-3.13.5.tar.xz"})
    assert cpython_key(src, moved, _compiler(), ["p1"]) == base
    assert cpython_key(src, spec, _compiler(command="/usr/bin/gcc"), ["p1"]) == base


def _write(ctx: BuildContext, name: str = "result.txt") -> dict[str, Any]:
    (ctx.staging / name).write_text(f"built by {os.getpid()}")
    return {"extra": 1}


def test_ensure_builds_once_and_hits_fast(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    calls: list[str] = []

    def build(ctx: BuildContext) -> dict[str, Any]:
        calls.append(ctx.key)
        assert ctx.dest == cache.path("k1") and ctx.staging != ctx.dest
        ctx.run([sys.executable, "-c", "print('compiling')"], cwd=tmp_path, step="echo")
        return _write(ctx)

    p = cache.ensure("k1", {"what": "thing"}, build)
    assert p == cache.path("k1") and (p / "result.txt").exists()
    meta = json.loads((p / META_FILE).read_text())
    assert meta["what"] == "thing" and meta["extra"] == 1 and meta["key"] == "k1"
    assert "compiling" in (p / "build.log").read_text()
    t = time.perf_counter()
    assert cache.ensure("k1", {"what": "thing"}, build) == p
    assert time.perf_counter() - t < 0.1
    assert calls == ["k1"]
    assert [e.key for e in cache.list()] == ["k1"]
    assert not [x for x in cache.root.iterdir() if x.name.startswith((".tmp-", ".scratch-"))]


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from repro.builds.cache import BuildCache
    base, marker, key, sleep = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    def build(ctx):
        with marker.open("a") as f:
            f.write(f"{os.getpid()}\\n")
        (ctx.staging / "out").write_text("x")
        time.sleep(sleep)
        return None
    print(BuildCache(base).ensure(key, {"what": "sleepy"}, build), flush=True)
    """
)


def _child(tmp_path: Path, key: str, sleep: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tmp_path / "cache"),
            str(tmp_path / "calls"),
            key,
            str(sleep),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_lookup_only_answers_from_the_cache_and_never_builds(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    calls: list[str] = []

    def build(ctx: BuildContext) -> dict[str, Any]:
        calls.append(ctx.key)
        return _write(ctx)

    with lookup_only(), pytest.raises(NotInCache):
        cache.ensure("k1", {"what": "thing"}, build)
    assert calls == [] and cache.list() == []
    assert not [x for x in cache.root.iterdir() if x.name.startswith((".tmp-", ".scratch-"))]
    made = cache.ensure("k1", {"what": "thing"}, build)
    with lookup_only():
        assert cache.ensure("k1", {"what": "thing"}, build) == made
    assert calls == ["k1"]
    # The sieve a bisect reads first: the commits some entry was built from.
    cache.ensure("k2", {"what": "ext", "sha": "a" * 40}, build)
    cache.ensure("k3", {"what": "py", "source_id": {"git_sha": "b" * 40}}, build)
    assert cache.commits() == {"a" * 40, "b" * 40}


def test_file_digest_follows_the_file(tmp_path: Path) -> None:
    # Computed once per file in a process, so it must see a file rewritten in between.
    f = tmp_path / "Python-3.13.5.tar.xz"
    f.write_bytes(b"one")
    first = sha256_file(f)
    assert sha256_file(f) == first
    f.write_bytes(b"two, longer")
    assert sha256_file(f) != first


def test_concurrent_processes_build_a_key_once(tmp_path: Path) -> None:
    procs = [_child(tmp_path, "shared-key", 1.5) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and outs[0].endswith("shared-key")
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_killed_build_leaves_no_entry_and_is_rebuilt(tmp_path: Path) -> None:
    proc = _child(tmp_path, "victim", 60)
    deadline = time.time() + 30
    while not (tmp_path / "calls").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = BuildCache(tmp_path / "cache")
    assert cache.lookup("victim") is None
    assert not cache.path("victim").exists()
    assert cache.list() == []
    # the lock died with the process; a new build goes through
    p = cache.ensure("victim", {}, _write)
    assert (p / "result.txt").exists()


def test_failed_build_is_recorded_and_not_retried(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    calls = []

    def bad(ctx: BuildContext) -> None:
        calls.append(1)
        (ctx.staging / "half.o").write_text("half")
        ctx.run(
            [sys.executable, "-c", "print('error: foo.c:3: boom'); raise SystemExit(2)"],
            cwd=tmp_path,
            step="make",
        )

    with pytest.raises(BuildError) as err:
        cache.ensure("bad", {"what": "broken"}, bad)
    assert "make failed (exit status 2)" in str(err.value)
    assert any("boom" in line for line in err.value.tail)
    assert err.value.log == cache.root / "failed" / "bad.log"
    assert not cache.path("bad").exists() and cache.lookup("bad") is None
    assert not [x for x in cache.root.iterdir() if x.name.startswith((".tmp-", ".scratch-"))]
    rec = cache.failure("bad")
    assert rec is not None and rec.meta["what"] == "broken" and "exit status 2" in rec.error
    assert rec.log is not None and "boom" in rec.log.read_text()
    # known bad: fails fast without building again
    with pytest.raises(BuildError, match="failed before"):
        cache.ensure("bad", {"what": "broken"}, bad)
    assert calls == [1]
    # unless asked to retry; a success clears the record
    assert cache.ensure("bad", {}, _write, retry_failed=True).exists()
    assert calls == [1] and cache.failure("bad") is None
    retrying = BuildCache(tmp_path, retry_failed=True)
    with pytest.raises(BuildError):
        retrying.ensure("bad2", {}, bad)
    with pytest.raises(BuildError):
        retrying.ensure("bad2", {}, bad)
    assert calls == [1, 1, 1]


def test_interrupted_build_is_not_recorded_as_failure(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)

    def interrupted(ctx: BuildContext) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.ensure("ki", {}, interrupted)
    assert cache.failure("ki") is None and not cache.path("ki").exists()


def test_in_place_build(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)

    def build(ctx: BuildContext) -> None:
        assert ctx.staging == ctx.dest
        (ctx.dest / "tree").mkdir()

    def bad(ctx: BuildContext) -> None:
        (ctx.dest / "tree").mkdir()
        raise BuildError("nope")

    assert (cache.ensure("ip", {}, build, in_place=True) / "tree").is_dir()
    with pytest.raises(BuildError):
        cache.ensure("ip-bad", {}, bad, in_place=True)
    assert not cache.path("ip-bad").exists()
    # a leftover directory without metadata is not an entry, and is rebuilt cleanly
    leftover = cache.path("ip2")
    (leftover / "junk").mkdir(parents=True)
    assert cache.lookup("ip2") is None and [e.key for e in cache.list()] == ["ip"]
    cache.ensure("ip2", {}, build, in_place=True)
    assert not (leftover / "junk").exists() and (leftover / "tree").is_dir()


def test_prune_and_path(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    old = cache.ensure("old", {"what": "old one"}, _write)
    new = cache.ensure("new", {"what": "new one"}, _write)
    long_ago = time.time() - 40 * 86400
    os.utime(old / META_FILE, (long_ago, long_ago))
    assert cache.path("new") == new
    entries = {e.key: e for e in cache.list()}
    assert entries["old"].what == "old one" and entries["new"].size() > 0
    removed = cache.prune(timedelta(days=30))
    assert [e.key for e in removed] == ["old"]
    assert not old.exists() and new.exists()
    assert cache.prune(timedelta(days=30)) == []


def test_prune_removes_unused_build_trees(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    stale, fresh = tmp_path / "trees" / "cpython-stale", tmp_path / "trees" / "cpython-fresh"
    for t in (stale, fresh):
        (t / "src").mkdir(parents=True)
        (t / "tree.json").write_text("{}")
    long_ago = time.time() - 40 * 86400
    os.utime(stale / "tree.json", (long_ago, long_ago))
    cache.prune(timedelta(days=30))
    assert not stale.exists() and fresh.exists()


def test_step_killed_by_a_signal_is_not_a_known_failure(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)

    def killed(ctx: BuildContext) -> None:
        ctx.run(["bash", "-c", "kill -TERM $$"], cwd=tmp_path, step="make")

    with pytest.raises(BuildError, match="killed by signal 15") as err:
        cache.ensure("sig", {}, killed)
    assert err.value.record is False
    assert cache.failure("sig") is None and not cache.path("sig").exists()


def test_an_entry_that_lost_a_file_is_built_again(tmp_path: Path) -> None:
    """A reproducer that cleaned its build (make clean, rm -rf build) left an entry that
    looked finished: every later stress and bisect step took it, and ran nothing."""
    cache = BuildCache(tmp_path)
    calls: list[str] = []

    def build(ctx: BuildContext) -> dict[str, Any]:
        calls.append(ctx.key)
        (ctx.staging / "bin").mkdir()
        (ctx.staging / "bin" / "prog").write_text("x")
        (ctx.staging / "incremental").mkdir()
        (ctx.staging / "incremental" / "session").write_text("s")
        return {}

    for in_place in (False, True):
        key = f"k-{in_place}"
        p = cache.ensure(key, {"what": "thing"}, build, in_place=in_place)
        # A tool's own scratch (rustc's incremental sessions) may come and go.
        (p / "incremental" / "session").unlink()
        assert cache.ensure(key, {"what": "thing"}, build, in_place=in_place) == p
        assert calls.count(key) == 1
        (p / "bin" / "prog").unlink()
        lost: list[str] = []
        assert (
            cache.ensure(key, {"what": "thing"}, build, in_place=in_place, on_damaged=lost.append)
            == p
        )
        assert lost == ["bin/prog"] and calls.count(key) == 2
        assert (p / "bin" / "prog").exists() and cache.lost_file(key) is None
