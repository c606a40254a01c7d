"""At exit, say when a package repro built was imported from elsewhere.

A Python run in the package's checkout (``python -c``, a script beside the package,
pytest's import of tests inside the package) can import the package's source tree
instead of the built wheel. The source tree holds no compiled modules; with a
pure-Python fallback the run is clean because the code under test never ran, and
a bisect would call it fixed. This line lets repro count such a run apart.
Active where REPRO_BUILT_SITE and REPRO_BUILT_PACKAGES are set (repro's Python
package environments); any other sitecustomize on sys.path still runs.
"""

import atexit
import contextlib
import importlib.machinery
import importlib.util
import os
import sys

MARK = "repro: {name} was imported from {where}, not from the package repro built ({site})\n"


def _origin(module: object, root: str) -> "str | None":
    """Where ``module`` came from, when that is outside ``root``; None when inside. A
    namespace package (no ``__file__``) is inside when any of its parts is."""
    where = getattr(module, "__file__", None)
    if where:
        return None if os.path.realpath(str(where)).startswith(root) else str(where)
    parts = [str(p) for p in getattr(module, "__path__", None) or ()]
    if not parts or any(os.path.realpath(p).startswith(root) for p in parts):
        return None
    return parts[0]


def _check(site: str, names: "list[str]") -> None:
    root = os.path.realpath(site) + os.sep
    for name in names:
        module = sys.modules.get(name)
        where = _origin(module, root) if module is not None else None
        if where:
            with contextlib.suppress(OSError):
                os.write(2, MARK.format(name=name, where=where, site=site).encode())


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_site = os.environ.get("REPRO_BUILT_SITE")
_names = [n for n in os.environ.get("REPRO_BUILT_PACKAGES", "").split(",") if n]
if _site and _names:
    atexit.register(_check, _site, _names)
_chain()
