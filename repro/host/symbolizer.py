"""Which ``llvm-symbolizer`` TSAN should use for the programs a run executes.

TSAN turns addresses into ``function file:line`` by calling an external symbolizer.
Debian's clang-N runtime looks only for ``/usr/bin/llvm-symbolizer-N``: on a machine
with clang-19 but without the ``llvm-19`` package every frame comes out ``<null>``,
and a run that cannot show a function name cannot match the target. So repro finds
the installed symbolizers itself, picks one for the toolchains that built what runs
(clang-N: LLVM N; Rust: rustc's LLVM), passes it as ``external_symbolizer_path`` and
records the choice. gcc's libtsan symbolizes with its own code and is left alone.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.host.compilers import clang_major, compiler_version, llvm_major, rustc_llvm_major
from repro.tsan.model import Frame

ROOTS_VAR = "REPRO_LLVM_ROOTS"  # where llvm-N/bin/llvm-symbolizer is looked for
DEFAULT_ROOTS = ("/usr/lib",)

_UNRESOLVED_FUNCTIONS = ("", "<null>", "??")


@dataclass(frozen=True)
class Symbolizer:
    major: int
    path: str


@dataclass(frozen=True)
class Toolchain:
    """What built (part of) the code a run executes."""

    name: str  # "clang-19", "gcc", "rustc"
    llvm_major: int | None  # None: gcc, whose libtsan symbolizes by itself


@dataclass(frozen=True)
class Choice:
    """The symbolizer for a run, and why; ``suitable`` is False when it may not do."""

    path: str | None
    major: int | None
    toolchains: tuple[Toolchain, ...]
    suitable: bool
    reason: str
    warning: str | None = None
    install: str | None = None  # the command that makes a suitable one available

    def tsan_defaults(self) -> dict[str, str]:
        return {"external_symbolizer_path": self.path} if self.path else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "llvm": self.major,
            "for": [{"toolchain": t.name, "llvm": t.llvm_major} for t in self.toolchains],
            "suitable": self.suitable,
            "reason": self.reason,
            "warning": self.warning,
        }


# --- what is installed -------------------------------------------------------------------


def find_symbolizers(env: Mapping[str, str] | None = None) -> list[Symbolizer]:
    """Installed llvm-symbolizers, newest LLVM first, each binary once.

    Looked for as ``<root>/llvm-N/bin/llvm-symbolizer`` (roots from REPRO_LLVM_ROOTS,
    default /usr/lib), then ``llvm-symbolizer-N`` and plain ``llvm-symbolizer`` on PATH
    (the plain one says its version when asked).
    """
    e = os.environ if env is None else env
    roots = [r for r in e.get(ROOTS_VAR, os.pathsep.join(DEFAULT_ROOTS)).split(os.pathsep) if r]
    found: list[Symbolizer] = []
    for root in roots:
        for d in _glob(Path(root), "llvm-[0-9]*"):
            m = re.fullmatch(r"llvm-(\d+)", d.name)
            exe = d / "bin" / "llvm-symbolizer"
            if m and _executable(exe):
                found.append(Symbolizer(int(m.group(1)), str(exe)))
    for entry in [p for p in e.get("PATH", "").split(os.pathsep) if p]:
        for exe in _glob(Path(entry), "llvm-symbolizer-[0-9]*"):
            m = re.fullmatch(r"llvm-symbolizer-(\d+)", exe.name)
            if m and _executable(exe):
                found.append(Symbolizer(int(m.group(1)), str(exe)))
        plain = Path(entry) / "llvm-symbolizer"
        if _executable(plain):
            major = _reported_major(str(plain))
            if major is not None:
                found.append(Symbolizer(major, str(plain)))
    seen: set[str] = set()
    unique = []
    for s in found:
        real = os.path.realpath(s.path)
        if real not in seen:
            seen.add(real)
            unique.append(s)
    return sorted(unique, key=lambda s: -s.major)  # stable: discovery order within a major


def _glob(d: Path, pattern: str) -> list[Path]:
    try:
        return sorted(d.glob(pattern))
    except OSError:
        return []


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


@functools.lru_cache(maxsize=16)
def _reported_major(path: str) -> int | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return llvm_major(out)


# --- the choice (pure) -------------------------------------------------------------------


def choose(symbolizers: Sequence[Symbolizer], toolchains: Sequence[Toolchain]) -> Choice:
    """The symbolizer for code built by ``toolchains`` (empty: not known).

    LLVM's symbolizer reads what older LLVMs wrote, not always what newer ones write,
    so an LLVM toolchain needs one of its own major or newer: the same major when
    installed, else the newest. With none of those, the newest older one is still
    better than none (Debian's clang-N runtime finds no symbolizer at all without
    llvm-N), but it comes with a warning naming the package to install.
    """
    tcs = tuple(toolchains)
    llvm = [t for t in tcs if t.llvm_major is not None]
    newest = max(symbolizers, key=lambda s: s.major, default=None)
    if tcs and not llvm:
        names = ", ".join(t.name for t in tcs)
        return Choice(
            None, None, tcs, True, f"built by {names} only: gcc's libtsan symbolizes on its own"
        )
    if not llvm:
        if newest is None:
            return Choice(None, None, tcs, True, "toolchain not known, no llvm-symbolizer found")
        return Choice(
            newest.path,
            newest.major,
            tcs,
            True,
            f"toolchain not known: the newest llvm-symbolizer (LLVM {newest.major})",
        )
    need = max(t.llvm_major for t in llvm if t.llvm_major is not None)
    names = ", ".join(f"{t.name} (LLVM {t.llvm_major})" for t in llvm)
    install = f"apt-get install llvm-{need}"
    same = [s for s in symbolizers if s.major == need]
    if same:
        return Choice(same[0].path, need, tcs, True, f"LLVM {need}'s, as for {names}")
    newer = [s for s in symbolizers if s.major > need]
    if newer:
        best = max(newer, key=lambda s: s.major)
        return Choice(
            best.path,
            best.major,
            tcs,
            True,
            f"LLVM {best.major}'s, the newest (none of LLVM {need} for {names})",
        )
    if newest is not None:
        return Choice(
            newest.path,
            newest.major,
            tcs,
            False,
            f"LLVM {newest.major}'s, older than {names}: no newer one is installed",
            f"no llvm-symbolizer of LLVM {need} or newer for {names}; using LLVM "
            f"{newest.major}'s, which may leave frames unsymbolized (<null>): {install}",
            install,
        )
    return Choice(
        None,
        None,
        tcs,
        False,
        f"no llvm-symbolizer installed for {names}",
        f"no llvm-symbolizer installed for {names}: TSAN frames may come out "
        f"unsymbolized (<null>): {install}",
        install,
    )


# --- the toolchains of a run -------------------------------------------------------------


def c_toolchain(compiler: str, version_line: str | None = None) -> Toolchain | None:
    """A C compiler command ("clang-19", "ccache gcc", "gcc -pthread") as a toolchain;
    None when it cannot be told."""
    words = [w for w in compiler.split() if not w.startswith("-") and w != "ccache"]
    if not words:
        return None
    cmd = words[-1]
    name = Path(cmd).name
    major = clang_major(cmd, version_line)
    if major is not None:
        return Toolchain(name, major)
    text = (version_line or compiler_version(cmd) or "").lower()
    if "clang" in text or "clang" in name:
        return None  # a clang whose version cannot be read
    if text or re.fullmatch(r"(cc|gcc|g\+\+)(-\d+)?", name):
        return Toolchain(name, None)
    return None


def rust_toolchain() -> Toolchain | None:
    major = rustc_llvm_major()
    return Toolchain("rustc", major) if major is not None else None


def run_toolchains(python: Any, sanitize: str | None, env: Mapping[str, str]) -> list[Toolchain]:
    """What built the code a run executes: the TSAN CPython (``python``, a PythonBuild)
    and the extension (``sanitize`` "c" with the run's CC, or "rust")."""
    out: list[Toolchain | None] = []
    if python is not None and python.tsan and python.compiler:
        out.append(c_toolchain(str(python.compiler), str(python.compiler_version or "") or None))
    if sanitize == "c":
        out.append(c_toolchain(env.get("CC") or "cc"))
    elif sanitize == "rust":
        out.append(rust_toolchain())
    return [t for t in out if t is not None]


def stop_hint(symbolizer: Mapping[str, Any] | None) -> str:
    """What to say of the symbolizer when a run's frames came out without names.

    A symbolizer older than the toolchain often still names every frame (Rust's
    LLVM 22 code with Debian's LLVM 19), so its warning waits for a run that shows
    it did not, instead of standing above every command.
    """
    warning = (symbolizer or {}).get("warning")
    return f" The symbolizer: {warning}." if warning else ""


def choose_for_run(python: Any, sanitize: str | None, env: Mapping[str, str]) -> Choice:
    """The choice for a prepared run; ``env`` is the run's (PATH, REPRO_LLVM_ROOTS)."""
    return choose(find_symbolizers(env), run_toolchains(python, sanitize, env))


# --- reading the result ------------------------------------------------------------------


def frame_resolved(frame: Frame) -> bool:
    """A frame that names its function and its source line (not ``<null>``, ``??`` or
    only ``module+offset``)."""
    return (
        frame.function.strip() not in _UNRESOLVED_FUNCTIONS
        and bool(frame.file)
        and frame.line is not None
    )
