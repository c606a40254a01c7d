"""pytest plugin: the packages of a test path come from the wheel repro built.

Tests that live inside a package (``simplejson/tests/test_x.py``) are imported by
pytest as part of that package; pytest's importlib mode then imports the package's
``__init__.py`` from the checkout beside the test file, whatever ``-P`` keeps off
``sys.path``. The checkout holds no compiled modules, so a package with a
pure-Python fallback ran its tests without the code under test, clean in every run.
pytest reuses a parent package that is already imported, so this plugin imports the
test paths' packages from the built site first, before any conftest is loaded.
Loaded with PYTEST_PLUGINS where REPRO_BUILT_SITE names the site; stands alone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest


def _packages_of(path: Path) -> list[str]:
    """The dotted names of the packages that hold ``path``, outermost first: what
    pytest's importlib mode imports as the test module's parents."""
    folder = path if path.is_dir() else path.parent
    parts: list[str] = []
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _import_from(site: str, name: str) -> bool:
    sys.path.insert(0, site)
    try:
        importlib.import_module(name)
    except Exception:  # collection shows the error itself
        return False
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(site)
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    site = os.environ.get("REPRO_BUILT_SITE")
    if not site:
        return
    base = Path(early_config.invocation_params.dir)
    for arg in args:
        if arg.startswith("-"):
            continue
        path = base / arg.split("::", 1)[0]
        if not path.exists():
            continue
        for name in _packages_of(path):
            if name in sys.modules:
                continue
            # Only what the wheel installs: a test folder the wheel leaves out is
            # imported from the checkout, below the built package.
            if not (Path(site) / name.split(".")[0]).is_dir() or not _import_from(site, name):
                break
