"""Where repro keeps its cache and its run directories.

The cache is shared by every repro process of the user (builds are expensive), so it
lives in the platform cache directory unless REPRO_CACHE_DIR says otherwise; run
directories belong to one job and default to ./repro-runs so users find them.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from repro.errors import ReproError


def cache_dir() -> Path:
    """The cache directory, made if needed; a ReproError saying what is wrong with it."""
    env = os.environ.get("REPRO_CACHE_DIR")
    base = Path(env) if env else Path(platformdirs.user_cache_dir("repro"))
    where = f"REPRO_CACHE_DIR={base}" if env else f"the cache directory {base}"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ReproError(f"{where}: exists and is not a directory") from None
    except OSError as exc:
        raise ReproError(f"{where}: cannot create it: {exc.strerror or exc}") from None
    return base


def runs_dir() -> Path:
    env = os.environ.get("REPRO_RUNS_DIR")
    return Path(env) if env else Path.cwd() / "repro-runs"
