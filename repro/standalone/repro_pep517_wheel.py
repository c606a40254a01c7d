"""Build a wheel of the project in the current directory through its PEP 517 backend.

Usage: ``python repro_pep517_wheel.py OUTDIR CONFIG_JSON``. No isolation and no
installer: repro provides the build requirements on PYTHONPATH, so the only
Python code that runs is the backend's own (the interpreter running it may be a
TSAN build, where every imported module costs seconds).

``python repro_pep517_wheel.py --requires CONFIG_JSON`` prints what the backend asks
for beyond pyproject.toml's ``requires`` (``get_requires_for_build_wheel``: an in-tree
backend adds Cython there), for repro to install before the build.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tomllib
from typing import Any

DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"


def main(argv: list[str]) -> int:
    if argv[1] == "--requires":
        hook = getattr(load_backend(), "get_requires_for_build_wheel", None)
        wanted = list(hook(json.loads(argv[2]) or None)) if hook is not None else []
        print("REPRO-REQUIRES:" + json.dumps(wanted), flush=True)
        return 0
    out, settings = argv[1], json.loads(argv[2])
    os.makedirs(out, exist_ok=True)  # PEP 517: the frontend makes it
    wheel = load_backend().build_wheel(out, settings or None)
    print(f"REPRO-WHEEL:{wheel}", flush=True)
    return 0


def load_backend() -> Any:
    """The backend pyproject.toml names, imported as a PEP 517 frontend would."""
    try:
        with open("pyproject.toml", "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except FileNotFoundError:
        data = {}
    system = data.get("build-system", {})
    name = str(system.get("build-backend", DEFAULT_BACKEND))
    for path in reversed(system.get("backend-path", [])):
        sys.path.insert(0, os.path.abspath(path))
    if name == DEFAULT_BACKEND or not name.startswith("setuptools"):
        sys.path.insert(0, os.getcwd())  # what setup.py-style projects expect
    module, _, attr = name.partition(":")
    backend: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        backend = getattr(backend, part)
    return backend


if __name__ == "__main__":
    sys.exit(main(sys.argv))
