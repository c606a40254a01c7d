"""The doctor's checks run the real tools on this machine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from repro.app.doctor import check_c_compiler, check_c_symbols, check_tool, run_checks
from repro.host.compilers import find_clang
from repro.host.setarch import mmap_rnd_bits, needs_setarch, setarch_argv, setarch_state_file
from repro.host.tsan_probe import RACE_MARK, compile_racy_c, run_tsan_binary

LLVM19_SYMBOLIZER = Path("/usr/lib/llvm-19/bin/llvm-symbolizer")


def test_racy_program_is_reported(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    exe, err = compile_racy_c("gcc", tmp_path)
    assert exe is not None, err
    run = run_tsan_binary(exe, setarch_argv() if needs_setarch() else None)
    assert run.raced and not run.fatal, run.output[-2000:]
    assert RACE_MARK in run.output


def test_missing_tools_get_a_fix(tmp_path: Path) -> None:
    c = check_c_compiler("clang", "clang-does-not-exist", tmp_path, essential=False)
    assert not c.ok and c.fix == "apt-get install clang-19" and not c.essential
    t = check_tool("frobnicate", "frobnicate-does-not-exist", "apt-get install frob")
    assert not t.ok and t.fix == "apt-get install frob" and t.essential
    assert check_tool("git", "git", "x").ok == (shutil.which("git") is not None)


def test_needs_setarch_agrees_with_running_a_tsan_program(tmp_path: Path) -> None:
    """Measured independently: a TSAN program that dies as is but works under setarch -R
    is the one case where setarch is needed."""
    cc = "gcc" if shutil.which("gcc") else find_clang()
    if cc is None:
        pytest.skip("no C compiler")
    exe, err = compile_racy_c(cc, tmp_path)
    assert exe is not None, err
    plain = run_tsan_binary(exe)
    under = run_tsan_binary(exe, setarch_argv()) if shutil.which("setarch") else plain
    measured = not (plain.raced and not plain.fatal) and under.raced
    assert needs_setarch(refresh=True) is measured
    assert needs_setarch() is measured  # the kept answer, read back
    bits = mmap_rnd_bits()
    if bits is not None and bits > 28 and shutil.which("setarch"):
        kept = json.loads(setarch_state_file().read_text())
        assert kept["needs_setarch"] is measured and kept["ident"]["bits"] == bits
    else:
        assert not setarch_state_file().exists()  # the common case costs one file read


def test_run_checks_covers_everything() -> None:
    checks = {c.name: c for c in run_checks()}
    assert set(checks) >= {
        "git",
        "make",
        "patch",
        "xz",
        "ccache",
        "disk space",
        "vm.mmap_rnd_bits",
        "gcc",
        "gcc symbols",
        "clang",
        "clang symbols",
        "rust TSAN",
        "rust symbols",
    }
    for c in checks.values():
        assert c.detail
        assert c.ok or c.fix or c.name == "rust TSAN", c
    if shutil.which("gcc"):
        assert checks["gcc"].ok, checks["gcc"]
        assert "TSAN reports a test race" in checks["gcc"].detail
        assert checks["gcc symbols"].ok, checks["gcc symbols"]
    if shutil.which("clang-19") or shutil.which("clang"):
        assert checks["clang"].ok, checks["clang"]


# --- symbolization -------------------------------------------------------------------


def _clang_wrapper(tmp_path: Path) -> Path:
    """A directory with only `clang` (execs clang-19) and `ld`: PATH sees no symbolizer."""
    clang19 = shutil.which("clang-19")
    ld = shutil.which("ld")
    if clang19 is None or ld is None:
        pytest.skip("needs clang-19 and ld")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "clang"
    wrapper.write_text(f'#!/bin/sh\nexec {clang19} "$@"\n')
    wrapper.chmod(0o755)
    (bin_dir / "ld").symlink_to(ld)
    return bin_dir


def test_clang_whose_symbolizer_is_missing_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _clang_wrapper(tmp_path)
    no_llvm = tmp_path / "no-llvm"
    no_llvm.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("REPRO_LLVM_ROOTS", str(no_llvm))
    clang = find_clang()
    assert clang == "clang"
    work = tmp_path / "work"
    work.mkdir()
    c = check_c_symbols("clang", clang, work)
    assert c.name == "clang symbols"
    assert not c.ok, c
    assert c.fix == "apt-get install llvm-19", c
    assert "LLVM 19" in c.detail, c


def test_clang_with_its_symbolizer_resolves_frames(tmp_path: Path) -> None:
    if shutil.which("clang-19") is None or not LLVM19_SYMBOLIZER.exists():
        pytest.skip("needs clang-19 and llvm-19")
    if os.environ.get("REPRO_LLVM_ROOTS"):
        pytest.skip("REPRO_LLVM_ROOTS is set")
    c = check_c_symbols("clang", "clang-19", tmp_path)
    assert c.ok, c
    assert "work racy.c:" in c.detail and str(LLVM19_SYMBOLIZER) in c.detail, c


def test_gcc_symbolizes_on_its_own(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    c = check_c_symbols("gcc", "gcc", tmp_path)
    assert c.ok and "gcc's libtsan" in c.detail and "work racy.c:" in c.detail, c
