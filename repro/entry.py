"""The `repro` command's entry point: the CLI's imports take a noticeable moment, and a
Ctrl-C in that moment must end repro like any other interrupt (exit 130, one word),
not with a traceback of the import machinery."""

from __future__ import annotations

import sys
from typing import Any


def main() -> Any:
    try:
        from repro.cli.app import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    return run()
