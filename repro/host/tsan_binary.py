"""What a file on this machine says about TSAN: the one owner of "has it TSAN in it".

Three questions, each for its own caller, asked of the files themselves:

- ``links_runtime``: is the TSAN runtime in a program's process image (an interpreter
  given as ``executable:``, or one repro built)? gcc links libtsan.so dynamically (ldd
  shows it); clang links its runtime into the executable (a defined ``__tsan_init``).
  An instrumented shared libpython counts too: the program gets the runtime through it.
- ``module_instrumented``: was a shared extension module compiled with TSAN? It then
  calls into the runtime: ``__tsan_`` symbols among its dynamic ones (nm -D).
- ``names_tsan_init``: does a program name ``__tsan_init`` anywhere? Rust links its
  runtime statically and unexported, so neither ldd nor nm -D sees it; its bytes do.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

_INIT = b"__tsan_init"


def links_runtime(binary: Path, extra_libs: Sequence[Path] = ()) -> bool:
    for obj in (binary, *extra_libs):
        if not obj.exists():
            continue
        ldd = subprocess.run(["ldd", str(obj)], capture_output=True, text=True, check=False)
        if "libtsan" in ldd.stdout:
            return True
        for flags in (["-D", "--defined-only"], ["--defined-only"]):
            nm = subprocess.run(
                ["nm", *flags, str(obj)], capture_output=True, text=True, check=False
            )
            if re.search(r"\s[TtWw]\s+__tsan_init$", nm.stdout, re.M):
                return True
    return False


def module_instrumented(so: Path) -> bool:
    nm = subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True, check=False)
    return "__tsan_" in nm.stdout


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def without_tsan(path: Path) -> bool:
    """Whether ``path`` is a program with no TSAN in it: an ELF file that never names
    ``__tsan_init`` (which every instrumented binary calls). A shell script, or anything
    unreadable, is not judged."""
    return is_elf(path) and not names_tsan_init(path)


def names_tsan_init(path: Path) -> bool:
    """Whether an ELF file holds ``__tsan_init`` in its bytes (read in 1 MiB chunks; a
    file that cannot be read is taken to, so that nothing is blamed on a guess)."""
    try:
        with path.open("rb") as f:
            tail = b""
            while chunk := f.read(1 << 20):
                if _INIT in tail + chunk:
                    return True
                tail = chunk[-len(_INIT) :]
    except OSError:
        return True
    return False
