"""Requirements as the Python that will use them reads them.

repro installs with the host's pip for another interpreter (``--target`` with the
target's tags), and pip evaluates a requirement's environment markers against the
interpreter running pip, whatever ``--python-version`` says (pip issue 11664). A
build requirement ``Cython ~= 3.0.0; python_version >= "3.12"`` (aio-libs' in-tree
backends ask for that) was then dropped for a 3.13 target by a 3.11 host. So the
markers of the requirements repro hands to pip are evaluated here, for the
interpreter that will import them; those of their own dependencies remain pip's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# What a marker environment holds (PEP 508), computed by the interpreter it describes:
# printed as JSON by the code below when run there.
MARKER_PROBE = (
    "import os, platform, sys\n"
    "v = sys.implementation.version\n"
    "iv = '%d.%d.%d' % (v.major, v.minor, v.micro)\n"
    "if v.releaselevel != 'final': iv += v.releaselevel[0] + str(v.serial)\n"
    "markers = {'implementation_name': sys.implementation.name,\n"
    "  'implementation_version': iv, 'os_name': os.name,\n"
    "  'platform_machine': platform.machine(), 'platform_release': platform.release(),\n"
    "  'platform_system': platform.system(), 'platform_version': platform.version(),\n"
    "  'python_full_version': platform.python_version(),\n"
    "  'platform_python_implementation': platform.python_implementation(),\n"
    "  'python_version': '.'.join(platform.python_version_tuple()[:2]),\n"
    "  'sys_platform': sys.platform}\n"
)


def host_environment() -> dict[str, str]:
    """The marker environment of this interpreter (the one that runs setuptools builds)."""
    return {k: str(v) for k, v in default_environment().items()}


def applicable(requirements: Iterable[str], environment: Mapping[str, str]) -> list[str]:
    """The requirements whose markers hold in ``environment``, without their markers.

    A requirement that does not parse is passed on as written: pip's error about it
    names it better than a second parser would.
    """
    out: list[str] = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            out.append(text)
            continue
        if req.marker is not None:
            if not req.marker.evaluate({**environment, "extra": ""}):
                continue
            req.marker = None
        out.append(str(req))
    return out


def names(requirements: Iterable[str]) -> set[str]:
    """The projects the requirements name (normalized), those that parse."""
    out: set[str] = set()
    for text in requirements:
        try:
            out.add(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            continue
    return out
