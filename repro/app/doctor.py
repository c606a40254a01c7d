"""Can this machine reproduce TSAN races at all?

Every check runs the real thing (compile a racy program, run it, look for the
report) because the failures that cost users an afternoon are the ones where a
tool is installed but does not work: a TSAN runtime that dies on start-up with
a high ``vm.mmap_rnd_bits``, or a Rust toolchain without sanitizer support.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repro.host.compilers import compiler_version, find_clang, rustc_info
from repro.host.setarch import (
    mmap_rnd_bits,
    needs_setarch,
    probe_tsan_start,
    setarch_argv,
    setarch_prefix,
)
from repro.host.symbolizer import (
    Toolchain,
    c_toolchain,
    choose,
    find_symbolizers,
    frame_resolved,
    rust_toolchain,
)
from repro.host.tsan_probe import compile_racy_c, run_tsan_binary
from repro.paths import cache_dir
from repro.tsan.model import Frame
from repro.tsan.parse import parse_log

RACY_RUST = r"""
static mut COUNTER: u64 = 0;
fn main() {
    let handles: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| {
            for _ in 0..10000 {
                unsafe { *std::ptr::addr_of_mut!(COUNTER) += 1; }
            }
        }))
        .collect();
    for h in handles { h.join().unwrap(); }
    println!("{}", unsafe { *std::ptr::addr_of!(COUNTER) });
}
"""

MIN_FREE_GB = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    essential: bool = True


def _run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd, check=False
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def check_c_compiler(name: str, cmd: str | None, workdir: Path, *, essential: bool) -> Check:
    install = "apt-get install clang-19" if "clang" in name else "apt-get install gcc"
    if cmd is None or shutil.which(cmd) is None:
        return Check(name, False, "not installed", install, essential)
    version = compiler_version(cmd) or cmd
    exe, err = compile_racy_c(cmd, workdir)
    if exe is None:
        hint = "apt-get install libgcc-12-dev (libtsan2)" if name == "gcc" else install
        return Check(
            name,
            False,
            f"{version}: cannot build with -fsanitize=thread: {_first_line(err)}",
            hint,
            essential,
        )
    run = run_tsan_binary(exe)
    if run.raced:
        return Check(name, True, f"{version}; TSAN reports a test race", None, essential)
    if run.fatal:
        again = run_tsan_binary(exe, setarch_argv())
        if again.raced:
            return Check(
                name,
                False,
                f"{version}; TSAN dies at start-up, works under setarch -R",
                "sysctl vm.mmap_rnd_bits=28 (or let repro use setarch -R)",
                essential,
            )
        return Check(
            name,
            False,
            f"{version}; TSAN dies at start-up: {_first_line(run.output)}",
            "sysctl vm.mmap_rnd_bits=28",
            essential,
        )
    return Check(
        name,
        False,
        f"{version}; the racy test program gave no TSAN report",
        "check the compiler's TSAN runtime (libtsan)",
        essential,
    )


def check_mmap(workdir: Path) -> Check:
    bits = mmap_rnd_bits()
    if bits is None:
        return Check("vm.mmap_rnd_bits", True, "unknown (not Linux?)", None, False)
    if bits <= 28:
        return Check("vm.mmap_rnd_bits", True, f"{bits} (<= 28: TSAN starts)", None, False)
    needed = needs_setarch(refresh=True)
    plain_ok, setarch_ok = probe_tsan_start()
    detail = f"{bits} (> 28: older TSAN runtimes die at start-up)"
    if plain_ok:
        return Check("vm.mmap_rnd_bits", True, detail + "; TSAN starts anyway here", None, False)
    if setarch_ok:
        detail += "; TSAN works under setarch -R" + (", which repro will use" if needed else "")
        return Check(
            "vm.mmap_rnd_bits",
            True,
            detail,
            "sysctl vm.mmap_rnd_bits=28 (as root) makes setarch unnecessary",
            False,
        )
    return Check(
        "vm.mmap_rnd_bits",
        False,
        detail + "; TSAN fails with and without setarch -R",
        "sysctl -w vm.mmap_rnd_bits=28 (as root)",
        True,
    )


def _build_racy_rust(workdir: Path) -> tuple[Path | None, str]:
    """The racy Rust program (built once per doctor run), or None and rustc's complaint."""
    exe = workdir / "racy-rs"
    if exe.exists():
        return exe, ""
    src = workdir / "racy.rs"
    src.write_text(RACY_RUST)
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    proc = _run(
        [
            "rustc",
            "--edition",
            "2021",
            "-g",
            "-Zsanitizer=thread",
            "-Cunsafe-allow-abi-mismatch=sanitizer",
            "--target",
            rust_host() or "",
            str(src),
            "-o",
            str(exe),
        ],
        env=env,
        timeout=300,
    )
    if proc.returncode != 0:
        return None, proc.stderr
    return exe, ""


def check_rust(workdir: Path) -> Check:
    name = "rust TSAN"
    if shutil.which("rustc") is None:
        return Check(
            name,
            False,
            "rustc not installed (needed for Rust extensions only)",
            "install rustup / cargo (apt-get install rustc cargo)",
            False,
        )
    host = rust_host()
    version = (rustc_info() or {}).get("rustc", "rustc")
    exe, err = _build_racy_rust(workdir)
    if exe is None:
        return Check(
            name,
            False,
            f"{version}: -Zsanitizer=thread fails: {_first_line(err)}",
            "a toolchain that accepts RUSTC_BOOTSTRAP=1 -Zsanitizer=thread",
            False,
        )
    run = run_tsan_binary(exe, setarch_prefix() or None)
    if run.raced:
        return Check(name, True, f"{version}, target {host}; TSAN reports a test race", None, False)
    return Check(
        name,
        False,
        f"{version}: the racy Rust program gave no TSAN report: {_first_line(run.output)}",
        None,
        False,
    )


def rust_host() -> str | None:
    """The host triple: sanitizers need an explicit --target, and this is the right one."""
    return (rustc_info() or {}).get("host")


# --- symbolization ------------------------------------------------------------------


def _frame_text(frame: Frame) -> str:
    if frame_resolved(frame):
        return f"{frame.function} {Path(frame.file or '').name}:{frame.line}"
    where = f"{frame.module}+{frame.offset}" if frame.module else "no module"
    return f"{frame.function or '?'} ({where})"


def check_symbols(name: str, exe: Path | None, toolchain: Toolchain | None) -> Check:
    """Do the racy program's top frames come out as function and file:line, with the
    symbolizer that repro would pick for this toolchain? Says what to install if not."""
    label = f"{name} symbols"
    if exe is None or toolchain is None:
        return Check(
            label,
            False,
            f"nothing to check: {name} cannot build a TSAN program",
            f"see the {name} check",
            False,
        )
    choice = choose(find_symbolizers(), [toolchain])
    need = toolchain.llvm_major
    install = choice.install or (
        f"apt-get install llvm-{need}"
        if need is not None
        else "apt-get install llvm, then TSAN_OPTIONS=external_symbolizer_path="
        "/usr/lib/llvm-<N>/bin/llvm-symbolizer"
    )
    if choice.path:
        via = f"llvm-symbolizer of LLVM {choice.major} ({choice.path})"
    elif need is None:
        via = "gcc's libtsan (its own symbolizer)"
    else:
        via = "the TSAN runtime's own search (repro found no llvm-symbolizer)"
    opts = " ".join(f"{k}={v}" for k, v in choice.tsan_defaults().items())
    run = run_tsan_binary(exe, setarch_prefix() or None, tsan_options=opts)
    reports = [r for r in parse_log(run.output).reports if r.kind == "data race"]
    if not reports:
        return Check(
            label,
            False,
            f"the racy program gave no race report to read: {_first_line(run.output)}",
            f"see the {name} check",
            False,
        )
    tops = [a.stack[0] for a in (reports[0].current, reports[0].previous) if a and a.stack]
    bad = [f for f in tops if not frame_resolved(f)]
    if not tops or bad:
        shown = _frame_text(bad[0]) if bad else "no stack"
        return Check(
            label,
            False,
            f"{toolchain.name}: frames come out unsymbolized ({shown}) with {via}",
            install,
            False,
        )
    shown = _frame_text(tops[0])
    if not choice.suitable:
        why = (
            f"only with LLVM {choice.major}'s symbolizer, older than {toolchain.name}'s LLVM {need}"
            if choice.path
            else f"only through the TSAN runtime's own search: repro found no llvm-symbolizer "
            f"of LLVM {need} or newer to set and record"
        )
        return Check(
            label,
            False,
            f"{toolchain.name}: frames resolve ({shown}), {why}; other programs may come out "
            "<null>",
            install,
            False,
        )
    return Check(label, True, f"{toolchain.name}: frames resolve ({shown}) with {via}", None, False)


def check_c_symbols(name: str, cmd: str | None, workdir: Path) -> Check:
    exe = None
    if cmd is not None and shutil.which(cmd) is not None:
        exe, _err = compile_racy_c(cmd, workdir)
    return check_symbols(name, exe, c_toolchain(cmd) if cmd else None)


def check_rust_symbols(workdir: Path) -> Check:
    exe = _build_racy_rust(workdir)[0] if shutil.which("rustc") else None
    return check_symbols("rust", exe, rust_toolchain())


def check_tool(name: str, cmd: str, fix: str, *, essential: bool = True) -> Check:
    path = shutil.which(cmd)
    if path is None:
        return Check(name, False, "not installed", fix, essential)
    out = _run([cmd, "--version"])
    return Check(name, True, _first_line(out.stdout or out.stderr) or path, None, essential)


def check_disk(base: Path) -> Check:
    usage = shutil.disk_usage(base)
    free = usage.free / 1e9
    ok = free >= MIN_FREE_GB
    return Check(
        "disk space",
        ok,
        f"{free:.1f} GB free in {base}",
        None
        if ok
        else "free space or set REPRO_CACHE_DIR (a TSAN CPython build "
        "takes ~1-2 GB); `repro builds prune --older-than 30d`",
        free < 2.0,
    )


def run_checks(progress: Callable[[str], None] | None = None) -> list[Check]:
    """All checks, the cheap ones first; ``progress`` hears each name as it starts."""
    say = progress or (lambda _n: None)
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="repro-doctor-") as tmp:
        work = Path(tmp)
        for name, cmd, fix, essential in (
            ("git", "git", "apt-get install git", True),
            ("make", "make", "apt-get install make", True),
            ("patch", "patch", "apt-get install patch", True),
            ("xz", "xz", "apt-get install xz-utils", True),
            ("ccache", "ccache", "apt-get install ccache (speeds up rebuilds)", False),
        ):
            say(name)
            checks.append(check_tool(name, cmd, fix, essential=essential))
        say("disk")
        checks.append(check_disk(cache_dir()))
        say("vm.mmap_rnd_bits")
        checks.append(check_mmap(work))
        say("gcc")
        checks.append(check_c_compiler("gcc", "gcc", work, essential=True))
        say("gcc symbols")
        checks.append(check_c_symbols("gcc", "gcc", work))
        clang = find_clang()
        say("clang")
        checks.append(check_c_compiler("clang", clang, work, essential=False))
        say("clang symbols")
        checks.append(check_c_symbols("clang", clang, work))
        say("rust")
        checks.append(check_rust(work))
        say("rust symbols")
        checks.append(check_rust_symbols(work))
    return checks
