"""Can this machine reproduce TSAN races at all?

Every check runs the real thing (compile a racy program, run it, look for the
report) because the failures that cost users an afternoon are the ones where a
tool is installed but does not work: a TSAN runtime that dies on start-up with
a high ``vm.mmap_rnd_bits``, or a Rust toolchain without sanitizer support.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repro.paths import cache_dir

RACE_MARK = "WARNING: ThreadSanitizer: data race"
FATAL_MARKS = (
    "FATAL: ThreadSanitizer",
    "ThreadSanitizer: CHECK failed",
    "unexpected memory mapping",
)

RACY_C = r"""
#include <pthread.h>
#include <stdio.h>
static long counter;
static void *work(void *arg) {
    (void)arg;
    for (int i = 0; i < 10000; i++) counter++;
    return NULL;
}
int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, work, NULL);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("%ld\n", counter);
    return 0;
}
"""

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


def mmap_rnd_bits() -> int | None:
    try:
        return int(Path("/proc/sys/vm/mmap_rnd_bits").read_text().strip())
    except (OSError, ValueError):
        return None


def _setarch() -> list[str]:
    return ["setarch", os.uname().machine, "-R"]


@dataclass(frozen=True)
class TsanRun:
    """How a TSAN binary behaved: a race report, a start-up failure, or neither."""

    raced: bool
    fatal: bool
    output: str


def _run_tsan_binary(binary: Path, prefix: list[str] | None = None) -> TsanRun:
    env = dict(os.environ)
    env.pop("TSAN_OPTIONS", None)
    try:
        proc = _run([*(prefix or []), str(binary)], env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return TsanRun(False, True, str(exc))
    out = proc.stdout + proc.stderr
    return TsanRun(RACE_MARK in out, any(m in out for m in FATAL_MARKS), out)


def compile_racy_c(compiler: str, workdir: Path) -> tuple[Path | None, str]:
    src = workdir / "racy.c"
    src.write_text(RACY_C)
    exe = workdir / f"racy-{Path(compiler).name}"
    try:
        proc = _run(
            [compiler, "-fsanitize=thread", "-g", "-O1", "-pthread", str(src), "-o", str(exe)]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()
    return exe, ""


def _find_clang() -> str | None:
    if shutil.which("clang"):
        return "clang"
    for n in range(30, 13, -1):
        if shutil.which(f"clang-{n}"):
            return f"clang-{n}"
    return None


def check_c_compiler(name: str, cmd: str | None, workdir: Path, *, essential: bool) -> Check:
    install = "apt-get install clang-19" if "clang" in name else "apt-get install gcc"
    if cmd is None or shutil.which(cmd) is None:
        return Check(name, False, "not installed", install, essential)
    version = _first_line(_run([cmd, "--version"]).stdout)
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
    run = _run_tsan_binary(exe)
    if run.raced:
        return Check(name, True, f"{version}; TSAN reports a test race", None, essential)
    if run.fatal:
        again = _run_tsan_binary(exe, _setarch())
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
    plain_ok, setarch_ok = _probe_tsan_start()
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
    version = _first_line(_run(["rustc", "--version"]).stdout)
    src = workdir / "racy.rs"
    src.write_text(RACY_RUST)
    exe = workdir / "racy-rs"
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
            host or "",
            str(src),
            "-o",
            str(exe),
        ],
        env=env,
        timeout=300,
    )
    if proc.returncode != 0:
        return Check(
            name,
            False,
            f"{version}: -Zsanitizer=thread fails: {_first_line(proc.stderr)}",
            "a toolchain that accepts RUSTC_BOOTSTRAP=1 -Zsanitizer=thread",
            False,
        )
    run = _run_tsan_binary(exe, _setarch() if needs_setarch() else None)
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
    if shutil.which("rustc") is None:
        return None
    for line in _run(["rustc", "-vV"]).stdout.splitlines():
        if line.startswith("host:"):
            return line.split(":", 1)[1].strip()
    return None


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
        say("clang")
        checks.append(check_c_compiler("clang", _find_clang(), work, essential=False))
        say("rust")
        checks.append(check_rust(work))
    return checks


# --- setarch ------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def needs_setarch(*, refresh: bool = False) -> bool:
    """Whether TSAN programs must run under ``setarch <arch> -R`` on this machine.

    Only a high ``vm.mmap_rnd_bits`` can make it necessary, so the usual answer costs
    one file read; otherwise a TSAN program is tried with and without, and the answer
    is kept per boot (the sysctl can change only with a reboot or by root).
    """
    bits = mmap_rnd_bits()
    if bits is None or bits <= 28:
        return False
    if shutil.which("setarch") is None:
        return False
    state = cache_dir() / "doctor" / "setarch.json"
    ident = {"boot_id": _boot_id(), "kernel": os.uname().release, "bits": bits}
    if not refresh:
        try:
            data = json.loads(state.read_text())
            if data.get("ident") == ident:
                return bool(data["needs_setarch"])
        except (OSError, ValueError, KeyError):
            pass
    answer = _probe_setarch()
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"ident": ident, "needs_setarch": answer}))
    os.replace(tmp, state)
    return answer


def _probe_tsan_start() -> tuple[bool, bool]:
    """(a TSAN program works as is, it works under setarch -R); (False, True) if untestable."""
    cc = "gcc" if shutil.which("gcc") else _find_clang()
    if cc is None:
        return False, True  # cannot try; with many random bits, setarch is the safe side
    with tempfile.TemporaryDirectory(prefix="repro-setarch-") as tmp:
        exe, _err = compile_racy_c(cc, Path(tmp))
        if exe is None:
            return False, True
        plain = _run_tsan_binary(exe)
        if plain.raced and not plain.fatal:
            return True, True
        return False, _run_tsan_binary(exe, _setarch()).raced


def _probe_setarch() -> bool:
    plain_ok, setarch_ok = _probe_tsan_start()
    return not plain_ok and setarch_ok
