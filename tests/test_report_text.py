"""The report's pure pieces: trimming TSAN text, suppression lines, shell quoting, charts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from repro.report import format_for
from repro.report.markdown import cell, code
from repro.report.shell import loop_runs, shq
from repro.report.svg import bisect_chart, stress_chart
from repro.report.tsantext import (
    race_site,
    shorten_paths,
    suppression_lines,
    suppression_pattern,
    trim_report,
)
from repro.tsan.parse import parse_log

DATA = Path(__file__).resolve().parent / "data" / "tsan"

CACHE = "/home/ada/.cache/repro/builds/" + "4f" * 32 + "/src"
REPORT = f"""\
==================
WARNING: ThreadSanitizer: data race (pid=14006)
  Read of size 8 at 0x55590c26e0c8 by thread T2 (mutexes: write M0):
    #0 tq_poll {CACHE}/queue.c:28 (stress_test+0x160a)
    #1 consumer {CACHE}/stress_test.c:25 (stress_test+0x1297)

  Previous write of size 8 at 0x55590c26e0c8 by thread T1:
    #0 tq_publish {CACHE}/queue.c:21 (stress_test+0x15b6)
    #1 producer {CACHE}/stress_test.c:12 (stress_test+0x1329)

  Location is global 'tq_result' of size 8 at 0x55590c26e0c8 (stress_test+0x40c8)

  Thread T2 (tid=14013, running) created by main thread at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1001 \
(libtsan.so.2+0x5e686)
    #1 main {CACHE}/stress_test.c:43 (stress_test+0x1403)

SUMMARY: ThreadSanitizer: data race {CACHE}/queue.c:28 in tq_poll
==================
"""


def test_trim_hides_runtime_frames_and_cache_paths() -> None:
    (report,) = parse_log(REPORT).reports
    text = trim_report(report.raw)
    assert "pthread_create" not in text and "libtsan" not in text
    assert "#0 tq_poll queue.c:28 (stress_test+0x160a)" in text
    assert "#1 main stress_test.c:43" in text
    assert "SUMMARY: ThreadSanitizer: data race queue.c:28 in tq_poll" in text
    assert "/.cache/" not in text


def test_shorten_paths() -> None:
    assert shorten_paths("at /w/tree/src/x.c:3", ["/w/tree"]) == "at src/x.c:3"
    cargo = "/home/ada/.cargo/registry/src/index.crates.io-6f17d22bba15001f/pyo3-0.23.1/src/a.rs"
    assert shorten_paths(cargo + ":9") == "pyo3-0.23.1/src/a.rs:9"
    rustc = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/thread/mod.rs"
    assert shorten_paths(rustc) == "/rustc/59807616e/library/std/src/thread/mod.rs"
    long = "/opt/some/very/long/directory/structure/that/goes/on/and/on/include/header.h:4"
    assert shorten_paths(long) == ".../on/include/header.h:4"
    assert shorten_paths("/usr/include/stdio.h:1") == "/usr/include/stdio.h:1"


def test_race_is_named_after_the_writer() -> None:
    (report,) = parse_log(REPORT).reports
    assert race_site(report) == ("tq_publish", "queue.c")


# Sweep 15's multidict race, its frames as TSAN printed them (gcc, CPython 3.13.5t): the
# list's writer inside CPython, through the atomic wrapper; the reader in the extension.
MULTIDICT = """\
==================
WARNING: ThreadSanitizer: data race (pid=1)
  Atomic write of size 8 at 0x7b4c00010a10 by thread T5:
    #0 _Py_atomic_store_ptr_release Include/cpython/pyatomic_gcc.h:501 (python3.13t+0x1f1e2a)
    #1 list_ass_item_lock_held Objects/listobject.c:1102 (python3.13t+0x1f1e2a)
    #2 list_ass_subscript Objects/listobject.c:3591 (python3.13t+0x1f5c0b)

  Previous read of size 8 at 0x7b4c00010a10 by thread T3:
    #0 pair_list_update_from_seq multidict/_multilib/pair_list.h:1110 \
(_multidict.cpython-313t-x86_64-linux-gnu.so+0x1c2b7)
    #1 _multidict_extend multidict/_multidict.c:298 \
(_multidict.cpython-313t-x86_64-linux-gnu.so+0x1d0b1)

SUMMARY: ThreadSanitizer: data race Include/cpython/pyatomic_gcc.h:501 in \
_Py_atomic_store_ptr_release
==================
"""


def test_an_extension_race_is_named_after_the_extension_not_cpython_s_wrapper() -> None:
    """Sweep 15: the title named `_Py_atomic_store_ptr_release (pyatomic_gcc.h)` and the
    suppression `race_top:_Py_atomic_store_ptr_release`, which hid every release store
    in CPython; --suggest-target named the same wrapper."""
    from repro.report.tsantext import suppression_sites
    from repro.tsan.nearmiss import suggest_target
    from repro.tsan.signature import DEFAULT_DROP

    (report,) = parse_log(MULTIDICT).reports
    assert race_site(report) == ("pair_list_update_from_seq", "pair_list.h")
    sites = suppression_sites(report, DEFAULT_DROP)
    assert sites is not None and sites.kind == "race_top"
    assert sites.functions == ["pair_list_update_from_seq"]
    suggested = suggest_target(report)
    assert "_Py_atomic_store_ptr_release" not in suggested.functions, suggested
    assert "list_ass_item_lock_held" in suggested.functions and "listobject.c" in suggested.files
    # A race wholly inside CPython still names CPython's code, but not the wrapper.
    inside = MULTIDICT.replace("(_multidict.cpython-313t-x86_64-linux-gnu.so", "(python3.13t")
    (report,) = parse_log(inside).reports
    assert race_site(report) == ("list_ass_item_lock_held", "listobject.c")
    sites = suppression_sites(report, DEFAULT_DROP)
    assert sites is not None and sites.functions == ["pair_list_update_from_seq"]


# Sweep 16's cramjam race (clang, PyO3 0.23): both accesses start in Rust's std, inlined
# into the package's module; the package's own frames are below them.
CURSOR = """\
==================
WARNING: ThreadSanitizer: data race (pid=1)
  Write of size 8 at 0x7b0800001a20 by thread T2:
    #0 <std::io::cursor::Cursor<alloc::vec::Vec<u8>> as std::io::Seek>::seek \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/std/src/io/cursor.rs:280:17 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x24618)
    #1 <cramjam::io::RustyBuffer as std::io::Seek>::seek src/io.rs:420:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x2471c)
    #2 cramjam::io::RustyBuffer::__pymethod_seek__ src/io.rs:300:1 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x24800)

  Previous read of size 8 at 0x7b0800001a20 by main thread:
    #0 <std::io::cursor::Cursor<alloc::vec::Vec<u8>>>::position \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/std/src/io/cursor.rs:158:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x25000)
    #1 <cramjam::io::RustyBuffer>::tell src/io.rs:310:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x25100)

SUMMARY: ThreadSanitizer: data race \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/std/src/io/cursor.rs:280:17 in \
<std::io::cursor::Cursor<alloc::vec::Vec<u8>> as std::io::Seek>::seek
==================
"""


def test_a_race_that_starts_in_rusts_std_is_suppressed_by_the_packages_frame() -> None:
    """Sweep 16: `race_top:<std::io::cursor::Cursor<...> as std::io::Seek>::seek` hides
    every race on a Cursor<Vec<u8>> in any crate of the process. `race:` with the
    package's first frame hid it as well (0 of 5 runs with a report)."""
    from repro.report.tsantext import suppression_sites
    from repro.tsan.signature import DEFAULT_DROP

    (report,) = parse_log(CURSOR).reports
    sites = suppression_sites(report, DEFAULT_DROP)
    assert sites is not None and sites.kind == "race", sites
    assert sites.functions == ["<cramjam::io::RustyBuffer as std::io::Seek>::seek"]
    lines = suppression_lines([[f] for f in sites.functions], ["why"], sites.kind)
    assert lines == ["# why", "race:<cramjam::io::RustyBuffer as std::io::Seek>::seek"]


def test_suppression_lines() -> None:
    lines = suppression_lines([["tq_poll", "consumer"], ["tq_publish", "producer"]], ["why"])
    assert lines == ["# why", "race_top:tq_poll", "race_top:tq_publish"]
    rust = "pyo3::pycell::impl_::BorrowFlag::increment::h0123456789abcdef"
    assert suppression_pattern(rust) == "pyo3::pycell::impl_::BorrowFlag::increment"
    assert suppression_pattern("impl_::tests::test_thread_safety_2::{{closure}}") == (
        "impl_::tests::test_thread_safety_2::"
    )
    assert suppression_pattern("set_ob_shash.constprop.0") == "set_ob_shash"


@pytest.mark.parametrize(
    ("printed", "elsewhere"),
    [
        # Cython: numbers that move when a function is added above; also from the
        # normalised name a report made without a kept log falls back to
        (
            "__pyx_pf_10frozenlist_11_frozenlist_10FrozenList_2freeze",
            "__pyx_pf_10frozenlist_11_frozenlist_10FrozenList_4freeze",
        ),
        (
            "__pyx_pf_frozenlist__frozenlist_FrozenList_freeze",
            "__pyx_pf_10frozenlist_11_frozenlist_10FrozenList_2freeze",
        ),
        ("main::$_1::operator()() const", "main::$_3::operator()() const"),
        (
            "run::{lambda(int)#2}::operator()(int) const",
            "run::{lambda(int)#1}::operator()(int) const",
        ),
        ("f(std::vector<std::vector<int> >&)", "f(std::vector<std::vector<int>>&)"),
        ("pyo3::impl_::x::{{closure}}::h0123456789abcdef", "pyo3::impl_::x::{closure#0}"),
        ("core[a1b2c3]::ptr::drop_in_place", "core[ffff0000]::ptr::drop_in_place"),
        ("foo [clone .isra.0]", "foo.part.0"),
    ],
)
def test_a_suppression_pattern_matches_the_name_tsan_prints_on_any_build(
    printed: str, elsewhere: str
) -> None:
    """TSAN matches what it printed, as a substring with `*` and `$` (an end anchor):
    the pattern must match this build's name and the same function's in another."""
    from repro.tsan.suppressions import matches

    pattern = suppression_pattern(printed)
    assert "$" not in pattern
    assert matches(pattern, printed) and matches(pattern, elsewhere), pattern
    assert not matches(pattern, "unrelated_function"), pattern


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", 'quo"te', "dollar $HOME `tick` \\ back", "", "-flag=x"],
)
def test_shq_round_trips_through_sh(value: str) -> None:
    out = subprocess.run(
        ["sh", "-c", f"printf %s {shq(value)}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == value


def test_shq_writes_home_as_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert shq(f"{tmp_path}/src/x y") == '"$HOME/src/x y"'
    out = subprocess.run(
        ["sh", "-c", f"printf %s {shq(str(tmp_path / 'a'))}"],
        capture_output=True,
        text=True,
        check=True,
        env={"HOME": str(tmp_path)},
    ).stdout
    assert out == str(tmp_path / "a")


def test_loop_runs() -> None:
    assert loop_runs(0, 40, 0.0) == 100
    assert loop_runs(30, 60, 0.36) == 74  # (1 - 0.36 / 4)^74 < 0.001 <= (1 - 0.09)^73
    assert loop_runs(60, 60, 0.94) == 26  # at 0.235: 0.765^26 < 0.001
    assert loop_runs(1, 10000, 0.00001) == 100_000


def test_markdown_helpers() -> None:
    assert cell("a | b\nc") == "a \\| b c"
    assert code("x ``` y").startswith("````\n")


def test_format_for() -> None:
    assert format_for(Path("r.html")) == "html"
    assert format_for(Path("r.json")) == "json"
    assert format_for(Path("r.txt")) == "markdown"
    assert format_for(None, "md") == "markdown"


def test_charts_are_stable_svg() -> None:
    commits = [
        {"label": f"c{i}", "runs": r, "hits": h, "failed_runs": 0, "verdict": v, "tested": bool(r)}
        for i, (r, h, v) in enumerate(
            [(7, 3, "racy"), (0, 0, ""), (5, 0, "skipped"), (30, 0, "clean (99%)"), (22, 0, "")]
        )
    ]
    commits[3]["culprit"] = True
    b = {"commits": commits, "culprit": {"label": "c3"}, "direction": "fix"}
    svg = bisect_chart(b)
    assert svg == bisect_chart(b)
    assert svg.startswith("<svg") and "fixed by c3" in svg and "3/7" in svg
    assert not re.search(r"\d\.\d{2,}", svg)  # coordinates are rounded
    buckets = [
        {"first": 1, "last": 2, "outcomes": {"target": 1, "clean": 1}, "rate_so_far": 0.5},
        {"first": 3, "last": 4, "outcomes": {"clean": 2}, "rate_so_far": 0.25},
    ]
    s = stress_chart(buckets)
    assert "<path" in s and "rate so far" in s
    assert "rate so far" not in stress_chart(buckets, rate_line=False)


CPYTHON_RECIPE = """\
name: bytes-hash
python:
  version: 3.13.5
  source: /srv/mirror
  compiler: clang-19
  configure_args: [--enable-shared]
  patches: [revert.patch]
extension:
  repo: https://github.com/PyO3/pyo3
  ref: v0.23.0
  sanitize: rust
  env: {UNSAFE_PYO3_SKIP_VERSION_CHECK: "1"}
  env_ranges:
    - before: 76f4503ae
      env: {UNSAFE_PYO3_BUILD_FREE_THREADED: "1"}
  build: [cargo build --lib]
reproducer:
  setup: ["cc -o tool {recipe_dir}/c/tool.c $({python}-config --cflags)"]
  command: "{python} {recipe_dir}/hash_race.py --threads {threads} --tool {work}/tool"
  cwd: "{worktree}"
  env: {PYTHON_GIL: "0"}
tsan:
  options: {halt_on_error: true, second_deadlock_stack: 1}
target:
  functions: [set_ob_shash]
"""


def test_plain_script_for_cpython_and_rust(tmp_path: Path) -> None:
    """The CPython and Rust parts (the demo exercises only C): text and shell syntax."""
    from repro.recipe import parse_recipe
    from repro.report.shell import PlainInputs, plain_script

    (tmp_path / "hash_race.py").write_text("import sys\nprint('race')\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tool.c").write_text("int main(void) { return 0; }\n")
    recipe = parse_recipe(CPYTHON_RECIPE, tmp_path / "r.yaml")
    patch = {"name": "revert.patch", "sha256": "ab" * 32, "text": "--- a/x\n+++ b/x\n"}
    script = plain_script(
        PlainInputs(
            recipe=recipe,
            recipe_dir=tmp_path,
            title="data race in set_ob_shash (bytesobject.c)",
            ext_sha="c" * 40,
            tarball_sha256="ef" * 32,
            patches=[patch],
            tsan_options=dict(recipe.tsan.options),
            user_tsan_options="history_size=7 log_path=/tmp/x",
            rust_host="x86_64-unknown-linux-gnu",
            runs=50,
        )
    )
    lines = script.splitlines()
    assert "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz" in script
    assert f'echo "{"ef" * 32}  Python-3.13.5.tar.xz" | sha256sum -c -' in lines
    assert 'patch -p1 < "$WORK/revert.patch"' in lines
    configure = next(x for x in lines if x.startswith("./configure"))
    assert '"--prefix=$WORK/cpython"' in configure and "CC=clang-19" in configure
    assert "--disable-gil --with-thread-sanitizer" in configure
    assert '"LDFLAGS=-Wl,-rpath,$WORK/cpython/lib"' in configure
    assert "git clone -q https://github.com/PyO3/pyo3 pyo3" in script
    assert 'export RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer"' in lines
    assert "export CARGO_BUILD_TARGET=x86_64-unknown-linux-gnu" in lines
    assert 'export PYO3_PYTHON="$PYTHON"' in lines
    assert "export UNSAFE_PYO3_SKIP_VERSION_CHECK=1" in lines
    assert "# for commits before 76f4503ae also: export UNSAFE_PYO3_BUILD_FREE_THREADED=1" in lines
    assert 'export TSAN_OPTIONS="history_size=7 halt_on_error=1 second_deadlock_stack=1"' in lines
    assert "export PYTHON_GIL=0" in lines
    # The reproducer script beside the recipe travels inside the commands.
    assert "cat > \"$RECIPE_DIR/hash_race.py\" <<'REPRO_EOF'" in lines
    assert "print('race')" in lines
    assert "int main(void) { return 0; }" in lines
    assert 'mkdir -p "$RECIPE_DIR" "$RECIPE_DIR/c"' in lines
    setup = lines.index('mkdir -p "$WORK/setup" && cd "$WORK/setup"')
    assert lines[setup + 1] == 'cc -o tool "$RECIPE_DIR"/c/tool.c $("$PYTHON"-config --cflags)'
    assert (
        '  timeout 60 sh -c \'"$PYTHON" "$RECIPE_DIR"/hash_race.py --threads 8 --tool'
        ' "$WORK/setup"/tool\' > "$WORK/run.log" 2>&1 || true'
    ) in lines
    assert 'cd "$WORK/pyo3"' in lines
    assert "for i in $(seq 1 50); do" in lines
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_long_stacks_are_cut() -> None:
    frames = "\n".join(f"    #{i} f{i} Objects/x.c:{i} (python3.13+0x{i:x})" for i in range(30))
    head = "WARNING: ThreadSanitizer: data race (pid=1)\n  Write of size 8 at 0x1 by thread T1:"
    raw = f"{head}\n{frames}\n"
    text = trim_report(raw, max_frames=5)
    assert "#4 f4 " in text and "#5 f5 " not in text
    assert "    ... (25 more frames)" in text


def test_markdown_fits_a_github_issue() -> None:
    from repro.report.markdown import BUDGET, GITHUB_LIMIT, render_markdown

    other = {
        "signature": "abc",
        "kind": "data race",
        "top_frames": [["f"], ["g"]],
        "reports": 1,
        "runs": 1,
        "report": "x" * 4000,
    }
    doc = {
        "title": "t",
        "status": {"state": "finished", "partial": False, "message": None},
        "summary": {"runs": 1, "hits": 1, "rate": 1.0, "rate_ci95": [0.2, 1.0]},
        "bisect": None,
        "target": None,
        "other_races": [dict(other, signature=f"s{i}") for i in range(25)],
        "other_races_total": 25,
        "environment": {"recorded": False, "rows": [], "variables": {}},
        "reproduce": {"repro": [], "shell": None},
        "suppressions": None,
        "generator": "repro",
        "kind": "stress",
        "schema_version": 1,
    }
    text = render_markdown(doc)
    assert len(text) <= BUDGET < GITHUB_LIMIT
    assert "x" * 100 not in text
    for i in range(25):
        assert len([line for line in text.splitlines() if f"`s{i}`" in line]) == 1


def test_build_ids_are_dropped() -> None:
    raw = (DATA / "rust-racy.log").read_text()
    assert "(BuildId: " in raw
    for report in parse_log(raw).reports:
        text = trim_report(report.raw)
        assert "BuildId" not in text
        assert "(racy+0x" in text  # the module+offset part stays


def test_races_inside_rust_std_are_noise() -> None:
    from repro.report.tsantext import GLIBC, LIBPYTHON, RUST_STD, frame_module, noise_module
    from repro.tsan.model import Frame

    found = {}
    for name in ("rust-racy.log", "pyo3-borrowflag-racy.log", "gcc-racy_counter.log"):
        for report in parse_log((DATA / name).read_text()).reports:
            found[report.summary.rsplit(" in ", 1)[-1]] = noise_module(trim_report(report.raw))
    assert found["alloc::alloc::dealloc"] == RUST_STD
    assert found["<std::thread::lifecycle::Packet<()> as core::ops::drop::Drop>::drop"] == RUST_STD
    # The project's own races: the PyO3 test's closures, a std generic inlined into
    # the project's function (read_volatile called by racy::load_value), C code.
    assert (
        found["pyo3::pycell::impl_::tests::test_thread_safety_2::{closure#0}::{closure#1}"] is None
    )
    assert found["core::ptr::read_volatile::<u64>"] is None
    assert found["increment_counter"] is None
    libc = Frame(0, "__GI___libc_free", "./malloc/malloc.c", 3, None, "libc.so.6", "0x1")
    assert frame_module(libc) == GLIBC
    py = Frame(0, "PyDict_SetItem", "Objects/dictobject.c", 3, None, "libpython3.13t.so.1.0", "0x1")
    assert frame_module(py) is None and frame_module(py, python_tsan=False) == LIBPYTHON


def test_truncate_cuts_between_words() -> None:
    from repro.text import truncate

    subject = "Fix borrow checking on free-threaded build (#4588)"
    assert truncate(subject, 60) == subject
    assert truncate(subject, 47) == "Fix borrow checking on free-threaded build…"
    assert "(#4" not in truncate(subject, 47)
    assert truncate("a  b\n c", 10) == "a b c"
    assert truncate("x" * 30, 10) == "x" * 9 + "…"
    for width in range(1, len(subject) + 2):
        assert len(truncate(subject, width)) <= width


def _plain_python_313() -> Path | None:
    """An ordinary CPython >= 3.13 with venv, if the machine has one (pyenv's, say)."""
    names = [shutil.which(f"python3.{minor}") for minor in range(13, 16)]
    names += [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.1[3-9]*/bin/python3"))]
    for name in names:
        if not name:
            continue
        probe = subprocess.run(
            [name, "-c", "import sys, venv; print(sys.version_info >= (3, 13))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return Path(name)
    return None


def test_plain_script_installs_a_python_package_with_tsan(tmp_path: Path) -> None:
    """The package part of the script, run for real: an environment of the recipe's Python,
    the pytest tools, and the package built by pip with the TSAN flags repro builds with.
    A plain CPython 3.13 stands in for the free-threaded TSAN one (a venv of that takes
    minutes), so the race itself cannot show here; the installed module must carry TSAN's
    instrumentation all the same."""
    from repro.recipe import parse_recipe
    from repro.report.shell import PlainInputs, plain_script

    repo = tmp_path / "tally"
    subprocess.run(
        [sys.executable, str(ROOT / "demo" / "make_pkg_repo.py"), str(repo)],
        check=True,
        capture_output=True,
    )
    host = _plain_python_313()
    if host is None:
        pytest.skip("needs a CPython 3.13 or later (the package uses PyMutex)")
    text = (ROOT / "recipes" / "demo-pkg.yaml").read_text()
    text = text.replace("../demo-work/tally", str(repo))
    text = re.sub(r"python:\n(  .*\n)+", f"python:\n  executable: {host}\n", text, count=1)
    recipe = parse_recipe(text, tmp_path / "r.yaml")
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "v0.2"], capture_output=True, text=True, check=True
    ).stdout.strip()
    script = plain_script(
        PlainInputs(
            recipe=recipe,
            recipe_dir=tmp_path,
            title="t",
            ext_repo=str(repo),
            ext_sha=sha,
            ext_backend="setuptools",
            runs=1,
        )
    )
    lines = script.splitlines()
    # Installing runs on the TSAN interpreter: a race it reports inside CPython at the
    # exit of pip's build-isolation child made that exit 66, a failed install.
    q = "TSAN_OPTIONS=report_bugs=0"
    assert f'[ -x "$WORK/venv/bin/python" ] || {q} "$PYTHON" -m venv "$WORK/venv"' in lines
    assert f'{q} "$WORK/venv/bin/python" -m pip install -q pytest pytest-run-parallel' in lines
    assert any(
        x.startswith(f'{q} "$WORK/venv/bin/python" -m pip install -q --force') for x in lines
    )
    assert 'PYTHON="$WORK/venv/bin/python"' in lines
    play = tmp_path / "play"
    play.mkdir()
    done = subprocess.run(
        ["bash", "-c", script], cwd=play, capture_output=True, text=True, timeout=600
    )
    assert "race not reproduced in 1 runs" in done.stdout, done.stdout + done.stderr
    venv = play / "repro-work" / "venv"
    (module,) = venv.glob("lib/python*/site-packages/tally/_tally*.so")
    symbols = subprocess.run(["nm", "-D", str(module)], capture_output=True, text=True).stdout
    assert "__tsan_" in symbols
    assert (venv / "bin" / "pytest").exists()


@pytest.mark.parametrize(
    "functions",
    [
        ("deposit", "main"),
        ("deposit", "peek_balance"),
        ("depositor",),
        ("pthread_mutex_init",),
        ("peek_balance", "auditor", "deposit"),
    ],
)
def test_the_plain_loop_matches_the_target_where_repro_does(
    tmp_path: Path, functions: tuple[str, ...]
) -> None:
    """In the access stacks only: `main` is in the mutex's and the threads' creation
    stacks, and the plain loop once called a race the target that repro had counted as
    another (a new user's report, pasted, said "race reproduced in run 1")."""
    from tsan_helpers import PROGRAMS, compile_c, run_tsan

    from repro.recipe import parse_recipe
    from repro.report.shell import target_function
    from repro.tsan.signature import TargetRule, matches

    binary = compile_c(PROGRAMS / "half_locked.c", tmp_path / "half_locked")
    other = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "racy_counter")
    log = tmp_path / "run.log"
    # Another race's report first: the target is judged report by report.
    log.write_text(run_tsan(other).stderr + run_tsan(binary).stderr)
    reports = parse_log(log.read_text()).reports
    assert len(reports) >= 2
    recipe = parse_recipe(
        f"name: t\nreproducer: {{command: x}}\ntarget: {{functions: [{', '.join(functions)}]}}\n",
        tmp_path / "r.yaml",
    )
    script = "\n".join(
        [*target_function(recipe), f"if is_target {shq(str(log))}; then echo yes; fi"]
    )
    said = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    repro_says = any(matches(r, TargetRule(functions=functions)) for r in reports)
    assert (said.stdout.strip() == "yes") == repro_says, (functions, log.read_text())


def _plain_loop_finds(pattern: str, log: Path) -> bool:
    """Whether the report's plain loop (``is_target``) finds a target of ``pattern`` in
    ``log``: run in bash, as a reader of the report runs it."""
    from repro.recipe import parse_recipe
    from repro.report.shell import target_function

    recipe = parse_recipe(
        "name: t\nreproducer: {command: x}\n"
        f"target: {{functions: [{json.dumps(pattern)}], accesses: any}}\n",
        Path("r.yaml"),
    )
    script = "\n".join(
        [*target_function(recipe), f"if is_target {shq(str(log))}; then echo yes; fi"]
    )
    said = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return said.stdout.strip() == "yes"


@pytest.mark.parametrize(
    "pattern",
    ["<core::sync::atomic::AtomicUsize>::fetch_sub", "core::sync::atomic::AtomicUsize::fetch_sub",
     "AtomicUsize::fetch_sub", "core::sync::atomic::AtomicUsize::fetch_add"],
)  # fmt: skip
def test_a_rust_method_is_named_by_its_path_or_as_tsan_prints_it(pattern: str) -> None:
    """TSAN prints `<crate::Type>::method`; a user writes `crate::Type::method`, and a new
    user's target of that form matched nothing, in repro and in the plain loop."""
    from repro.tsan.signature import TargetRule, matches

    log = ROOT / "tests" / "data" / "tsan" / "pyo3-borrowflag-fixed.log"
    rule = TargetRule(functions=(pattern,), accesses="any", depth=5)
    said_by_repro = any(matches(r, rule) for r in parse_log(log.read_text()).reports)
    assert said_by_repro == ("fetch_sub" in pattern)
    assert _plain_loop_finds(pattern, log) == said_by_repro


@pytest.mark.parametrize(
    "name",
    ["gcc-half_locked.log", "clang-half_locked.log", "cpython-ext-lazy-init.log",
     "pyo3-borrowflag-racy.log", "cython-counter-before.log"],
)  # fmt: skip
def test_the_plain_loop_reads_only_the_frames_repro_matches(tmp_path: Path, name: str) -> None:
    """Only the top `depth` frames of each stack, after the runtime and plumbing frames
    repro drops: the loop said "reproduced" for a match at frame #5 that repro, at depth
    3, did not count (sweep 15). Every function of the log's stacks, at depths 1 to 4,
    against repro's own matcher."""
    from repro.recipe import parse_recipe
    from repro.report.shell import target_function
    from repro.tsan.signature import TargetRule, matches

    log = ROOT / "tests" / "data" / "tsan" / name
    reports = parse_log(log.read_text()).reports
    names: list[str] = []
    for report in reports:
        for access in (report.current, report.previous):
            for frame in access.stack[:7] if access is not None else ():
                plain = frame.function.split("(")[0]
                if plain and plain not in names and "<" not in plain and "'" not in plain:
                    names.append(plain)
    assert len(names) >= 4, names
    lines, cases = [], []
    for depth in (1, 2, 4):
        for k, fn in enumerate(names[:12]):
            recipe = parse_recipe(
                "name: t\nreproducer: {command: x}\n"
                f"target: {{functions: [{json.dumps(fn)}], accesses: any, depth: {depth}}}\n",
                Path("r.yaml"),
            )
            rule = TargetRule(functions=(fn,), accesses="any", depth=depth)
            cases.append((f"{depth}:{k}", fn, any(matches(r, rule) for r in reports)))
            script = [*target_function(recipe)]
            script[script.index("is_target() {")] = f"is_target_{depth}_{k}() {{"
            lines += [*script, f"is_target_{depth}_{k} {shq(str(log))} && echo {depth}:{k}"]
    script_file = tmp_path / "loop.sh"
    script_file.write_text("\n".join(lines) + "\n")
    said = subprocess.run(["bash", str(script_file)], capture_output=True, text=True)
    found = set(said.stdout.split())
    wrong = [(key, fn, want) for key, fn, want in cases if (key in found) != want]
    assert not wrong, (wrong, said.stderr)
    assert any(want for _, _, want in cases) and not all(want for _, _, want in cases)


def test_a_floor_on_runs_is_never_rounded_up() -> None:
    """ "no bisect can average fewer than 4" for a bound of 3.6 was false, and "fewer
    than 0" said nothing."""
    from repro.report.fmt import floor_runs

    assert floor_runs(3.6) == "3.6" and floor_runs(0.04) == "0.0" and floor_runs(9.99) == "9.9"
    assert floor_runs(11.9) == "11" and floor_runs(829.8) == "829" and floor_runs(None) == "0.0"


def test_plain_script_for_a_maturin_package_asks_for_cargo_and_debug_info(
    tmp_path: Path,
) -> None:
    """The script builds a maturin package as repro does: cargo is needed, and the
    release profile keeps its debug info (or the race's frames name no file)."""
    from repro.recipe import parse_recipe
    from repro.report.shell import PlainInputs, plain_script

    text = (ROOT / "recipes" / "demo-pkg.yaml").read_text()
    text = re.sub(
        r"python:\n(  .*\n)+", f"python:\n  executable: {sys.executable}\n", text, count=1
    )
    recipe = parse_recipe(text, tmp_path / "r.yaml")
    inputs = dict(recipe=recipe, recipe_dir=tmp_path, title="t", ext_repo="/x", ext_sha="a" * 40)
    script = plain_script(PlainInputs(**inputs, ext_backend="maturin", runs=1))  # type: ignore[arg-type]
    assert ", cargo." in script.splitlines()[1], script
    assert "export CARGO_PROFILE_RELEASE_DEBUG=true" in script.splitlines(), script
    other = plain_script(PlainInputs(**inputs, ext_backend="setuptools", runs=1))  # type: ignore[arg-type]
    assert ", cargo" not in other.splitlines()[1]
    assert "CARGO_PROFILE" not in other


def _fake_compilers(bindir: Path, names: list[str]) -> None:
    bindir.mkdir()
    for name in names:
        (bindir / name).write_text("#!/bin/sh\nexit 0\n")
        (bindir / name).chmod(0o755)


@pytest.mark.parametrize(
    ("installed", "cc", "cxx"),
    [
        (["clang-17", "clang++-17", "clang-19", "clang++-19"], "clang-19", "clang++-19"),
        (["clang", "clang++", "clang-19"], "clang", "clang++"),
        ([], None, None),
    ],
)
def test_the_plain_script_finds_clang_as_repro_does(
    tmp_path: Path, installed: list[str], cc: str | None, cxx: str | None
) -> None:
    """A recipe says `compiler: clang`; a Debian machine may have only clang-19. repro falls
    back to the newest clang-N, and the script must too, for CPython's configure and for
    the package's C and C++ compilers (a C++ file built by g++ brings gcc's TSAN runtime
    into a process whose python carries clang's)."""
    from repro.recipe import parse_recipe
    from repro.report.shell import PlainInputs, plain_script

    text = (ROOT / "recipes" / "demo-pkg.yaml").read_text()
    text = re.sub(r"python:\n", "python:\n  compiler: clang\n", text, count=1)
    recipe = parse_recipe(text, tmp_path / "r.yaml")
    script = plain_script(
        PlainInputs(
            recipe=recipe, recipe_dir=tmp_path, title="t", ext_repo="/x", ext_sha="a" * 40, runs=1
        )
    )
    lines = script.splitlines()
    configure = next(x for x in lines if x.startswith("./configure"))
    assert '"CC=$CLANG"' in configure.split(), configure
    assert 'export CC="$CLANG"' in lines and 'export CXX="$CLANGXX"' in lines, script
    start = next(i for i, x in enumerate(lines) if x.startswith("CLANG="))
    end = next(i for i, x in enumerate(lines) if x.startswith("CLANGXX="))
    assert start < end < lines.index(configure)
    bindir = tmp_path / "bin"
    _fake_compilers(bindir, installed)
    tools = tmp_path / "tools"  # what the lines use, and no compiler of this machine's
    tools.mkdir()
    for tool in ("grep", "sort", "head"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    probe = "\n".join([*lines[start : end + 1], 'echo "$CLANG $CLANGXX"'])
    done = subprocess.run(
        [shutil.which("bash") or "bash", "-ec", probe],
        env={"PATH": f"{bindir}:{tools}", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    if cc is None:
        assert done.returncode == 1 and "needs clang" in done.stderr, done
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(bindir / cc), str(bindir / cxx)]


@pytest.mark.parametrize(
    ("pattern", "hit"),
    [
        ("Accumulator<long>::add", True),
        ("Accumulator<long>::add(long)", True),
        ("Accumulator::add", True),  # as a C++ user names the method
        ("Accumulator::get", True),
        ("Accumulator<double>::add", False),
        ("Accumulator::reset", False),
        ("operator<<", False),
    ],
)
def test_a_cpp_method_of_a_template_is_named_with_or_without_its_arguments(
    pattern: str, hit: bool
) -> None:
    """TSAN prints `Accumulator<long>::add(long)` (a real pybind11 race, clang TSAN); a
    user writes `Accumulator::add`, which matched nothing in repro and the plain loop."""
    from repro.tsan.signature import TargetRule, matches

    log = ROOT / "tests" / "data" / "tsan" / "clang-pybind11-template.log"
    (report,) = parse_log(log.read_text()).reports
    rule = TargetRule(functions=(pattern,), accesses="any", depth=5)
    assert matches(report, rule) == hit
    assert _plain_loop_finds(pattern, log) == hit


_CNT = "pybind11_init__cnt(pybind11::module_&)"
_PYO3_TEST = "pyo3::pycell::impl_::tests::test_thread_safety"


@pytest.mark.parametrize(
    ("log_name", "pattern", "hit"),
    [
        # clang names the lambda `$_0`; a suggested target holds `$_` (no number)
        ("clang-pybind11-template.log", f"{_CNT}::$_::operator()", True),
        ("clang-pybind11-template.log", f"{_CNT}::$_0::operator()", True),
        ("clang-pybind11-template.log", f"{_CNT}::$_1::operator()", True),
        ("clang-pybind11-template.log", "pybind11_init__x(module_&)::$_::operator()", False),
        # Cython's numbers go: __pyx_pf_7cycount_6_count_2get is __pyx_pf_cycount__count_get
        ("cython-counter-before.log", "__pyx_pf_cycount__count_get", True),
        ("cython-counter-before.log", "__pyx_pf_7cycount_6_count_2get", True),
        ("cython-counter-before.log", "__pyx_pf_cycount__count_set", False),
        # Rust v0 closures: {closure#0} is {closure}
        ("pyo3-borrowflag-fixed.log", f"{_PYO3_TEST}_2::{{closure}}", True),
        ("pyo3-borrowflag-fixed.log", f"{_PYO3_TEST}_3::{{closure}}", False),
    ],
)  # fmt: skip
def test_the_plain_loop_normalises_frames_as_repro_does(
    log_name: str, pattern: str, hit: bool
) -> None:
    """A suggested target holds normalised names (`$_`, `{closure}`, Cython's names without
    numbers): the pasted loop compared them with the log's raw `$_0`, and missed a race in
    a lambda that repro had counted, in 3 of 3 logs."""
    from repro.tsan.signature import TargetRule, matches

    log = ROOT / "tests" / "data" / "tsan" / log_name
    rule = TargetRule(functions=(pattern,), accesses="any", depth=30)
    assert any(matches(r, rule) for r in parse_log(log.read_text()).reports) == hit
    assert _plain_loop_finds(pattern, log) == hit


@pytest.mark.parametrize("command", ["LABEL=x {bin}", "cd . && {bin} | cat", "{bin}; true"])
def test_the_plain_loop_runs_a_shell_command_as_repro_does(tmp_path: Path, command: str) -> None:
    """Sweep 14: `timeout 120 PYTHONPATH=... "$PYTHON" x.py` took `PYTHONPATH=...` for the
    program's name; every run failed with 127, `|| true` hid it, and the pasted script
    said "race not reproduced in 46 runs" of a race repro saw in 87% of them."""
    from tsan_helpers import PROGRAMS, compile_c

    from repro.recipe import parse_recipe
    from repro.report.shell import PLAIN_OK, PlainInputs, plain_script

    binary = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "racy")
    text = (
        "name: t\n"
        f"reproducer: {{command: {json.dumps(command.format(bin=binary))}, timeout: 30}}\n"
        "target: {functions: [increment_counter]}\n"
    )
    script = plain_script(
        PlainInputs(recipe=parse_recipe(text, tmp_path / "r.yaml"), recipe_dir=tmp_path,
                    title="t", runs=3)
    )  # fmt: skip
    play = tmp_path / "play"
    play.mkdir()
    done = subprocess.run(["bash", "-c", script], cwd=play, capture_output=True, text=True)
    assert done.returncode == 0 and PLAIN_OK in done.stdout, script + done.stdout + done.stderr


def test_the_reproducer_s_variables_expand_their_placeholders(tmp_path: Path) -> None:
    """`reproducer.env` values name `{recipe_dir}`, `{threads}` (and `{worktree}`, `{python}`)
    as the command does: in repro's runs and in the report's plain loop alike."""
    from conftest import repro
    from tsan_helpers import PROGRAMS, compile_c

    from repro.recipe import parse_recipe
    from repro.report.shell import PLAIN_OK, PlainInputs, plain_script

    binary = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "racy")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "racy").symlink_to(binary)
    text = (
        "name: t\n"
        "reproducer:\n"
        '  command: \'test "$WHERE" = "$PWD/bin/t3" && exec "$PWD/bin/racy"\'\n'
        "  threads: 3\n"
        "  timeout: 30\n"
        "  env: {WHERE: '{recipe_dir}/bin/t{threads}'}\n"
        "target: {functions: [increment_counter]}\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    res = repro("stress", str(recipe), "-n", "2", "-j", "1", "--runs-dir", str(tmp_path / "runs"))
    assert res.returncode == 0 and "2 of 2 runs hit" in res.stdout, res.stdout + res.stderr
    script = plain_script(
        PlainInputs(recipe=parse_recipe(text, recipe), recipe_dir=tmp_path, title="t", runs=2)
    )
    assert 'export WHERE="$RECIPE_DIR"/bin/t3' in script.splitlines(), script
    done = subprocess.run(
        ["bash", "-c", script.replace('RECIPE_DIR="$WORK/recipe"', f"RECIPE_DIR={tmp_path}")],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert PLAIN_OK in done.stdout, script + done.stdout + done.stderr


def test_a_probability_short_of_one_never_reads_100_percent() -> None:
    """Sweep 15: "likely culprit 888553ee (100%)" while the bisect was short of 0.9999."""
    from repro.report.fmt import probability

    assert probability(0.5) == "50%" and probability(1.0) == "100%"
    assert probability(0.9996) == "99.96%" and probability(0.9999999) == "99.99%"
    assert all(probability(1 - 10**-k) != "100%" for k in range(1, 12))


@pytest.mark.parametrize(
    ("backend", "var", "theirs", "ours"),
    [
        ("maturin", "RUSTFLAGS", "-Cstrip=none", "-Zsanitizer=thread"),
        ("setuptools", "CFLAGS", "-O2 -DNDEBUG", "-fsanitize=thread"),
    ],
)
def test_plain_script_joins_a_recipes_flags_to_the_sanitizers_as_the_build_does(
    tmp_path: Path, backend: str, var: str, theirs: str, ours: str
) -> None:
    """Sweep 16 (cramjam): the recipe's `RUSTFLAGS: -Cstrip=none` replaced the sanitizer
    in the script, whose build then had no `__tsan_` symbol, and the script said "race not
    reproduced in 46 runs" of a race repro saw in 20 of 20. The build joins them."""
    from repro.recipe import parse_recipe
    from repro.report.shell import PlainInputs, plain_script

    text = (ROOT / "recipes" / "demo-pkg.yaml").read_text()
    text = re.sub(
        r"python:\n(  .*\n)+", f"python:\n  executable: {sys.executable}\n", text, count=1
    )
    text = text.replace("extension:\n", f"extension:\n  env: {{{var}: {theirs!r}}}\n", 1)
    recipe = parse_recipe(text, tmp_path / "r.yaml")
    assert recipe.extension is not None and recipe.extension.env == {var: theirs}
    script = plain_script(
        PlainInputs(
            recipe=recipe, recipe_dir=tmp_path, title="t", ext_repo="/x", ext_sha="a" * 40,
            ext_backend=backend, runs=1,
        )
    )  # fmt: skip
    (line,) = [x for x in script.splitlines() if x.startswith(f"export {var}=")]
    assert ours in line and theirs in line, line
    assert line.index(ours) < line.index(theirs), line


# Sweep 16's second cramjam race (bug #213): two threads' Buffer.readinto() copy into one
# immutable bytes object. Both stacks start at TSAN's memcpy interceptor; Rust's core
# generics are inlined into cramjam's own function (one address, 0x30e7d).
_READINTO_STACK = """\
    #0 __tsan_memcpy ??:0 (python3.13t+0xdb71e)
    #1 core::ptr::copy_nonoverlapping::<u8> \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/core/src/ptr/mod.rs:547:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x30e7d)
    #2 core::slice::copy_from_slice_impl::<u8> \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/core/src/slice/mod.rs:3830:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x30e7d)
    #3 <[u8]>::copy_from_slice \
/rustc/17067e9ac6d7e98f18d4f2f9d3a0f0d4e1a2b3c4/library/core/src/slice/mod.rs:3806:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x30e7d)
    #4 <cramjam::io::PythonBuffer as std::io::Write>::write src/io.rs:314:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x30e7d)
    #5 cramjam::io::RustyBuffer::readinto src/io.rs:200:9 \
(cramjam.cpython-313t-x86_64-linux-gnu.so+0x31000)
"""
READINTO = (
    "==================\n"
    "WARNING: ThreadSanitizer: data race (pid=1)\n"
    "  Write of size 8 at 0x7b2400001010 by thread T2:\n"
    + _READINTO_STACK
    + "\n  Previous write of size 8 at 0x7b2400001010 by thread T3:\n"
    + _READINTO_STACK
    + "\nSUMMARY: ThreadSanitizer: data race (python3.13t+0xdb71e) in __tsan_memcpy\n"
    "==================\n"
)


def test_a_race_under_an_interceptor_is_suppressed_by_the_packages_frame() -> None:
    """Sweep 16: `race_top:` names frame #0 as TSAN printed it; under `__tsan_memcpy` the
    line repro suggested matched nothing (the race showed in 6 of 12 runs with it)."""
    from repro.report.tsantext import suppression_sites
    from repro.tsan.signature import DEFAULT_DROP

    (report,) = parse_log(READINTO).reports
    sites = suppression_sites(report, DEFAULT_DROP)
    assert sites is not None and sites.kind == "race", sites
    assert sites.functions == ["<cramjam::io::PythonBuffer as std::io::Write>::write"]
    # The target race of that bisect: the reader is CPython's buffer copy, under the
    # interceptor too. `race_top:PyBuffer_ToContiguous` matched nothing (and would have
    # named CPython's code); the package's frame below it is named.
    head, rest = READINTO.split("  Previous write", 1)
    reader = (
        "  Previous read of size 8 at 0x7b2400001010 by thread T3:\n"
        "    #0 __tsan_memcpy ??:0 (python3.13t+0xdb71e)\n"
        "    #1 PyBuffer_ToContiguous Objects/memoryobject.c:1090:5 (python3.13t+0x2a1b3c)\n"
        "    #2 cramjam::io::RustyBuffer::write src/io.rs:250:9 "
        "(cramjam.cpython-313t-x86_64-linux-gnu.so+0x32000)\n\n"
    )
    writer, summary = head, "SUMMARY:" + rest.split("SUMMARY:", 1)[1]
    (report,) = parse_log(reader.join([writer, summary])).reports
    assert report.previous is not None and len(report.previous.stack) == 3
    sites = suppression_sites(report, DEFAULT_DROP)
    assert sites is not None and sites.kind == "race", sites
    assert "PyBuffer_ToContiguous" not in sites.functions


def test_rusts_generics_inlined_into_the_package_are_no_noise() -> None:
    """Sweep 16: the race above was labelled "noise (Rust std) ... expected noise rather
    than bugs": its top frames are core's generics, inlined at the address of cramjam's
    own instrumented function. Std code of its own (other addresses) is still noise."""
    from repro.report.tsantext import RUST_STD, report_noise_module

    (report,) = parse_log(READINTO).reports
    assert report_noise_module(report) is None
    # The same frames, core's at an address of their own: code that was not inlined.
    apart = "    #".join(
        f.replace("+0x30e7d)", "+0x1000)") if "/library/" in f else f
        for f in READINTO.split("    #")
    )
    assert apart.count("+0x1000)") == 6
    (report,) = parse_log(apart).reports
    assert report_noise_module(report) == RUST_STD
