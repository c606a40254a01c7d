"""Whether TSAN programs must run under ``setarch <arch> -R`` here, and the argv for it.

Older TSAN runtimes die at start-up when the kernel randomises mmap with more than 28
bits; running without address-space randomisation avoids it. Builds (CPython's
configure runs TSAN programs), runs and the doctor all ask this module.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from repro.host.compilers import find_clang
from repro.host.tsan_probe import compile_racy_c, run_tsan_binary
from repro.paths import cache_dir

SAFE_MMAP_BITS = 28


def mmap_rnd_bits() -> int | None:
    try:
        return int(Path("/proc/sys/vm/mmap_rnd_bits").read_text().strip())
    except (OSError, ValueError):
        return None


def setarch_argv() -> list[str]:
    """The prefix that runs a program without address-space randomisation."""
    return ["setarch", platform.machine(), "-R"]


def setarch_prefix() -> list[str]:
    """:func:`setarch_argv` when this machine needs it, else nothing."""
    return setarch_argv() if needs_setarch() else []


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
    if bits is None or bits <= SAFE_MMAP_BITS:
        return False
    if shutil.which("setarch") is None:
        return False
    state = setarch_state_file()
    ident = {"boot_id": _boot_id(), "kernel": os.uname().release, "bits": bits}
    if not refresh:
        try:
            data = json.loads(state.read_text())
            if data.get("ident") == ident:
                return bool(data["needs_setarch"])
        except (OSError, ValueError, KeyError):
            pass
    plain_ok, setarch_ok = probe_tsan_start()
    answer = not plain_ok and setarch_ok
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"ident": ident, "needs_setarch": answer}))
    os.replace(tmp, state)
    return answer


def setarch_state_file() -> Path:
    """Where :func:`needs_setarch` keeps its answer for this boot."""
    return cache_dir() / "doctor" / "setarch.json"


def probe_tsan_start() -> tuple[bool, bool]:
    """(a TSAN program works as is, it works under setarch -R); (False, True) if untestable."""
    cc = "gcc" if shutil.which("gcc") else find_clang()
    if cc is None:
        return False, True  # cannot try; with many random bits, setarch is the safe side
    with tempfile.TemporaryDirectory(prefix="repro-setarch-") as tmp:
        exe, _err = compile_racy_c(cc, Path(tmp))
        if exe is None:
            return False, True
        plain = run_tsan_binary(exe)
        if plain.raced and not plain.fatal:
            return True, True
        return False, run_tsan_binary(exe, setarch_argv()).raced
