"""Which compilers this machine has, and what they are (version, LLVM major).

One rule for finding clang serves the builds, the run record and the doctor: a clang
the user named, else plain ``clang``, else the highest ``clang-N`` on PATH (Debian
installs only the versioned names unless the unversioned package is added).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

_CLANG_N = re.compile(r"clang-(\d+)")
_CLANG_VERSION = re.compile(r"clang version (\d+)\.")
_LLVM_VERSION = re.compile(r"LLVM version:?\s*(\d+)\.")


def clang_candidates(path_env: str | None = None) -> list[str]:
    """Every clang on PATH, best first: ``clang``, then ``clang-N`` by descending N."""
    path = os.environ.get("PATH", "") if path_env is None else path_env
    names = ["clang"] if shutil.which("clang", path=path) else []
    versioned: set[tuple[int, str]] = set()
    for d in path.split(os.pathsep):
        if not d:
            continue
        try:
            for p in Path(d).glob("clang-[0-9]*"):
                m = _CLANG_N.fullmatch(p.name)
                if m and os.access(p, os.X_OK):
                    versioned.add((int(m.group(1)), p.name))
        except OSError:
            continue
    return names + [name for _n, name in sorted(versioned, reverse=True)]


def find_clang(preferred: str | None = None) -> str | None:
    """``preferred`` when it names a clang that is installed, else the best clang on PATH."""
    if preferred and "clang" in Path(preferred).name and shutil.which(preferred):
        return preferred
    found = clang_candidates()
    return found[0] if found else None


def cxx_for(cc: str) -> str:
    """The C++ compiler of ``cc``'s toolchain: C++ sources built by another toolchain would
    bring a second TSAN runtime into the process (g++'s libtsan beside clang's)."""
    path = Path(cc)
    if path.name.startswith("clang++") or path.name.startswith("g++"):
        return cc
    if path.name.startswith("clang"):
        name = path.name.replace("clang", "clang++", 1)
    elif "gcc" in path.name:
        name = path.name.replace("gcc", "g++", 1)
    else:
        return "c++"
    return name if path.name == cc else str(path.with_name(name))


def version_output(cmd: str, timeout: float = 30.0) -> str | None:
    """The full ``cmd --version`` text (a build's cache key holds it), or None."""
    exe = shutil.which(cmd)
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip()


def compiler_version(cmd: str) -> str | None:
    """First line of ``cmd --version`` ("Debian clang version 19.1.7 (...)"), or None."""
    exe = shutil.which(cmd)
    return _first_version_line(exe) if exe else None


@functools.lru_cache(maxsize=32)
def _first_version_line(exe: str) -> str | None:
    """Cached by path: a bisect asks for every commit (not the real path: ccache's
    masquerade links resolve to ccache itself)."""
    out = version_output(exe)
    if not out:
        return None
    return out.splitlines()[0].strip() or None


def llvm_major(version_text: str) -> int | None:
    """The LLVM major version in a clang ``--version`` or ``llvm-symbolizer --version``."""
    m = _CLANG_VERSION.search(version_text) or _LLVM_VERSION.search(version_text)
    return int(m.group(1)) if m else None


def clang_major(compiler: str, version_line: str | None = None) -> int | None:
    """The LLVM major of a clang (None for gcc or anything not clang).

    The recorded ``version_line`` of a build is used first, so that the answer is about
    the compiler that built it, not whatever is installed now.
    """
    text = version_line or compiler_version(compiler) or ""
    if "clang" in text.lower():
        return llvm_major(text)
    m = _CLANG_N.search(Path(compiler).name)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def rustc_info() -> dict[str, str] | None:
    """The fields of ``rustc -vV`` ("release", "host", "LLVM version", ...) and its
    first line under "rustc"; None without rustc."""
    exe = shutil.which("rustc")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-vV"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    lines = proc.stdout.strip().splitlines()
    fields = {"rustc": lines[0].strip()}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    return fields


def rustc_llvm_major() -> int | None:
    """The LLVM that Rust's TSAN runtime and debug info come from."""
    info = rustc_info()
    version = (info or {}).get("LLVM version", "")
    m = re.match(r"(\d+)\.", version)
    return int(m.group(1)) if m else None
