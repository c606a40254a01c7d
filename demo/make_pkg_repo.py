#!/usr/bin/env python3
"""Create the second demo repository: a Python package with a C extension and a race.

`tally` counts things from many threads; its C module keeps the count under a
PyMutex. The history (generated, fixed dates, so identical shas everywhere):

  commit 3  "Skip the lock for single increments"   introduces the race (v0.1 clean, v0.2 racy)
  commit 6  "Always take the lock in add()"          fixes it            (v0.3 fixed)

The race is reachable from the package's own pytest test, run in several threads at
once by pytest-run-parallel: two threads in `tally_add` update `tally_count`.

Usage: make_pkg_repo.py DEST [--force]
"""

from __future__ import annotations

import sys
from pathlib import Path

from history import main, write_history

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tally"
version = "{version}"
requires-python = ">=3.13"
"""

SETUP_PY = """\
from setuptools import Extension, setup

setup(
    packages=["tally"],
    package_dir={"": "src"},
    ext_modules=[Extension("tally._tally", ["src/tally/_tally.c"])],
)
"""

INIT_PY = """\
\"\"\"Thread-safe counting (the C module keeps the count).\"\"\"

from tally._tally import add, reset, total

__all__ = ["add", "reset", "total"]
"""

ADD_LOCKED = """\
static PyObject *
tally_add(PyObject *module, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyMutex_Lock(&tally_lock);
    tally_count += n;
    PyMutex_Unlock(&tally_lock);
    Py_RETURN_NONE;
}"""

ADD_RACY = """\
static PyObject *
tally_add(PyObject *module, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n == 1) {
        /* A single increment is too small to need the lock. */
        tally_count += 1;
        Py_RETURN_NONE;
    }
    PyMutex_Lock(&tally_lock);
    tally_count += n;
    PyMutex_Unlock(&tally_lock);
    Py_RETURN_NONE;
}"""

MODULE_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyMutex tally_lock;
static long long tally_count;

{add}

static PyObject *
tally_total(PyObject *module, PyObject *unused)
{{
    PyMutex_Lock(&tally_lock);
    long long n = tally_count;
    PyMutex_Unlock(&tally_lock);
    return PyLong_FromLongLong(n);
}}
{reset}
static PyMethodDef tally_methods[] = {{
    {{"add", tally_add, METH_O, "Add n to the count."}},
    {{"total", tally_total, METH_NOARGS, "The count."}},
{reset_entry}    {{NULL, NULL, 0, NULL}},
}};

static PyModuleDef_Slot tally_slots[] = {{
    {{Py_mod_gil, Py_MOD_GIL_NOT_USED}},
    {{0, NULL}},
}};

static struct PyModuleDef tally_module = {{
    PyModuleDef_HEAD_INIT, "_tally", NULL, 0, tally_methods, tally_slots,
}};

PyMODINIT_FUNC
PyInit__tally(void)
{{
    return PyModuleDef_Init(&tally_module);
}}
"""

RESET_FUNC = """
static PyObject *
tally_reset(PyObject *module, PyObject *unused)
{
    PyMutex_Lock(&tally_lock);
    tally_count = 0;
    PyMutex_Unlock(&tally_lock);
    Py_RETURN_NONE;
}
"""

TEST_PY = """\
import tally



def test_add_counts_every_call():
    before = tally.total()
    for _ in range(300):
        tally.add(1)
    assert tally.total() >= before + 300


def test_add_many_at_once():
    before = tally.total()
    tally.add(5)
    assert tally.total() >= before + 5
"""

README = "# tally\n\nCount things from many threads.\n"


def commit_plan() -> list[tuple[str, dict[str, object]]]:
    steps: list[tuple[str, dict[str, object]]] = []
    st: dict[str, object] = {"add": ADD_LOCKED, "reset": False, "version": "0.1", "notes": ""}

    def step(subject: str, tag: str | None = None, **changes: object) -> None:
        st.update(changes)
        steps.append((subject, {**st, "tag": tag}))

    step("Initial tally: a counter kept under a PyMutex", tag="v0.1")
    step("README: what tally is for", notes="\nInstall with pip.\n")
    step("Skip the lock for single increments", add=ADD_RACY, version="0.2")
    step("Add reset()", reset=True, tag="v0.2")
    step("README: reset()", notes="\nInstall with pip.\n\n`reset()` sets the count to 0.\n")
    step("Always take the lock in add()", add=ADD_LOCKED)
    step("Release 0.3", version="0.3", tag="v0.3")
    step("README: changelog", notes="\n0.3: fixed a data race in add().\n")
    return steps


def write_tree(root: Path, st: dict[str, object]) -> None:
    (root / "src" / "tally").mkdir(parents=True, exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT.format(version=st["version"]))
    (root / "setup.py").write_text(SETUP_PY)
    (root / "src" / "tally" / "__init__.py").write_text(
        INIT_PY
        if st["reset"]
        else INIT_PY.replace("add, reset, total", "add, total").replace(
            '"add", "reset", "total"', '"add", "total"'
        )
    )
    reset = bool(st["reset"])
    (root / "src" / "tally" / "_tally.c").write_text(
        MODULE_C.format(
            add=st["add"],
            reset=RESET_FUNC if reset else "",
            reset_entry='    {"reset", tally_reset, METH_NOARGS, "Set the count to 0."},\n'
            if reset
            else "",
        )
    )
    (root / "tests" / "test_tally.py").write_text(TEST_PY)
    (root / "README.md").write_text(README + str(st["notes"]))


def make_repo(dest: Path, force: bool = False) -> Path:
    return write_history(dest, commit_plan(), write_tree, month=2, force=force)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], __doc__, make_repo, "package repository"))
