"""CPython builds: source lookup, patches, compilers (fast), and real builds (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builds_fixtures import (  # noqa: F401  (fixtures used by name)
    PATCHES,
    build_cache,
    cpython_tarballs,
    cpython_tsan_build,
    cpython_tsan_racy_build,
    run_tsan,
)

from repro.builds.cache import BuildCache, BuildError
from repro.builds.cpython import (
    PythonBuild,
    apply_patch,
    configure_command,
    ensure_cpython,
    fetch_tarball,
    patch_targets,
    resolve_compiler,
    setarch_prefix,
    tarball_origin,
)
from repro.recipe import PythonSpec

# --- where tarballs come from -----------------------------------------------------


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    d = tmp_path / "mirror"
    d.mkdir()
    (d / "Python-3.13.5.tar.xz").write_bytes(b"flat")
    (d / "3.12.1").mkdir()
    (d / "3.12.1" / "Python-3.12.1.tar.xz").write_bytes(b"python.org layout")
    return d


def test_tarball_from_file_path_file_url_and_relative(mirror: Path, tmp_path: Path) -> None:
    f = mirror / "Python-3.13.5.tar.xz"
    assert tarball_origin("3.13.5", str(f), tmp_path) == str(f)
    assert tarball_origin("3.13.5", f"file:{f}", tmp_path) == str(f)
    assert tarball_origin("3.13.5", f"file://{f}", tmp_path) == str(f)
    assert tarball_origin("3.13.5", "mirror/Python-3.13.5.tar.xz", tmp_path) == str(f)


def test_tarball_from_mirror_directory(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPRO_CPYTHON_MIRROR", raising=False)
    assert tarball_origin("3.13.5", str(mirror), tmp_path) == str(mirror / "Python-3.13.5.tar.xz")
    assert tarball_origin("3.12.1", "mirror", tmp_path) == str(
        mirror / "3.12.1" / "Python-3.12.1.tar.xz"
    )
    with pytest.raises(BuildError, match=r"no tarball for CPython 3\.9\.1 .*Python-3\.13\.5"):
        tarball_origin("3.9.1", str(mirror), tmp_path)
    with pytest.raises(BuildError, match=r"not found.*--set python\.source=PATH"):
        tarball_origin("3.13.5", str(tmp_path / "nowhere.tar.xz"), tmp_path)
    # A recipe's own path that is not on this machine: the user's mirror stands in.
    monkeypatch.setenv("REPRO_CPYTHON_MIRROR", str(mirror))
    assert tarball_origin("3.13.5", str(tmp_path / "nowhere.tar.xz"), tmp_path) == str(
        mirror / "Python-3.13.5.tar.xz"
    )


def test_tarball_env_mirror_overrides_default_but_not_source(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPRO_CPYTHON_MIRROR", raising=False)
    assert (
        tarball_origin("3.13.5", None, tmp_path)
        == "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz"
    )
    monkeypatch.setenv("REPRO_CPYTHON_MIRROR", str(mirror))
    assert tarball_origin("3.13.5", None, tmp_path) == str(mirror / "Python-3.13.5.tar.xz")
    monkeypatch.setenv("REPRO_CPYTHON_MIRROR", "https://mirror.example/cpython/")
    assert (
        tarball_origin("3.13.5", None, tmp_path)
        == "https://mirror.example/cpython/3.13.5/Python-3.13.5.tar.xz"
    )
    monkeypatch.setenv("REPRO_CPYTHON_MIRROR", "https://m.example/src/Python-{v}.tgz")
    assert tarball_origin("3.13.5", None, tmp_path) == "https://m.example/src/Python-3.13.5.tgz"
    other = tmp_path / "own.tar.xz"
    other.write_bytes(b"x")
    assert tarball_origin("3.13.5", str(other), tmp_path) == str(other)


def test_download_failure_says_how_to_work_offline(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="REPRO_CPYTHON_MIRROR"):
        fetch_tarball("http://127.0.0.1:9/Python-3.13.5.tar.xz", tmp_path, lambda _m: None)
    assert not list(tmp_path.glob("*.tar.xz"))
    local = tmp_path / "x.tar.xz"
    assert fetch_tarball(str(local), tmp_path, lambda _m: None) == local
    # Asking the cache whether a commit is built never downloads (a bisect asks of
    # every cached commit when it starts; without network each would wait 60 s).
    from repro.builds.cache import NotInCache, lookup_only

    said: list[str] = []
    with lookup_only(), pytest.raises(NotInCache):
        fetch_tarball("http://127.0.0.1:9/Python-3.13.5.tar.xz", tmp_path, said.append)
    assert said == []


# --- patches ----------------------------------------------------------------------


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "Objects").mkdir(parents=True)
    lines = [f"line {i}" for i in range(1, 40)]
    (tree / "Objects" / "thing.c").write_text("\n".join(lines) + "\n")
    return tree


def _patch(tmp_path: Path, old: str, new: str, name: str = "fix.patch") -> Path:
    p = tmp_path / name
    p.write_text(
        "Some description.\n\n"
        "--- a/Objects/thing.c\n+++ b/Objects/thing.c\n"
        f"@@ -19,3 +19,3 @@\n line 19\n-{old}\n+{new}\n line 21\n"
    )
    return p


def test_patch_applies(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    apply_patch(tree, _patch(tmp_path, "line 20", "line twenty"))
    assert "line twenty" in (tree / "Objects" / "thing.c").read_text()
    assert patch_targets(tmp_path / "fix.patch") == ["Objects/thing.c"]


def test_patch_error_names_file_and_hunk_and_leaves_tree_untouched(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    before = (tree / "Objects" / "thing.c").read_text()
    bad = _patch(tmp_path, "something else entirely", "x", name="revert-bad.patch")
    with pytest.raises(BuildError) as err:
        apply_patch(tree, bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "Objects/thing.c" in msg
    assert "Hunk #1 FAILED" in msg
    assert (tree / "Objects" / "thing.c").read_text() == before
    assert not list(tree.rglob("*.rej")) and not list(tree.rglob("*.orig"))


def test_shipped_revert_patch_targets_bytesobject() -> None:
    p = PATCHES / "revert-gh-128133-fix.patch"
    assert patch_targets(p) == ["Objects/bytesobject.c"]
    text = p.read_text()
    assert "-    _Py_atomic_store_ssize_relaxed(&a->ob_shash, hash);" in text
    assert "-    return _Py_atomic_load_ssize_relaxed(&a->ob_shash);" in text


# --- compilers and configure --------------------------------------------------------


def test_resolve_compiler_gcc_and_clang_fallback() -> None:
    if not shutil_which("gcc"):
        pytest.skip("no gcc")
    gcc = resolve_compiler("gcc")
    assert gcc.family == "gcc" and gcc.version and Path(gcc.path).is_absolute()
    assert gcc.cxx == "g++"
    clangs = [f"clang-{n}" for n in range(30, 13, -1) if shutil_which(f"clang-{n}")]
    if shutil_which("clang") or clangs:
        clang = resolve_compiler("clang")
        assert clang.family == "clang"
        if not shutil_which("clang"):
            assert clang.command == clangs[0]
        assert clang.cxx.startswith("clang++")


def test_missing_compiler_says_what_to_install() -> None:
    with pytest.raises(BuildError, match="apt-get install clang-19"):
        resolve_compiler("clang-99")
    with pytest.raises(BuildError, match="apt-get install gcc"):
        resolve_compiler("gcc-99")


def test_configure_command(tmp_path: Path) -> None:
    spec = PythonSpec(version="3.13.5", debug=True, configure_args=("--with-lto",))
    cmd = configure_command(spec, tmp_path / "prefix", "clang-19")
    assert cmd[0] == "./configure" and f"--prefix={tmp_path / 'prefix'}" in cmd
    for flag in ("--disable-gil", "--with-thread-sanitizer", "--with-pydebug", "CC=clang-19"):
        assert flag in cmd
    assert cmd[-1] == "--with-lto"
    plain = configure_command(
        PythonSpec(version="3.13.5", free_threading=False, tsan=False), tmp_path, "gcc"
    )
    assert "--disable-gil" not in plain and "--with-thread-sanitizer" not in plain
    assert "--with-pydebug" not in plain
    shared = configure_command(
        PythonSpec(version="3.13.5", configure_args=("--enable-shared",)), tmp_path, "gcc"
    )
    assert f"LDFLAGS=-Wl,-rpath,{tmp_path}/lib" in shared


def test_executable_spec_is_inspected_not_built(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path)
    pb = ensure_cpython(PythonSpec(executable=sys.executable), base_dir=tmp_path, cache=cache)
    assert pb.version == ".".join(map(str, sys.version_info[:3]))
    assert pb.tsan is False
    assert pb.gil_disabled is False
    assert cache.list() == []
    assert PythonBuild.from_json(pb.to_json()) == pb
    with pytest.raises(BuildError, match="not found"):
        ensure_cpython(PythonSpec(executable="./nope/python"), base_dir=tmp_path, cache=cache)


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


# --- real builds (slow) -------------------------------------------------------------

RACY_CTYPES = """
import ctypes, threading
buf = ctypes.c_int(0)
barrier = threading.Barrier(4)
def work():
    barrier.wait()
    for i in range(2000):
        buf.value = i
ts = [threading.Thread(target=work) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print("done")
"""

BYTES_HASH = """
import threading
for _ in range(5):
    x = b"hi" * 100000
    barrier = threading.Barrier(8)
    def work():
        barrier.wait()
        x.__hash__()
    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts: t.start()
    for t in ts: t.join()
print("done")
"""


@pytest.mark.slow
def test_tsan_build_is_free_threaded_and_reports_races(
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    pb = cpython_tsan_build
    assert pb.gil_disabled and pb.tsan and pb.version == "3.13.5"
    out = subprocess.run(
        [
            str(pb.python),
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('Py_GIL_DISABLED'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"
    # The race is intermittent (on two busy cores the threads ran one after another
    # once in a whole suite): up to five tries, as a user's stress would.
    for _ in range(5):
        rc, output = run_tsan(pb, RACY_CTYPES)
        if rc == 66:
            break
    assert rc == 66, output[-3000:]  # TSAN's exit status when it reported races
    assert "WARNING: ThreadSanitizer: data race" in output, output[-3000:]
    assert "done" in output


@pytest.mark.slow
def test_tsan_build_second_ask_is_a_fast_hit(
    cpython_tsan_build: PythonBuild,  # noqa: F811
    build_cache: BuildCache,  # noqa: F811
    cpython_tarballs: Path,  # noqa: F811
) -> None:
    spec = PythonSpec(version="3.13.5", source=str(cpython_tarballs))
    t = time.perf_counter()
    again = ensure_cpython(spec, base_dir=Path.cwd(), cache=build_cache)
    took = time.perf_counter() - t
    assert again == cpython_tsan_build
    assert took < 2.0, f"cache hit took {took:.2f} s"


@pytest.mark.slow
def test_reverted_bytes_hash_fix_races_and_pristine_does_not(
    cpython_tsan_build: PythonBuild,  # noqa: F811
    cpython_tsan_racy_build: PythonBuild,  # noqa: F811
) -> None:
    assert cpython_tsan_racy_build.key != cpython_tsan_build.key
    assert cpython_tsan_racy_build.patches
    # About 8 runs in 10 race on a quiet machine; 0 in 3 was seen with both cores busy
    # in a whole suite: up to ten tries, stopping at the first race.
    racy_hits = 0
    for _ in range(10):
        _rc, out = run_tsan(cpython_tsan_racy_build, BYTES_HASH)
        if "SUMMARY: ThreadSanitizer: data race" in out and "in set_ob_shash" in out:
            racy_hits += 1
            break
    assert racy_hits >= 1
    for _ in range(3):
        _rc, out = run_tsan(cpython_tsan_build, BYTES_HASH)
        assert "set_ob_shash" not in out and "get_ob_shash" not in out, out[-3000:]
        assert "done" in out


def test_reconfigure_for_a_new_prefix_keeps_mtimes(tmp_path: Path) -> None:
    from repro.builds.cpython import _keep_mtimes, _snapshot

    src = tmp_path / "src"
    (src / "Modules").mkdir(parents=True)
    old_p, new_p = "/cache/builds/aaaa", "/cache/builds/bbbb"
    (src / "Makefile").write_text(f"prefix= {old_p}\nCC= gcc\n")
    (src / "Modules" / "config.c").write_text("/* modules */\n")
    (src / "pyconfig.h").write_text("#define X 1\n")
    (src / "Modules" / "getpath.o").write_bytes(b"obj")
    for f in ("Makefile", "Modules/config.c", "pyconfig.h"):
        os.utime(src / f, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(src)
    # what configure does: rewrite everything, the prefix changed, one real change
    (src / "Makefile").write_text(f"prefix= {new_p}\nCC= gcc\n")
    (src / "Modules" / "config.c").write_text("/* modules */\n")
    (src / "pyconfig.h").write_text("#define X 2\n")
    kept = _keep_mtimes(src, before, old_p, new_p)
    assert set(kept) == {"Makefile", "Modules/config.c"}
    assert (src / "Makefile").stat().st_mtime_ns == 1_000_000_000
    assert (src / "Makefile").read_text() == f"prefix= {new_p}\nCC= gcc\n"  # content is new
    assert (src / "pyconfig.h").stat().st_mtime_ns != 1_000_000_000
    assert not (src / "Modules" / "getpath.o").exists()  # embeds the prefix: rebuilt
    # a first configure (no previous prefix) keeps nothing
    assert _keep_mtimes(src, _snapshot(src), None, new_p) == []


def test_tarball_of_another_version_is_refused_before_building(tmp_path: Path) -> None:
    wrong = tmp_path / "Python-3.13.4.tar.xz"
    wrong.write_bytes(b"not really")
    spec = PythonSpec(version="3.13.5", source=str(wrong))
    with pytest.raises(BuildError, match=r"is CPython 3\.13\.4, not 3\.13\.5"):
        ensure_cpython(spec, base_dir=tmp_path, cache=BuildCache(tmp_path / "c"))


def test_relocate_rewrites_text_and_binaries(tmp_path: Path) -> None:
    from repro.builds.cpython import relocate

    old, new = "/cache/trees/cpython-x/prefix-xxxxxxxxxxxx", "/cache/builds/abcdef"
    root = tmp_path / "inst"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    script = root / "bin" / "idle3"
    script.write_text(f"#!{old}/bin/python3.13t\nimport idlelib\n")
    script.chmod(0o755)
    (root / "lib" / "_sysconfigdata.py").write_text(
        f"build_time_vars = {{'LIBDIR': '{old}/lib'}}\n"
    )
    binary = b"\x7fELF\0-L" + old.encode() + b"/lib\0tail\0" + old.encode() + b"\0end"
    (root / "bin" / "python3.13t").write_bytes(binary)
    (root / "lib" / "other.py").write_text("nothing to see\n")
    (root / "bin" / "python3").symlink_to("python3.13t")
    texts, binaries = relocate(root, old, new)
    assert sorted(texts) == ["bin/idle3", "lib/_sysconfigdata.py"]
    assert binaries == ["bin/python3.13t"]
    assert script.read_text().startswith(f"#!{new}/bin/python3.13t\n")
    assert os.access(script, os.X_OK)
    assert f"'{new}/lib'" in (root / "lib" / "_sysconfigdata.py").read_text()
    fixed = (root / "bin" / "python3.13t").read_bytes()
    assert len(fixed) == len(binary)
    strings = fixed.split(b"\0")
    assert b"-L" + new.encode() + b"/lib" in strings and new.encode() in strings
    assert b"tail" in strings and fixed.endswith(b"\0end") and old.encode() not in fixed
    with pytest.raises(BuildError, match="longer"):
        relocate(root, new, new + "/much/longer/than/before")


EMBED_C = r"""
#include <Python.h>
int main(void) {
    Py_Initialize();
    int rc = PyRun_SimpleString(
        "import sys, json; print('prefix', sys.prefix); print(json.dumps([1, 2]))");
    Py_Finalize();
    return rc;
}
"""


def embed_and_run(build: PythonBuild, workdir: Path) -> str:
    """Link a program against the build's libpython (as PyO3 tests do) and run it."""
    src = workdir / "embed.c"
    src.write_text(EMBED_C)
    config = build.python.parent / "python3-config"
    flags = subprocess.run(
        [str(config), "--cflags", "--ldflags", "--embed"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    exe = workdir / "embed"
    subprocess.run(
        ["gcc", "-fsanitize=thread", str(src), "-o", str(exe), *flags, "-fsanitize=thread"],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [*setarch_prefix(), str(exe)], capture_output=True, text=True, env=env, timeout=120
    )
    return out.stdout + out.stderr


@pytest.mark.slow
def test_embedding_program_finds_the_stdlib(
    cpython_tsan_build: PythonBuild,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = embed_and_run(cpython_tsan_build, tmp_path)
    assert f"prefix {cpython_tsan_build.prefix}" in out, out[-2000:]
    assert "[1, 2]" in out
