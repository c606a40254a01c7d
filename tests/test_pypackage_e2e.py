"""The bundled Python-package race end to end, on the cached free-threaded TSAN CPython (slow).

demo/make_pkg_repo.py makes `tally` (setuptools, a C module): the package is built
with TSAN into an environment of that CPython, its pytest test is stressed under
pytest-run-parallel, and the bisect must name the commit that took the lock again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builds_fixtures import cpython_tsan_build, test_cache_base  # noqa: F401  (fixtures)
from conftest import ROOT, repro

from repro.builds.cpython import PythonBuild

pytestmark = pytest.mark.slow

RECIPE = ROOT / "recipes" / "demo-pkg.yaml"
FIX_SUBJECT = "Always take the lock in add()"


def make_tally(tmp_path: Path) -> Path:
    dest = tmp_path / "tally"
    subprocess.run([sys.executable, str(ROOT / "demo" / "make_pkg_repo.py"), str(dest)], check=True)
    return dest


def run(tmp_path: Path, build: PythonBuild, repo: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / f"{args[0]}.json"
    res = repro(
        *args[:1],
        str(RECIPE),
        "--set",
        f"python={{executable: {build.python}}}",
        "--set",
        f"extension.repo={repo}",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json-out",
        str(out),
        *args[1:],
        env={"REPRO_CACHE_DIR": str(test_cache_base())},
        timeout=3000,
    )
    assert "Traceback" not in res.stderr, res.stderr
    assert out.exists(), res.stdout + res.stderr
    return res.returncode, json.loads(out.read_text()), res.stdout + res.stderr


def test_stress_then_bisect_the_package(tmp_path: Path, cpython_tsan_build: PythonBuild) -> None:  # noqa: F811
    repo = make_tally(tmp_path)
    code, data, text = run(tmp_path, cpython_tsan_build, repo, "stress", "--runs", "3", "-j", "2")
    assert code == 0, text
    assert data["hits"] >= 1
    assert "95% CI" in text
    sigs = [s for s in data["signatures"] if s["target"]]
    frames = {f for s in sigs for side in s["top_frames"] for f in side}
    assert {"tally_add", "tally_total"} <= frames, frames
    # The hit's log names the test during which TSAN reported.
    outputs = list((tmp_path / "runs").rglob("output.txt"))
    assert any(
        "repro-tsan-report-in: tests/test_tally.py::test_add_counts_every_call" in p.read_text()
        for p in outputs
    )

    code, data, text = run(tmp_path, cpython_tsan_build, repo, "bisect")
    assert code == 0, text
    assert data["culprit"]["subject"] == FIX_SUBJECT
    assert data["confidence"] >= 0.99
    # Each commit's build records the package's backend, and the report's plain script
    # builds the package with it (a bisect has no one build for the whole run).
    run_dir = next((tmp_path / "runs").glob("*-bisect-*"))
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    builds = [e for e in events if e["event"] == "build" and e["ok"]]
    assert builds and all(e.get("backend") == "setuptools" for e in builds), builds
    report = repro("report", str(run_dir), "--format", "markdown")
    assert report.returncode == 0, report.stderr
    assert "its setuptools build with TSAN" in report.stdout
    assert "(built as a C extension" not in report.stdout


def test_extension_built_without_tsan_is_refused(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    repo = make_tally(tmp_path)
    setup = repo / "setup.py"
    drop = 'import os\nos.environ["CFLAGS"] = os.environ["LDFLAGS"] = ""\n'
    setup.write_text(drop + setup.read_text())
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "drop flags"], check=True)
    res = repro(
        "stress",
        str(RECIPE),
        "--set",
        f"python={{executable: {cpython_tsan_build.python}}}",
        "--set",
        f"extension.repo={repo}",
        "--set",
        "extension.ref=main",
        "--runs",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        env={"REPRO_CACHE_DIR": str(test_cache_base())},
        timeout=1200,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "was built without TSAN" in res.stdout + res.stderr
    assert "tally._tally" in res.stdout + res.stderr


class Notes:
    """A BuildProgress that keeps the warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def begin(self, what: str, key: str) -> None:
        pass

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def compiled(self, count: int, total: int | None) -> None:
        pass

    def waiting(self, why: str) -> None:
        self.warnings.append(why)

    def finish(self, *, ok: bool, message: str, log: Path | None, tail: list[str]) -> None:
        pass


def test_module_that_turns_the_gil_back_on_is_named(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    from repro.builds.cache import BuildCache
    from repro.builds.pypackage import PYTEST_TOOLS, ensure_python_package
    from repro.gitrepo import GitRepo
    from repro.recipe import ExtensionSpec

    repo_dir = make_tally(tmp_path)
    module = repo_dir / "src" / "tally" / "_tally.c"
    module.write_text(module.read_text().replace("{Py_mod_gil, Py_MOD_GIL_NOT_USED},", ""))
    subprocess.run(["git", "-C", str(repo_dir), "commit", "-qam", "no Py_mod_gil"], check=True)
    cache = BuildCache(test_cache_base())
    repo = GitRepo.open_cached(str(repo_dir), cache.base)
    notes = Notes()
    build = ensure_python_package(
        ExtensionSpec(repo=str(repo_dir), kind="python-package"),
        repo,
        repo.resolve("main"),
        python=cpython_tsan_build,
        cache=cache,
        requirements=list(PYTEST_TOOLS),
        progress=notes,
    )
    assert build.gil_module == "tally._tally"

    # Said at each stress (the build now comes from the cache), unless the reproducer's
    # environment keeps the GIL off, as the warning advises.
    said = "importing tally._tally turns the GIL back on"
    _, data, text = run(tmp_path, cpython_tsan_build, repo_dir, "stress", "--runs", "1",
                        "--set", "extension.ref=main")  # fmt: skip
    assert said in " ".join(text.split()) and "PYTHON_GIL=0" in text, text
    assert data["outcomes"]["gil-enabled"] == 1, data["outcomes"]
    _, data, text = run(tmp_path, cpython_tsan_build, repo_dir, "stress", "--runs", "1",
                        "--set", "extension.ref=main",
                        "--set", "reproducer.env={PYTHON_GIL: '0'}")  # fmt: skip
    assert said not in " ".join(text.split()), text
    assert not data["outcomes"]["gil-enabled"], data["outcomes"]


MESON_PKG = {
    "pyproject.toml": '[build-system]\nrequires = ["meson-python"]\nbuild-backend = "mesonpy"\n'
    '[project]\nname = "mtick"\nversion = "0.1"\n',
    "meson.build": "project('mtick', 'c')\n"
    "py = import('python').find_installation(pure: false)\n"
    "py.extension_module('_mtick', 'mtick.c', install: true)\n",
    "mtick.c": "#include <Python.h>\n"
    "static long n;\n"
    "static PyObject *bump(PyObject *m, PyObject *a) { n++; return PyLong_FromLong(n); }\n"
    'static PyMethodDef methods[] = {{"bump", bump, METH_NOARGS, ""}, {0}};\n'
    "static PyModuleDef_Slot slots[] = {{Py_mod_gil, Py_MOD_GIL_NOT_USED}, {0, 0}};\n"
    'static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_mtick", 0, 0, methods, slots};\n'
    "PyMODINIT_FUNC PyInit__mtick(void) { return PyModuleDef_Init(&mod); }\n",
}


SKBUILD_PKG = {
    "pyproject.toml": '[build-system]\nrequires = ["scikit-build-core"]\n'
    'build-backend = "scikit_build_core.build"\n[project]\nname = "mtick"\nversion = "0.1"\n',
    "CMakeLists.txt": "cmake_minimum_required(VERSION 3.15)\nproject(mtick LANGUAGES C)\n"
    "find_package(Python COMPONENTS Interpreter Development.Module REQUIRED)\n"
    "Python_add_library(_mtick MODULE mtick.c WITH_SOABI)\n"
    "install(TARGETS _mtick DESTINATION .)\n",
    "mtick.c": MESON_PKG["mtick.c"],
}


# An in-tree backend (pyproject's backend-path) that wraps setuptools and asks for one
# more requirement through get_requires_for_build_wheel, as aio-libs' do for Cython.
IN_TREE_PKG = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbackend-path = ["_build"]\n'
    'build-backend = "intree"\n[project]\nname = "mtick"\nversion = "0.1"\n',
    "setup.py": "from setuptools import Extension, setup\n"
    'setup(ext_modules=[Extension("_mtick", ["mtick.c"])])\n',
    "_build/intree.py": "from setuptools import build_meta as _st\n"
    "from setuptools.build_meta import *  # noqa: F403\n\n"
    "def get_requires_for_build_wheel(config_settings=None):\n"
    "    return _st.get_requires_for_build_wheel(config_settings) + [\n"
    "        'tomli-w; python_version >= \"3\"',\n"
    "        'repro-no-such-package; python_version < \"3\"']\n\n"
    "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
    "    import tomli_w\n"
    "    print('intree: built with', tomli_w.__name__, flush=True)\n"
    "    return _st.build_wheel(wheel_directory, config_settings, metadata_directory)\n",
    "mtick.c": MESON_PKG["mtick.c"],
}

# A backend of its own that compiles with $CC $CFLAGS, runs under the Python under test,
# and wants a requirement only for Pythons from 3.12 on: pip on the 3.11 host would read
# that marker for itself and drop it (and install the one for older Pythons, which does
# not exist).
OWN_BACKEND_PKG = {
    "pyproject.toml": '[build-system]\nrequires = []\nbackend-path = ["_build"]\n'
    'build-backend = "ccback"\n',
    "_build/ccback.py": """\
import os, shlex, subprocess, sysconfig, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return ['tomli-w; python_version >= "3.12"',
            'repro-no-such-package; python_version < "3.12"']

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    import tomli_w
    so = "_mtick" + sysconfig.get_config_var("EXT_SUFFIX")
    cmd = [*shlex.split(os.environ.get("CC", "cc")), *shlex.split(os.environ.get("CFLAGS", "")),
           *shlex.split(os.environ.get("LDFLAGS", "")), "-shared", "-fPIC",
           "-I", sysconfig.get_paths()["include"], "mtick.c", "-o", so]
    subprocess.run(cmd, check=True)
    name = "mtick-0.1-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.write(so, so)
        z.writestr("mtick-0.1.dist-info/METADATA", "Metadata-Version: 2.1\\nName: mtick\\n")
    print("ccback: built with", tomli_w.__name__, flush=True)
    return name
""",
    "mtick.c": MESON_PKG["mtick.c"],
}


@pytest.mark.parametrize(
    ("files", "backend", "in_log"),
    [
        (MESON_PKG, "meson-python", "b_sanitize  : thread"),
        (SKBUILD_PKG, "scikit-build-core", 'Install configuration: "RelWithDebInfo"'),
        (IN_TREE_PKG, "intree", "intree: built with tomli_w"),
        (OWN_BACKEND_PKG, "ccback", "ccback: built with tomli_w"),
    ],
)
def test_other_backends_build_with_tsan(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
    files: dict[str, str],
    backend: str,
    in_log: str,
) -> None:
    """meson-python gets -Db_sanitize=thread, scikit-build-core CFLAGS, any other backend
    CFLAGS too; their requirements (and ninja, cmake, and what a backend asks for through
    get_requires_for_build_wheel, its markers read for the Python that runs it) come
    from PyPI; the module must carry TSAN's symbols."""
    from repro.builds.cache import BuildCache
    from repro.builds.pypackage import ensure_python_package
    from repro.gitrepo import GitRepo
    from repro.recipe import ExtensionSpec

    root = tmp_path / "mtick"
    root.mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "-C", str(root), *ident, "commit", "-qm", "mtick"], check=True)
    cache = BuildCache(test_cache_base())
    repo = GitRepo.open_cached(str(root), cache.base)
    build = ensure_python_package(
        ExtensionSpec(repo=str(root), kind="python-package"),
        repo,
        repo.resolve("HEAD"),
        python=cpython_tsan_build,
        cache=cache,
    )
    assert build.backend == backend
    assert build.log is not None and in_log in build.log.read_text()
    so = next(Path(build.env["PYTHONPATH"].split(":")[0]).glob("_mtick*.so"))
    nm = subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True, check=True)
    assert "__tsan_" in nm.stdout


FALLBACK_INIT = '''\
"""Thread-safe counting: the C module, or pure Python where it does not build."""

try:
    from tally._tally import add, reset, total
except ImportError:
    import threading

    _lock = threading.Lock()
    _count = 0

    def add(n):
        global _count
        with _lock:
            _count += n

    def total():
        with _lock:
            return _count

    def reset():
        global _count
        with _lock:
            _count = 0

__all__ = ["add", "reset", "total"]
'''


def _commit(repo: Path, subject: str) -> str:
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", subject], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_commit_whose_c_module_did_not_build_is_not_called_fixed(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    """A package whose optional C extension fails to build installs as pure Python: its
    runs are clean because the native code is not there, and a bisect named such a
    commit the fix. A commit whose wheel has no extension module, where the racy end's
    had one, is skipped like a commit that does not build."""
    repo = make_tally(tmp_path)
    subprocess.run(["git", "-C", str(repo), "checkout", "-qb", "fallback", "v0.2"], check=True)
    source = repo / "src" / "tally" / "_tally.c"
    racy_c = source.read_text()
    setup = repo / "setup.py"
    setup.write_text(setup.read_text().replace('"])]', '"], optional=True)]'))
    (repo / "src" / "tally" / "__init__.py").write_text(FALLBACK_INIT)
    source.write_text(racy_c + "\nstatic int tally_unused = ;\n")  # a typo: no C module
    c1 = _commit(repo, "Fall back to pure Python where the C module does not build")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nPure Python too.\n")
    c2 = _commit(repo, "README: the fallback")
    fixed_c = racy_c.replace(
        "    if (n == 1) {\n        /* A single increment is too small to need the lock. */\n"
        "        tally_count += 1;\n        Py_RETURN_NONE;\n    }\n",
        "",
    )
    assert fixed_c != racy_c
    source.write_text(fixed_c)
    c3 = _commit(repo, "Mend the C module, and always take the lock in add()")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\n0.3: fixed.\n")
    _commit(repo, "README: changelog")

    code, data, text = run(
        tmp_path, cpython_tsan_build, repo, "bisect", "--racy", "v0.2", "--fixed", "fallback"
    )
    assert code == 1, text
    assert data["culprit"] is None, data["culprit"]
    assert [c["id"] for c in data["culprit_range"]] == [c1, c2, c3], text
    skipped = {s["id"]: s for s in data["steps"] if s["verdict"] == "skipped"}
    assert set(skipped) <= {c1, c2} and skipped, data["steps"]
    said = " ".join(text.split())
    assert "its wheel holds no extension module (the racy end's had tally._tally)" in said, said


def test_build_commands_make_what_the_checkout_lacks_before_the_backend(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    """Sweep 14: msgpack's C file is made by Cython (`make cython`) and kept out of git;
    its setup.py only compiles it. With no way to run a command first, the package
    could not be built at all. The recipe's `build` commands now run before the backend."""
    repo = make_tally(tmp_path)
    subprocess.run(["git", "-C", str(repo), "checkout", "-qb", "generated", "v0.2"], check=True)
    source = repo / "src" / "tally" / "_tally.c"
    source.rename(source.with_name("_tally.c.in"))
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    _commit(repo, "Generate _tally.c at build time")
    make = "extension.build=[cp src/tally/_tally.c.in src/tally/_tally.c]"
    code, data, text = run(
        tmp_path, cpython_tsan_build, repo, "stress", "--ref", "generated", "--set", make,
        "--until-first", "--runs", "10",
    )  # fmt: skip
    assert code == 0 and data["hits"] == 1, text
    # Without it the backend finds no C file, and the build says what to do.
    res = repro(
        "stress", str(RECIPE), "--set", f"python={{executable: {cpython_tsan_build.python}}}",
        "--set", f"extension.repo={repo}", "--ref", "generated", "--runs", "1",
        "--runs-dir", str(tmp_path / "runs"),
        env={"REPRO_CACHE_DIR": str(test_cache_base())}, timeout=3000,
    )  # fmt: skip
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "Traceback" not in said, said
    assert "src/tally/_tally.c is not in the checkout" in said, said
    assert "_tally.c.in is there" in said and "extension.build" in said, said


def test_tests_inside_the_package_run_the_built_wheel(
    tmp_path: Path,
    cpython_tsan_build: PythonBuild,  # noqa: F811
) -> None:
    """Tests that live in the package (tally/tests/) made pytest import the package from
    the checkout, which has no compiled module: with a pure-Python fallback every run
    was clean (0 of 16 runs hit at a racy commit). The test path's packages now come from
    the wheel; and a run that still imports the checkout is counted apart, not clean."""
    repo = make_tally(tmp_path)
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "checkout", "-qb", "flat", "v0.2"], check=True)
    subprocess.run([*git, "mv", "src/tally", "tally"], check=True)
    (repo / "tally" / "tests").mkdir()
    subprocess.run([*git, "mv", "tests/test_tally.py", "tally/tests/test_tally.py"], check=True)
    (repo / "tally" / "tests" / "__init__.py").write_text("")
    (repo / "tally" / "__init__.py").write_text(FALLBACK_INIT)
    (repo / "setup.py").write_text(
        "from setuptools import Extension, setup\n\n"
        'setup(packages=["tally", "tally.tests"],\n'
        '      ext_modules=[Extension("tally._tally", ["tally/_tally.c"])])\n'
    )
    _commit(repo, "Flat layout, tests inside the package, a pure-Python fallback")
    where = ["--set", "extension.ref=flat"]
    inside = "reproducer.pytest.tests=[tally/tests/test_tally.py::test_add_counts_every_call]"
    code, data, text = run(
        tmp_path, cpython_tsan_build, repo, "stress", "--until-first", "--runs", "16",
        "-j", "2", *where, "--set", inside,
    )  # fmt: skip
    assert code == 0, text
    assert data["hits"] >= 1, text
    assert not data["outcomes"].get("source-tree"), data["outcomes"]

    # `python -c` in the checkout puts the checkout first on sys.path.
    command = "reproducer={command: '{python} -c \"import tally; tally.add(1)\"', timeout: 120}"
    code, data, text = run(
        tmp_path, cpython_tsan_build, repo, "stress", "--runs", "2", "-j", "1", *where,
        "--set", command,
    )  # fmt: skip
    said = " ".join(text.split())
    assert code == 2, text
    assert data["outcomes"].get("source-tree") == 1, data["outcomes"]
    assert not data["outcomes"].get("clean"), data["outcomes"]
    assert "a run was source-tree" in said, said
    assert "tally/__init__.py" in said, said
