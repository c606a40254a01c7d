"""The one owner of "has it TSAN in it", asked of files compiled here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tsan_helpers import PROGRAMS, compile_c, require

from repro.host.tsan_binary import is_elf, links_runtime, module_instrumented, names_tsan_init

MODULE = "int shared; void touch(void) { shared++; }\n"


def _plain(src: Path, out: Path, *extra: str) -> Path:
    cc = require("gcc")
    subprocess.run([cc, "-g", *extra, "-o", str(out), str(src), "-pthread"], check=True)
    return out


def test_programs_with_and_without_tsan(tmp_path: Path) -> None:
    with_tsan = compile_c(PROGRAMS / "racy_counter.c", tmp_path / "with")
    without = _plain(PROGRAMS / "racy_counter.c", tmp_path / "without")
    assert is_elf(with_tsan) and is_elf(without)
    assert links_runtime(with_tsan) and names_tsan_init(with_tsan)
    assert not links_runtime(without) and not names_tsan_init(without)
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\nexec ./with\n")
    assert not is_elf(script)


def test_modules_with_and_without_tsan(tmp_path: Path) -> None:
    src = tmp_path / "mod.c"
    src.write_text(MODULE)
    instrumented = _plain(src, tmp_path / "with.so", "-shared", "-fPIC", "-fsanitize=thread")
    plain = _plain(src, tmp_path / "without.so", "-shared", "-fPIC")
    assert module_instrumented(instrumented)
    assert not module_instrumented(plain)
