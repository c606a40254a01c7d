"""Compile and run the small TSAN programs of tests/tsan_programs.

Reusable by any test: ``tsan_builder(tmp_path_factory)`` gives the session's
builder, which compiles each (program, compiler, flags) once per session into a
directory under pytest's tmp_path_factory. Compilers that are not installed make
the test skip, not fail; so does a TSAN runtime that cannot start on this host
(see ``run_and_parse``).

Import with ``from tsan_helpers import ...`` (tests/ is on sys.path).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from repro.tsan.model import ParsedLog
from repro.tsan.parse import parse_log

PROGRAMS = Path(__file__).resolve().parent / "tsan_programs"
DATA = Path(__file__).resolve().parent / "data" / "tsan"

C_COMPILERS = ("gcc", "clang-19")

RUST_TSAN_FLAGS = (
    "-Zsanitizer=thread",
    "-Cunsafe-allow-abi-mismatch=sanitizer",
    "--target",
    "x86_64-unknown-linux-gnu",
)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def require(tool: str) -> str:
    """The path of ``tool``, or skip the test when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def marker_line(src: Path, marker: str) -> int:
    """The 1-based line of ``src`` that contains ``marker`` (a comment in the program).

    Tests find expected lines this way instead of hard-coding numbers.
    """
    for number, line in enumerate(src.read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"marker {marker!r} not in {src}")


def compile_c(
    src: Path,
    out: Path,
    compiler: str = "gcc",
    opt: str = "-O1",
    extra: Sequence[str] = (),
) -> Path:
    """``compiler -fsanitize=thread -g opt src -o out -pthread``; skips if absent."""
    cc = require(compiler)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-fsanitize=thread", "-g", opt, *extra, "-o", str(out), str(src), "-pthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    return out


def compile_rust(src: Path, out: Path, opt: str | None = None) -> Path:
    """A TSAN Rust binary with the stable toolchain (RUSTC_BOOTSTRAP, no build-std)."""
    rustc = require("rustc")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [rustc, *RUST_TSAN_FLAGS, "-g", "-o", str(out), str(src)]
    if opt is not None:
        cmd.insert(1, f"-Copt-level={opt}")
    env = {**os.environ, "RUSTC_BOOTSTRAP": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode != 0:
        if "sanitizer" in proc.stderr and "not supported" in proc.stderr:
            pytest.skip(f"rustc cannot build with TSAN here: {proc.stderr.strip()[:200]}")
        raise AssertionError(f"rustc failed:\n{proc.stderr}")
    return out


def run_tsan(
    binary: Path,
    env: Mapping[str, str] | None = None,
    tsan_options: str = "",
    timeout: float = 60,
    address_space_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a TSAN binary with a known TSAN_OPTIONS (the caller's own is ignored).

    ``address_space_limit`` (bytes, RLIMIT_AS) makes the TSAN runtime fail at
    start-up: a real "TSAN could not run" for tests of that path.
    """
    run_env = {k: v for k, v in os.environ.items() if k != "TSAN_OPTIONS"}
    run_env["TSAN_OPTIONS"] = " ".join(o for o in ("exitcode=66", tsan_options) if o)
    run_env.update(env or {})

    def limit() -> None:
        if address_space_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space_limit, address_space_limit))

    return subprocess.run(
        [str(binary)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit if address_space_limit is not None else None,
    )


def run_and_parse(
    binary: Path, env: Mapping[str, str] | None = None, tsan_options: str = ""
) -> tuple[subprocess.CompletedProcess[str], ParsedLog]:
    """Run, parse stderr; skip the test when the TSAN runtime itself failed to start."""
    proc = run_tsan(binary, env=env, tsan_options=tsan_options)
    parsed = parse_log(proc.stderr)
    if parsed.fatal:
        pytest.skip(f"TSAN cannot run on this host: {parsed.fatal[0]}")
    return proc, parsed


class TsanBuilder:
    """Compiles each program once per session, keyed by compiler and flags."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple[str, ...], Path] = {}

    def c(self, program: str, compiler: str = "gcc", opt: str = "-O1", subdir: str = "") -> Path:
        """tests/tsan_programs/<program>.c built with ``compiler``; ``subdir`` lets a test
        get a second copy of the same build at another path."""
        key = ("c", program, compiler, opt, subdir)
        if key not in self._built:
            out = self.root / compiler / opt.lstrip("-") / subdir / program
            self._built[key] = compile_c(PROGRAMS / f"{program}.c", out, compiler, opt)
        return self._built[key]

    def rust(self, program: str, opt: str | None = None) -> Path:
        key = ("rust", program, opt or "")
        if key not in self._built:
            out = self.root / "rustc" / (opt or "default") / program
            self._built[key] = compile_rust(PROGRAMS / f"{program}.rs", out, opt)
        return self._built[key]


_BUILDER: TsanBuilder | None = None


def tsan_builder(tmp_path_factory: pytest.TempPathFactory) -> TsanBuilder:
    """The session's builder (one build directory shared by all test modules)."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = TsanBuilder(tmp_path_factory.mktemp("tsan-programs"))
    return _BUILDER


def stored_log(name: str) -> str:
    """A log kept in tests/data/tsan (real output of the programs here)."""
    return (DATA / name).read_text(encoding="utf-8")


def cycle_script(path: Path, cases: Sequence[str]) -> Path:
    """A reproducer whose runs take the shell commands of ``cases`` in turn (one run at a
    time: -j 1), counting its runs in a file beside it."""
    arms = "".join(f"  {i}) {cmd} ;;\n" for i, cmd in enumerate(cases))
    path.write_text(
        "#!/bin/sh\n"
        'n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.count"\n'
        f"case $((n % {len(cases)})) in\n{arms}esac\n"
    )
    path.chmod(0o755)
    return path


def with_history(size: int, program: Path) -> str:
    """The command that runs ``program`` with TSAN keeping ``size`` of its history (0: an
    earlier access's stack is lost)."""
    return f'TSAN_OPTIONS="$TSAN_OPTIONS history_size={size}" exec {program}'
