"""Machine probes: which llvm-symbolizer a run gets, and what it makes of real TSAN output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import repro
from tsan_helpers import TsanBuilder, tsan_builder

from repro.app.runner import Matcher, RunSpec, run_once
from repro.host.compilers import clang_candidates, cxx_for, find_clang, llvm_major
from repro.host.symbolizer import (
    Symbolizer,
    Toolchain,
    c_toolchain,
    choose,
    find_symbolizers,
    frame_resolved,
    stop_hint,
)
from repro.tsan.model import Frame, ParsedLog
from repro.tsan.signature import TargetRule

LLVM14 = Path("/usr/lib/llvm-14/bin/llvm-symbolizer")
LLVM19 = Path("/usr/lib/llvm-19/bin/llvm-symbolizer")

CLANG19 = Toolchain("clang-19", 19)
RUSTC22 = Toolchain("rustc", 22)
GCC = Toolchain("gcc", None)


# --- the choice (pure) -------------------------------------------------------------------


def _sym(*majors: int) -> list[Symbolizer]:
    return [Symbolizer(m, f"/opt/llvm-{m}/bin/llvm-symbolizer") for m in majors]


def test_same_major_is_preferred_over_newer() -> None:
    c = choose(_sym(22, 19, 14), [CLANG19])
    assert (c.major, c.path, c.suitable, c.warning) == (
        19,
        "/opt/llvm-19/bin/llvm-symbolizer",
        True,
        None,
    )
    assert c.tsan_defaults() == {"external_symbolizer_path": "/opt/llvm-19/bin/llvm-symbolizer"}


def test_without_the_same_major_the_newest_newer_one() -> None:
    c = choose(_sym(14, 20, 22), [CLANG19])
    assert c.major == 22 and c.suitable and c.warning is None


def test_only_older_ones_a_warning_naming_the_package() -> None:
    c = choose(_sym(14), [CLANG19])
    assert c.major == 14 and not c.suitable  # still set: better than no symbolizer at all
    assert c.warning is not None and "apt-get install llvm-19" in c.warning
    assert c.install == "apt-get install llvm-19"


def test_the_warning_waits_for_a_run_without_names() -> None:
    """An older symbolizer often names every frame: its warning is said with the stop
    that an unsymbolized run makes, not above every command."""
    c = choose(_sym(19), [RUSTC22])
    assert c.warning is not None
    assert stop_hint(c.to_json()) == f" The symbolizer: {c.warning}."
    assert "apt-get install llvm-22" in stop_hint(c.to_json())
    assert stop_hint(choose(_sym(19), [CLANG19]).to_json()) == ""
    assert stop_hint(None) == ""


def test_none_installed_a_warning_and_no_option() -> None:
    c = choose([], [CLANG19])
    assert c.path is None and c.tsan_defaults() == {} and not c.suitable
    assert c.warning is not None and "apt-get install llvm-19" in c.warning


def test_the_newest_llvm_toolchain_decides() -> None:
    c = choose(_sym(19, 14), [CLANG19, RUSTC22])
    assert c.major == 19 and not c.suitable and c.install == "apt-get install llvm-22"
    assert c.warning is not None and "rustc (LLVM 22)" in c.warning


def test_gcc_only_is_left_to_libtsan() -> None:
    c = choose(_sym(19), [GCC])
    assert c.path is None and c.suitable and c.warning is None and "gcc" in c.reason
    mixed = choose(_sym(19), [GCC, CLANG19])
    assert mixed.major == 19 and mixed.suitable


def test_unknown_toolchain_gets_the_newest() -> None:
    c = choose(_sym(14, 19), [])
    assert c.major == 19 and c.suitable
    assert choose([], []).path is None


def test_choice_is_recorded_with_its_reason() -> None:
    d = choose(_sym(19), [CLANG19]).to_json()
    assert d["llvm"] == 19 and d["for"] == [{"toolchain": "clang-19", "llvm": 19}]
    assert "LLVM 19" in d["reason"]
    json.dumps(d)


# --- what is installed -------------------------------------------------------------------


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_find_symbolizers_in_roots_and_on_path(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    in_root = _script(root / "llvm-17" / "bin" / "llvm-symbolizer", "exit 0")
    _script(root / "llvm-notanumber" / "bin" / "llvm-symbolizer", "exit 0")
    bin_dir = tmp_path / "bin"
    _script(bin_dir / "llvm-symbolizer-18", "exit 0")
    _script(bin_dir / "llvm-symbolizer", "echo 'Debian LLVM version 16.0.6'")
    (bin_dir / "llvm-symbolizer-17").symlink_to(in_root)  # the same binary twice
    (bin_dir / "llvm-symbolizer-15").write_text("not executable")
    env = {"REPRO_LLVM_ROOTS": str(root), "PATH": str(bin_dir)}
    found = find_symbolizers(env)
    assert [(s.major, Path(s.path).name) for s in found] == [
        (18, "llvm-symbolizer-18"),
        (17, "llvm-symbolizer"),
        (16, "llvm-symbolizer"),
    ]
    assert found[1].path == str(in_root)
    assert find_symbolizers({"REPRO_LLVM_ROOTS": str(tmp_path / "none"), "PATH": ""}) == []


def test_this_machines_symbolizers_report_their_version() -> None:
    for s in find_symbolizers():
        out = subprocess.run([s.path, "--version"], capture_output=True, text=True).stdout
        assert llvm_major(out) == s.major, (s, out)


def test_toolchains_of_compiler_commands() -> None:
    assert c_toolchain("clang", "Debian clang version 19.1.7 (3~deb12u1)") == Toolchain("clang", 19)
    assert c_toolchain("ccache gcc -pthread", "gcc (Debian 12.2.0-14) 12.2.0") == GCC
    assert c_toolchain("-pthread") is None
    assert c_toolchain("no-such-compiler") is None
    if shutil.which("clang-19"):
        assert c_toolchain("clang-19") == CLANG19
    if shutil.which("gcc"):
        assert c_toolchain("gcc") == GCC


def test_one_clang_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("clang-9", "clang-17", "clang-format-17", "clang-17.bak"):
        _script(tmp_path / name, "exit 0")
    assert clang_candidates(str(tmp_path)) == ["clang-17", "clang-9"]
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_clang() == "clang-17"
    assert find_clang("clang-9") == "clang-9"  # a clang the user named wins
    assert find_clang("gcc") == "clang-17"
    _script(tmp_path / "clang", "exit 0")
    assert find_clang() == "clang"


@pytest.mark.parametrize(
    ("cc", "cxx"),
    [
        ("clang", "clang++"),
        ("clang-19", "clang++-19"),
        ("/opt/clang/bin/clang-19", "/opt/clang/bin/clang++-19"),
        ("gcc-12", "g++-12"),
        ("x86_64-linux-gnu-gcc", "x86_64-linux-gnu-g++"),
        ("cc", "c++"),
    ],
)
def test_a_package_builds_its_cpp_with_the_pythons_toolchain(cc: str, cxx: str) -> None:
    """A package's C++ built by g++ next to a clang TSAN python puts two TSAN runtimes in
    one process; every backend reads CXX, so the settings name it beside CC."""
    from repro.builds.pypackage import tsan_settings

    assert cxx_for(cc) == cxx
    for backend in ("setuptools", "meson-python", "scikit-build-core", "maturin"):
        env, _ = tsan_settings(backend, compiler=cc, rust_target=None, config_settings={})
        assert (env["CC"], env["CXX"]) == (cc, cxx)


def test_frame_resolved() -> None:
    assert frame_resolved(Frame(0, "f", "r.c", 2, 25, "prog", "0x1"))
    assert not frame_resolved(Frame(0, "<null>", None, None, None, "prog", "0xe46a6"))
    assert not frame_resolved(Frame(0, "??", "??", None))
    assert not frame_resolved(Frame(0, "f", None, None, None, "prog", "0x1"))


# --- real programs through repro's runner -------------------------------------------------


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> TsanBuilder:
    return tsan_builder(tmp_path_factory)


def _run(
    binary: Path, tmp_path: Path, defaults: Mapping[str, str], user_options: str | None = None
) -> ParsedLog:
    env = {k: v for k, v in os.environ.items() if k != "TSAN_OPTIONS"}
    if user_options is not None:
        env["TSAN_OPTIONS"] = user_options
    spec = RunSpec(command=str(binary), cwd=tmp_path, env=env, timeout=60, tsan_defaults=defaults)
    matcher = Matcher(rule=TargetRule(functions=("increment_counter",)))
    result, parsed = run_once(spec, 0, tmp_path / "runs", matcher)
    assert parsed.reports and not parsed.fatal, result.output_tail
    return parsed


def _top_frames(parsed: ParsedLog) -> list[Frame]:
    r = parsed.reports[0]
    return [a.stack[0] for a in (r.current, r.previous) if a is not None and a.stack]


def test_clang19_program_symbolized_with_the_default_choice(
    builder: TsanBuilder, tmp_path: Path
) -> None:
    if not LLVM19.exists() or os.environ.get("REPRO_LLVM_ROOTS"):
        pytest.skip("needs llvm-19 in /usr/lib")
    binary = builder.c("racy_counter", "clang-19")
    choice = choose(find_symbolizers(), [c_toolchain("clang-19") or CLANG19])
    assert choice.path is not None and Path(choice.path).resolve() == LLVM19.resolve()
    tops = _top_frames(_run(binary, tmp_path, choice.tsan_defaults()))
    assert tops and all(frame_resolved(f) for f in tops), tops
    assert tops[0].function == "increment_counter" and tops[0].file.endswith("racy_counter.c")


def test_clang19_program_without_a_reachable_symbolizer_is_null(
    builder: TsanBuilder, tmp_path: Path
) -> None:
    """What Debian's clang-19 runtime meets on a machine without llvm-19: it looks only
    for /usr/bin/llvm-symbolizer-19 (measured: `verbosity=2` prints that path even with
    PATH emptied), so every frame comes out `<null> <null> (prog+0x...)`."""
    binary = builder.c("racy_counter", "clang-19")
    missing = tmp_path / "no-llvm-19" / "llvm-symbolizer"
    tops = _top_frames(_run(binary, tmp_path, {"external_symbolizer_path": str(missing)}))
    assert tops and all(f.function == "<null>" and f.file is None for f in tops), tops


def test_llvm14_symbolizer_reads_clang19_output(builder: TsanBuilder, tmp_path: Path) -> None:
    """Measured, against the issue's reading: LLVM 14's llvm-symbolizer, given explicitly,
    symbolizes a clang-19 binary. The `<null>` frames on a fresh machine come from the
    runtime finding no symbolizer at all, which is why an older one is still chosen over
    none (with a warning)."""
    if not LLVM14.exists():
        pytest.skip("needs llvm-14")
    binary = builder.c("racy_counter", "clang-19")
    tops = _top_frames(_run(binary, tmp_path, {"external_symbolizer_path": str(LLVM14)}))
    assert tops and all(frame_resolved(f) for f in tops), tops


def test_the_users_tsan_options_win_over_the_default(builder: TsanBuilder, tmp_path: Path) -> None:
    if not LLVM19.exists():
        pytest.skip("needs llvm-19")
    binary = builder.c("racy_counter", "clang-19")
    parsed = _run(
        binary,
        tmp_path,
        {"external_symbolizer_path": str(LLVM19)},
        user_options="symbolize=0",
    )
    assert all(f.function == "<null>" for f in _top_frames(parsed))


def test_gcc_program_reads_the_same_with_llvm_symbolizer(
    builder: TsanBuilder, tmp_path: Path
) -> None:
    """The measurement behind leaving gcc-built runs alone: setting LLVM 19's symbolizer
    gives the same function and file:line frames as libtsan's own; so nothing is gained,
    and not setting it keeps the frames (and signatures) of existing run directories."""
    if not LLVM19.exists():
        pytest.skip("needs llvm-19")
    binary = builder.c("racy_counter", "gcc")
    own = _run(binary, tmp_path / "own", {})
    llvm = _run(binary, tmp_path / "llvm", {"external_symbolizer_path": str(LLVM19)})
    key = [(f.function, f.file, f.line) for f in _top_frames(own)]
    assert key == [(f.function, f.file, f.line) for f in _top_frames(llvm)]
    assert all(frame_resolved(f) for f in _top_frames(own))


def test_stress_records_the_symbolizer_and_hits_the_target(
    builder: TsanBuilder, tmp_path: Path
) -> None:
    """The real command line: the run's environment names the symbolizer, and the
    target (which needs function names) is hit."""
    if not LLVM19.exists() or os.environ.get("REPRO_LLVM_ROOTS"):
        pytest.skip("needs llvm-19 in /usr/lib")
    shutil.copy(builder.c("racy_counter", "clang-19"), tmp_path / "prog")
    (tmp_path / "r.yaml").write_text(
        "name: sym\nreproducer:\n  command: ./prog\n  timeout: 30\n"
        "target:\n  functions: [increment_counter]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TSAN_OPTIONS"}
    proc = repro(
        "stress",
        "r.yaml",
        "-n",
        "1",
        "--runs-dir",
        "runs",
        "--json-out",
        "s.json",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["outcomes"]["target"] == 1
    (meta,) = (tmp_path / "runs").glob("*/meta.json")
    sym = json.loads(meta.read_text())["environment"]["symbolizer"]
    assert Path(sym["chosen"]["path"]).resolve() == LLVM19.resolve()
    assert sym["chosen"]["reason"]
    assert sym["installed"][0]["llvm"] == 19


# --- a machine without llvm-19, for real (root: a mount namespace hides it) --------------

_HIDE = """
set -e
for d in /usr/bin /usr/lib/llvm-19/bin; do
  n=$(echo $d | tr / _)
  mkdir -p "$T/up$n" "$T/work$n"
  for f in llvm-symbolizer llvm-symbolizer-19; do
    [ -e "$d/$f" ] && mknod "$T/up$n/$f" c 0 0
  done
  mount -t overlay overlay -o "lowerdir=$d,upperdir=$T/up$n,workdir=$T/work$n" "$d"
done
exec "$@"
"""


def test_fresh_machine_without_llvm19(builder: TsanBuilder, tmp_path: Path) -> None:
    """llvm-19 and the plain llvm-symbolizer hidden in a mount namespace (the runtime's
    own lookup cannot find them either): the clang-19 program's frames are `<null>`;
    with LLVM 14's symbolizer still there, repro chooses it (with a warning) and the
    frames resolve."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not LLVM14.exists():
        pytest.skip("needs root, unshare and llvm-14")
    binary = builder.c("racy_counter", "clang-19")
    probe = (
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "from repro.host.symbolizer import Toolchain, choose, find_symbolizers\n"
        "from repro.app.runner import Matcher, RunSpec, run_once\n"
        "from repro.tsan.signature import TargetRule\n"
        "env = {k: v for k, v in os.environ.items() if k != 'TSAN_OPTIONS'}\n"
        "choice = choose(find_symbolizers(), [Toolchain('clang-19', 19)])\n"
        "out = {'choice': choice.to_json()}\n"
        "for name, defaults in (('none', {}), ('repro', choice.tsan_defaults())):\n"
        "    spec = RunSpec(command=sys.argv[1], cwd=Path(sys.argv[2]), env=env, timeout=60,\n"
        "                   tsan_defaults=defaults)\n"
        "    m = Matcher(rule=TargetRule(functions=('increment_counter',)))\n"
        "    _r, parsed = run_once(spec, 0, Path(sys.argv[2]) / name, m)\n"
        "    out[name] = [a.stack[0].function for a in (parsed.reports[0].current,\n"
        "                 parsed.reports[0].previous) if a and a.stack]\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            _HIDE,
            "hide",
            sys.executable,
            "-c",
            probe,
            str(binary),
            str(tmp_path),
        ],
        env={**os.environ, "T": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 and "mount" in proc.stderr:
        pytest.skip(f"cannot hide llvm-19 here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["choice"]["llvm"] == 14 and not out["choice"]["suitable"]
    assert "apt-get install llvm-19" in out["choice"]["warning"]
    assert out["none"] and all(f == "<null>" for f in out["none"]), out
    assert out["repro"] and all(f == "increment_counter" for f in out["repro"]), out


def test_run_toolchains_from_the_build_and_the_extension() -> None:
    from repro.builds.cpython import PythonBuild
    from repro.host.symbolizer import run_toolchains

    py = PythonBuild(
        python=Path("/p/bin/python3"),
        prefix=Path("/p"),
        key="k",
        version="3.13.5",
        gil_disabled=True,
        tsan=True,
        compiler="clang-19",
        compiler_version="Debian clang version 19.1.7 (3~deb12u1)",
        source="s",
        source_id="i",
    )
    assert run_toolchains(py, None, {}) == [Toolchain("clang-19", 19)]
    cc = {"CC": "ccache gcc"}
    assert run_toolchains(None, "c", cc) == ([GCC] if shutil.which("gcc") else [])
    assert run_toolchains(None, None, {}) == []
    no_tsan = PythonBuild(**{**py.__dict__, "tsan": False})
    assert run_toolchains(no_tsan, None, {}) == []


# --- the environment builds and reproducers start from ----------------------------------


def test_what_dask_wrote_goes_back_to_how_the_process_was_started() -> None:
    from repro.host.environ import without_dask

    written = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "6640"}
    now = {
        "PATH": "/bin",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "6640",
        "__DASK_PARENT_PID": "42",
    }
    launched = {"PATH": "/usr/bin", "OMP_NUM_THREADS": "4"}
    # The user's own value comes back; what was not set goes; the rest is left alone
    # (PATH here changed after the start, by the process itself, not by Dask).
    assert without_dask(now, written, launched) == {"PATH": "/bin", "OMP_NUM_THREADS": "4"}


def test_without_the_start_environment_only_dasks_own_values_go() -> None:
    from repro.host.environ import without_dask

    written = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "6640"}
    now = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "17", "__DASK_PARENT_PID": "42"}
    assert without_dask(now, written, None) == {"PYTHONHASHSEED": "17"}


def test_proc_environ_entries_keep_the_equals_signs_in_their_values() -> None:
    from repro.host.environ import parse_proc_environ

    data = b"A=1\0TSAN_OPTIONS=halt_on_error=0 history_size=7\0EMPTY=\0\0"
    assert parse_proc_environ(data) == {
        "A": "1",
        "TSAN_OPTIONS": "halt_on_error=0 history_size=7",
        "EMPTY": "",
    }


def test_this_processs_start_environment_is_read_from_proc() -> None:
    """The rule rests on /proc/PID/environ showing the environment a process was started
    with, not what it set since: a child that sets a variable still shows the old one."""
    code = (
        "import os; os.environ['OMP_NUM_THREADS'] = '1'; "
        "print(open(f'/proc/{os.getpid()}/environ', 'rb').read().count(b'OMP_NUM_THREADS=1'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "0", out.stdout + out.stderr
