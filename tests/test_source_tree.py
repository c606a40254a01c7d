"""A Python package's runs import the wheel repro built, not the checkout beside them.

Real pytest and real interpreters (the test suite's own Python), on a site folder and
a checkout made here: the package's `__init__.py` says which copy it is, as a compiled
module's presence would. The checkout's copy stands for a package whose pure-Python
fallback runs when the compiled module is missing, clean in every run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from repro.builds.pypackage import STANDALONE, built_package_env
from repro.tsan.outcome import Matcher, Outcome, classify, imported_elsewhere
from repro.tsan.parse import parse_log
from repro.tsan.signature import TargetRule

TEST = """\
import pkg


def test_the_built_package_runs():
    assert pkg.COPY == "built"
"""


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    site, checkout = tmp_path / "site", tmp_path / "src"
    for root, copy in ((site, "built"), (checkout, "checkout")):
        (root / "pkg" / "tests").mkdir(parents=True)
        (root / "pkg" / "__init__.py").write_text(f'COPY = "{copy}"\n')
        (root / "pkg" / "tests" / "__init__.py").write_text("")
        (root / "pkg" / "tests" / "test_copy.py").write_text(TEST)
    return site, checkout


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_tests_inside_the_package_import_the_built_copy(tmp_path: Path) -> None:
    site, checkout = _layout(tmp_path)
    env = {
        **built_package_env(site, ["pkg._native"]),
        "PYTHONPATH": os.pathsep.join([str(site), str(STANDALONE)]),
    }
    pytest_argv = [
        "-P",
        "-m",
        "pytest",
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        "-q",
        "pkg/tests/test_copy.py::test_the_built_package_runs",
    ]
    ran = _run(pytest_argv, checkout, env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert imported_elsewhere(ran.stdout + ran.stderr) is None

    # Without the plugin, pytest takes the package from beside the test file, and the
    # run says so at exit.
    ran = _run(pytest_argv, checkout, {**env, "PYTEST_PLUGINS": ""})
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    said = imported_elsewhere(output)
    assert said == f"imported pkg from {checkout / 'pkg' / '__init__.py'}", output


def test_a_run_that_imports_the_checkout_is_not_clean(tmp_path: Path) -> None:
    site, checkout = _layout(tmp_path)
    env = {
        **built_package_env(site, ["pkg._native"]),
        "PYTHONPATH": os.pathsep.join([str(site), str(STANDALONE)]),
    }
    matcher = Matcher(TargetRule(functions=("pkg_add",)))
    # `python -c` puts the current folder first on sys.path: the checkout's copy.
    ran = _run(["-c", "import pkg; print(pkg.COPY)"], checkout, env)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0 and "checkout" in ran.stdout, output
    verdict = classify(parse_log(""), ran.returncode, False, matcher, output)
    assert verdict.outcome is Outcome.SOURCE_TREE
    assert verdict.detail == f"imported pkg from {checkout / 'pkg' / '__init__.py'}"
    assert not verdict.outcome.is_evidence

    # Elsewhere the same command imports the wheel's copy, and the run is clean.
    ran = _run(["-c", "import pkg; print(pkg.COPY)"], tmp_path, env)
    output = ran.stdout + ran.stderr
    assert "built" in ran.stdout, output
    assert classify(parse_log(""), 0, False, matcher, output).outcome is Outcome.CLEAN

    # A package the wheel holds no extension module of is not checked.
    bare = {**built_package_env(site, []), "PYTHONPATH": env["PYTHONPATH"]}
    ran = _run(["-c", "import pkg"], checkout, bare)
    assert imported_elsewhere(ran.stdout + ran.stderr) is None


def test_the_plain_script_imports_the_package_as_repro_does(tmp_path: Path) -> None:
    """The report's script installs the package into a venv and runs the same pytest
    command in the checkout: it needs the same plugin, or tests inside the package run
    the checkout's copy and the loop says "not reproduced". Its lines, run in bash."""
    from repro.report.shell import _site_first_lines, shq

    site, checkout = _layout(tmp_path)
    run = (
        f'cd {shq(str(checkout))} && "$PYTHON" -P -m pytest --import-mode=importlib '
        "-p no:cacheprovider -q pkg/tests/test_copy.py"
    )
    head = [
        "set -e",
        f"WORK={shq(str(tmp_path / 'work'))}",
        f"PYTHON={shq(sys.executable)}",
        f"export PYTHONPATH={shq(str(site))}",
    ]
    # The venv's site-packages hold the package there; here the site folder stands in.
    with_plugin = [*head, *_site_first_lines(), f"export REPRO_BUILT_SITE={shq(str(site))}", run]
    ran = subprocess.run(["bash", "-c", "\n".join(with_plugin)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ran = subprocess.run(["bash", "-c", "\n".join([*head, run])], capture_output=True, text=True)
    assert ran.returncode == 1 and "checkout" in ran.stdout, ran.stdout + ran.stderr


def test_a_namespace_package_is_checked_where_its_extension_lives(tmp_path: Path) -> None:
    """`ns` is a namespace package spread over the site and the checkout; the extension
    lives in `ns.fast`. Importing `ns` from the checkout's folder is fine while `ns.fast`
    comes from the site, and is said when `ns.fast` comes from the checkout."""
    site, checkout = tmp_path / "site", tmp_path / "src"
    (site / "ns" / "fast").mkdir(parents=True)
    (site / "ns" / "fast" / "__init__.py").write_text('COPY = "built"\n')
    (checkout / "ns" / "docs").mkdir(parents=True)
    env = {
        **built_package_env(site, ["ns.fast._native"]),
        "PYTHONPATH": os.pathsep.join([str(site), str(STANDALONE)]),
    }
    assert env["REPRO_BUILT_PACKAGES"] == "ns.fast"
    ran = _run(["-c", "import ns.fast; print(ns.fast.COPY, list(ns.__path__))"], checkout, env)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0 and "built" in ran.stdout, output
    assert imported_elsewhere(output) is None, output
    (checkout / "ns" / "fast").mkdir()
    (checkout / "ns" / "fast" / "__init__.py").write_text('COPY = "checkout"\n')
    ran = _run(["-c", "import ns.fast; print(ns.fast.COPY)"], checkout, env)
    output = ran.stdout + ran.stderr
    assert "checkout" in ran.stdout, output
    assert imported_elsewhere(output) == f"imported ns.fast from {checkout / 'ns/fast/__init__.py'}"
