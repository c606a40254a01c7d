"""pytest plugin: say which test was running when ThreadSanitizer wrote a report.

repro points TSAN at ``log_path`` (one file per process), so a report never appears
in pytest's output. This plugin notes the size of those files around each test;
when they grew, it prints the test's node id on a line of its own, which repro
reads back into the run's detail. Loaded with PYTEST_PLUGINS; stands alone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Generator
from typing import Any

import pytest

MARK = "repro-tsan-report-in: "


def _log_prefix() -> str | None:
    m = re.search(r"(?:^|[\s:])log_path=([^\s:]+)", os.environ.get("TSAN_OPTIONS", ""))
    return m.group(1) if m else None


def _logged_bytes(prefix: str) -> int:
    total = 0
    for path in glob.glob(glob.escape(prefix) + "*"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path)
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Generator[None, None, None]:
    prefix = _log_prefix()
    before = _logged_bytes(prefix) if prefix else 0
    yield
    if prefix and _logged_bytes(prefix) > before:
        # Straight to the file descriptor: pytest's capture must not swallow it.
        os.write(1, f"\n{MARK}{item.nodeid}\n".encode())
