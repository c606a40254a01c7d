"""The doctor's checks run the real tools on this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from repro.doctor import (
    RACE_MARK,
    _run_tsan_binary,
    check_c_compiler,
    check_tool,
    compile_racy_c,
    mmap_rnd_bits,
    needs_setarch,
    run_checks,
)


def test_racy_program_is_reported(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    exe, err = compile_racy_c("gcc", tmp_path)
    assert exe is not None, err
    prefix = ["setarch", "x86_64", "-R"] if needs_setarch() else None
    run = _run_tsan_binary(exe, prefix)
    assert run.raced and not run.fatal, run.output[-2000:]
    assert RACE_MARK in run.output


def test_missing_tools_get_a_fix(tmp_path: Path) -> None:
    c = check_c_compiler("clang", "clang-does-not-exist", tmp_path, essential=False)
    assert not c.ok and c.fix == "apt-get install clang-19" and not c.essential
    t = check_tool("frobnicate", "frobnicate-does-not-exist", "apt-get install frob")
    assert not t.ok and t.fix == "apt-get install frob" and t.essential
    assert check_tool("git", "git", "x").ok == (shutil.which("git") is not None)


def test_needs_setarch_matches_the_kernel_setting() -> None:
    bits = mmap_rnd_bits()
    if bits is not None and bits <= 28:
        assert needs_setarch() is False
    else:  # decided by running a TSAN program; the answer is stable within a boot
        assert needs_setarch() == needs_setarch()


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
        "clang",
        "rust TSAN",
    }
    for c in checks.values():
        assert c.detail
        assert c.ok or c.fix or c.name == "rust TSAN", c
    if shutil.which("gcc"):
        assert checks["gcc"].ok, checks["gcc"]
        assert "TSAN reports a test race" in checks["gcc"].detail
    if shutil.which("clang-19") or shutil.which("clang"):
        assert checks["clang"].ok, checks["clang"]
