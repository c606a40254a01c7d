"""The `repro` command's entry point: the CLI's imports take a noticeable moment, and a
Ctrl-C in that moment must end repro like any other interrupt (exit 130, one word),
not with a traceback of the import machinery."""

from __future__ import annotations

import sys
from typing import Any


def main() -> Any:
    import os

    columns = os.environ.get("COLUMNS", "")
    if columns and not (columns.isdigit() and int(columns) >= 40):
        # COLUMNS=0 made rich print nothing at all, errors included; 5 dropped counts.
        os.environ["COLUMNS"] = "80" if not columns.isdigit() or int(columns) == 0 else "40"
    try:
        from repro.cli.app import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    return run()
