"""What a build applied: patch files described by name, digest and text.

The run's environment and the report both carry the patches themselves, not a path
that means nothing on another machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MAX_PATCH_CHARS = 64_000


def describe_patches(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Patch files with their text, so the report carries what was applied, not a path."""
    out = []
    for p in paths:
        path = Path(p)
        entry: dict[str, Any] = {"name": path.name, "path": str(path), "sha256": None, "text": None}
        try:
            data = path.read_bytes()
        except OSError:
            out.append(entry)
            continue
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        text = data.decode("utf-8", errors="replace")
        entry["text"] = text if len(text) <= _MAX_PATCH_CHARS else None
        out.append(entry)
    return out
