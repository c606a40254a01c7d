"""Requirements' markers read for the interpreter that will import them (pure, fast)."""

from __future__ import annotations

import json
import subprocess
import sys

from repro.builds.requirements import MARKER_PROBE, applicable, host_environment, names

TARGET_313 = {**host_environment(), "python_version": "3.13", "python_full_version": "3.13.5"}
HOST_310 = {**host_environment(), "python_version": "3.10", "python_full_version": "3.10.14"}

FROZENLIST_ASKS = [
    'Cython ~= 3.0.0; python_version >= "3.12"',
    'Cython; python_version < "3.12"',
    "tomli; python_version < '3.11'",
    "expandvars",
]


def test_markers_are_read_for_the_python_named() -> None:
    """What frozenlist's in-tree backend asks for: pip on a 3.11 host read these
    markers for itself and installed the wrong Cython for a 3.13 target."""
    assert applicable(FROZENLIST_ASKS, TARGET_313) == ["Cython~=3.0.0", "expandvars"]
    assert applicable(FROZENLIST_ASKS, HOST_310) == ["Cython", "tomli", "expandvars"]


def test_extras_and_specifiers_are_kept_and_a_bad_line_is_passed_on() -> None:
    """A line that does not parse goes to pip as written, whose error names it."""
    got = applicable(["pkg[fast]>=1.2,<2; os_name == 'posix'", "not a requirement !!"], TARGET_313)
    assert got == ["pkg[fast]<2,>=1.2", "not a requirement !!"]
    # a marker on an extra of the package being built is false outside that extra
    assert applicable(["pytest; extra == 'test'"], TARGET_313) == []


def test_names_are_normalized_and_bad_lines_skipped() -> None:
    assert names(["Cython~=3.0", "tomli_W>=1; python_version<'4'", "bad !!"]) == {
        "cython",
        "tomli-w",
    }


def test_the_probe_says_what_packaging_says_of_the_same_interpreter() -> None:
    """The probe runs in the Python under test, which has no `packaging`: on this
    interpreter its answer must be packaging's own."""
    proc = subprocess.run(
        [sys.executable, "-c", MARKER_PROBE + "import json; print(json.dumps(markers))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout) == host_environment()
