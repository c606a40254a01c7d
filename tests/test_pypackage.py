"""extension.kind: python-package and the pytest reproducer (fast parts).

The slow end-to-end test with the TSAN CPython is in test_pypackage_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from repro.builds.cache import BuildError
from repro.builds.pypackage import extension_modules, find_backend, host_scripts, unpack_wheel
from repro.recipe import RecipeError, parse_recipe
from repro.tsan.pytest_attrib import reported_tests, run_detail

BASE = """\
name: t
extension: {kind: python-package, repo: /tmp}
target: {functions: [f]}
"""


def test_no_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no pyproject\.toml or setup\.py"):
        find_backend(tmp_path, "pkg abc123")


def test_setup_py_alone_means_setuptools_legacy(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")
    b = find_backend(tmp_path, "pkg")
    legacy = "setuptools.build_meta:__legacy__"
    assert (b.name, b.runner, b.module) == ("setuptools", "host", legacy)
    assert b.requires == ("setuptools>=40.8.0",)


@pytest.mark.parametrize(
    ("backend", "name", "runner"),
    [
        ("setuptools.build_meta", "setuptools", "host"),
        ("mesonpy", "meson-python", "target"),
        ("scikit_build_core.build", "scikit-build-core", "target"),
        ("maturin", "maturin", "target"),
    ],
)
def test_backends_found(tmp_path: Path, backend: str, name: str, runner: str) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["x>=1"]\nbuild-backend = "{backend}"\n'
    )
    b = find_backend(tmp_path, "pkg")
    assert (b.name, b.runner, b.requires[0]) == (name, runner, "x>=1")
    # Tools the backend would ask for dynamically, only when the machine lacks them.
    tools = {"meson-python": ["ninja"], "scikit-build-core": ["cmake", "ninja"]}.get(name, [])
    assert list(b.requires[1:]) == [t for t in tools if shutil.which(t) is None]


@pytest.mark.parametrize(
    ("requires", "backend", "runner"),
    [
        # frozenlist's: an in-tree backend (backend-path) that wraps setuptools, which the
        # host cross-builds as it does setuptools itself
        ('["expandvars", "setuptools >= 47"]', "pep517_backend.hooks", "host"),
        ('["hatchling"]', "hatchling.build", "target"),
    ],
)
def test_other_backends_build_where_their_requirements_say(
    tmp_path: Path, requires: str, backend: str, runner: str
) -> None:
    """They were refused ("not supported"), and a package with an in-tree backend could
    only be built by hand-written commands."""
    (tmp_path / "pyproject.toml").write_text(
        f'[build-system]\nrequires = {requires}\nbackend-path = ["packaging"]\n'
        f'build-backend = "{backend}"\n'
    )
    b = find_backend(tmp_path, "pkg 1234567")
    assert (b.name, b.module, b.runner) == (backend, backend, runner)
    assert list(b.requires) == json.loads(requires)


def test_bad_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[build-system\n")
    with pytest.raises(BuildError, match="not valid TOML"):
        find_backend(tmp_path, "pkg")


def test_wheel_unpacked_with_data_dirs(tmp_path: Path) -> None:
    wheel = tmp_path / "p-1-cp313-cp313t-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("p/__init__.py", "")
        zf.writestr("p/_c.cpython-313t-x86_64-linux-gnu.so", "")
        zf.writestr("p-1.data/platlib/q/_d.cpython-313t-x86_64-linux-gnu.so", "")
        zf.writestr("p.libs/libz-1.so", "")
        zf.writestr("p-1.dist-info/METADATA", "")
    site = tmp_path / "site"
    unpack_wheel(wheel, site)
    assert not list(site.glob("*.data"))
    assert [n for n, _ in extension_modules(site)] == ["p._c", "q._d"]


def test_pytest_reproducer_becomes_a_command() -> None:
    text = BASE + (
        "reproducer:\n  pytest:\n    tests: ['tests/t.py::test_a[{x}]', tests/u.py]\n"
        "    threads: 4\n    iterations: 7\n"
    )
    r = parse_recipe(text, Path("r.yaml"))
    assert r.reproducer.threads == 4
    assert r.reproducer.command == (
        "{python} -P -m pytest --import-mode=importlib -p no:cacheprovider -q -rs "
        "--parallel-threads={threads} "
        "--iterations=7 'tests/t.py::test_a[{{x}}]' tests/u.py"
    )


def test_pytest_and_command_together_refused() -> None:
    text = BASE + "reproducer:\n  command: x\n  pytest: {tests: [a]}\n"
    with pytest.raises(RecipeError, match="either `command` or `pytest`"):
        parse_recipe(text, Path("r.yaml"))


def test_pytest_needs_tests() -> None:
    text = BASE + "reproducer:\n  pytest: {tests: []}\n"
    with pytest.raises(RecipeError, match="tests"):
        parse_recipe(text, Path("r.yaml"))


def test_python_package_takes_build_commands_to_run_first() -> None:
    """They make what the checkout lacks (a Cython package's C file) before the backend
    builds; tests/test_pypackage_e2e.py builds such a package."""
    text = (
        BASE.replace("repo: /tmp}", "repo: /tmp, build: [make cython]}")
        + "reproducer: {command: x}\n"
    )
    assert parse_recipe(text, Path("r.yaml")).extension.build == ("make cython",)


def test_attribution_lines_read_back() -> None:
    out = "x\nrepro-tsan-report-in: t.py::a\n.\nrepro-tsan-report-in: t.py::b\n"
    out += "repro-tsan-report-in: t.py::a\n"
    assert reported_tests(out) == ["t.py::a", "t.py::b"]
    assert run_detail(out) == "TSAN report in test t.py::a (+1 more)"
    assert run_detail("1 passed") is None


def test_build_requirement_that_cannot_be_installed(tmp_path: Path) -> None:
    """The host's pip is asked for an impossible version: the error names the requirement."""
    from repro.builds.cache import BuildCache
    from repro.builds.progress import NullProgress
    from repro.builds.pypackage import Backend, PyEnv, ensure_build_deps

    env = PyEnv(tmp_path / "python", tmp_path, tmp_path, {}, "k")
    backend = Backend("setuptools.build_meta", "setuptools", "host", ("setuptools>=9999",))
    with pytest.raises(BuildError, match=r"pip could not install setuptools>=9999; log: "):
        ensure_build_deps(env, backend, BuildCache(tmp_path / "cache"), NullProgress())


def test_missing_tsan_symbol_at_import_explained() -> None:
    from repro.builds.pypackage import runtime_hint

    # The message seen here: a maturin module (LLVM's runtime) in gcc's TSAN CPython 3.13.5.
    err = "ImportError: /x/rtick.cpython-313t-x86_64-linux-gnu.so: undefined symbol: __tsan_memcpy"
    assert "compiler: clang" in runtime_hint(err)
    assert runtime_hint("ImportError: No module named 'numpy'") == ""
    # The message seen here: CXX=g++ in extension.env beside the clang TSAN CPython 3.13.5.
    err = (
        "ImportError: /lib/x86_64-linux-gnu/libtsan.so.2: cannot allocate memory in static "
        "TLS block"
    )
    assert "a second TSAN runtime" in runtime_hint(err) and "CC/CXX" in runtime_hint(err)


def test_cached_scripts_outlive_the_venv_that_installed_them(tmp_path: Path) -> None:
    """A build-requirements directory installed by a venv since deleted (a new clone)
    still gives working console scripts; other files are left alone."""
    bindir = tmp_path / "deps" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "tool").write_text(
        "#!/gone/.venv/bin/python\nimport sys\nprint('ran', sys.argv[1:])\n"
    )
    (bindir / "tool").chmod(0o755)
    (bindir / "ninja").write_bytes(b"\x7fELF not a script")
    with pytest.raises(FileNotFoundError):
        subprocess.run([str(bindir / "tool")], check=False)
    out = Path(host_scripts(bindir, tmp_path / "scratch" / "bin"))
    done = subprocess.run([str(out / "tool"), "x"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ran ['x']"
    assert not (out / "ninja").exists()


def _local_project(root: Path, name: str, backend_body: str) -> Path:
    """A project pip builds with an in-tree backend (nothing to download)."""
    proj = root / name
    proj.mkdir()
    (proj / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "1.0"\n'
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    )
    (proj / "backend.py").write_text(backend_body)
    return proj


def test_pip_killed_while_installing_is_no_failure_of_the_requirements(tmp_path: Path) -> None:
    """A Ctrl-C that ended pip's process group while it installed the environment's
    requirements was recorded as "pip could not install numpy, cffi", and every later
    run refused the build until --retry-failed."""
    from repro.builds.cache import BuildCache
    from repro.builds.pypackage import host_pip

    killer = _local_project(
        tmp_path,
        "killer",
        "import os, signal\n"
        "def get_requires_for_build_wheel(config_settings=None):\n"
        "    os.killpg(os.getpgrp(), signal.SIGKILL)\n",
    )
    cache = BuildCache(tmp_path / "cache")
    with pytest.raises(BuildError) as err:
        cache.ensure(
            "env", {"what": "env"},
            lambda ctx: host_pip(ctx, ctx.staging / "site", [str(killer)], [], "requirements"),
        )  # fmt: skip
    assert not err.value.record
    assert cache.failure("env") is None  # nothing remembered: the next run tries again
    # A requirement that cannot be had is a failure, and the message names it, not
    # the whole list.
    first, second = "no-such-package-repro-a==1.0", "no-such-package-repro-b==1.0"
    index = ["--index-url", (tmp_path / "empty-index").as_uri()]
    with pytest.raises(BuildError) as err:
        cache.ensure(
            "env2", {"what": "env"},
            lambda ctx: host_pip(ctx, ctx.staging / "site", [first, second], index, "reqs"),
        )  # fmt: skip
    said = str(err.value)
    assert f"could not install {first} as wheels" in said and second not in said, said
    assert cache.failure("env2") is not None


# --- a recipe's config settings beside repro's own ----------------------------------------


def _maturin_args(config: dict[str, str | tuple[str, ...]]) -> list[str]:
    import shlex

    from repro.builds.pypackage import tsan_settings

    _, settings = tsan_settings(
        "maturin", compiler="clang", rust_target="x86_64-unknown-linux-gnu", config_settings=config
    )
    assert "maturin.build-args" not in settings
    return shlex.split(settings["build-args"])


def test_a_recipes_maturin_build_args_keep_the_explicit_target() -> None:
    """Sweep 16 (cramjam): `build-args: "--no-default-features --features
    extension-module"` replaced repro's `--target`, and RUSTFLAGS' sanitizer reached the
    proc-macros: `undefined symbol: __tsan_func_entry`."""
    features = "--no-default-features --features extension-module"
    assert _maturin_args({"build-args": features}) == [
        "--target", "x86_64-unknown-linux-gnu", *features.split()
    ]  # fmt: skip
    # maturin reads maturin.build-args first, and a list as its arguments.
    assert _maturin_args({"maturin.build-args": ("--features", "a b"), "build-args": "-q"}) == [
        "--target", "x86_64-unknown-linux-gnu", "--features", "a b"
    ]  # fmt: skip
    # A target the recipe names is its own.
    assert _maturin_args({"build-args": "--target=aarch64-unknown-linux-gnu"}) == [
        "--target=aarch64-unknown-linux-gnu"
    ]
    assert _maturin_args({}) == ["--target", "x86_64-unknown-linux-gnu"]


def test_a_recipes_meson_setup_args_come_after_the_sanitizers() -> None:
    from repro.builds.pypackage import tsan_settings

    for given, extra in (("-Dfoo=1", ["-Dfoo=1"]), (("-Da=1", "-Db=2"), ["-Da=1", "-Db=2"])):
        _, settings = tsan_settings(
            "meson-python", compiler=None, rust_target=None, config_settings={"setup-args": given}
        )
        assert settings["setup-args"][:1] == ["-Db_sanitize=thread"]
        assert settings["setup-args"][-len(extra) :] == extra


def test_a_maturin_packages_strip_setting_leaves_the_symbols(tmp_path: Path) -> None:
    """cramjam's `[tool.maturin] strip = true` makes maturin pass `-C strip=symbols` to
    rustc; every frame of the module was then `<null>`, and repro said to install LLVM.
    The RUSTFLAGS repro gives maturin come after it, as cargo orders them: built here the
    way maturin builds (with TSAN), the library keeps its symbols."""
    from repro.builds.pypackage import tsan_settings

    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("no cargo")
    crate = tmp_path / "stripped"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "stripped"\nversion = "0.1.0"\nedition = "2021"\n\n'
        '[lib]\ncrate-type = ["cdylib"]\n'
    )
    (crate / "src" / "lib.rs").write_text(
        '#[no_mangle]\npub extern "C" fn repro_kept_symbol(x: i32) -> i32 { x + 1 }\n'
    )
    env, _ = tsan_settings("maturin", compiler=None, rust_target=None, config_settings={})
    build = [cargo, "rustc", "--release", "--lib", "--", "-C", "strip=symbols"]
    run_env = {**os.environ, **env, "CARGO_TARGET_DIR": str(tmp_path / "target")}
    proc = subprocess.run(build, cwd=crate, env=run_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lib = tmp_path / "target" / "release" / "libstripped.so"
    symbols = subprocess.run(["nm", str(lib)], capture_output=True, text=True).stdout
    assert "repro_kept_symbol" in symbols and "__tsan_" in symbols


def test_a_gcc_python_for_a_maturin_package_is_refused_before_any_build(
    tmp_path: Path,
) -> None:
    """Sweep 16: `python.compiler: gcc` with cramjam started a CPython build of minutes,
    after which the module could not load (`undefined symbol: __tsan_memcpy`). The
    package's pyproject.toml at the commit says maturin before anything is built."""
    from builds_fixtures import CPYTHON_VERSION, shared_dir
    from conftest import repro

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["maturin>=1,<2"]\nbuild-backend = "maturin"\n'
    )
    git = ["git", "-C", str(pkg), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a maturin package"], check=True)
    tarball = shared_dir() / "cpython" / f"Python-{CPYTHON_VERSION}.tar.xz"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: rusty\n"
        f"python: {{version: '{CPYTHON_VERSION}', source: {tarball}, free_threading: true, "
        "tsan: true}\n"
        f"extension: {{kind: python-package, repo: {pkg}, ref: HEAD}}\n"
        "reproducer: {command: '{python} -c pass'}\n"
        "target: {functions: [f]}\n"
    )
    empty = tmp_path / "cache"
    res = repro("stress", str(recipe), "-n", "1", env={"REPRO_CACHE_DIR": str(empty)})
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said
    assert "built by maturin" in said and "Set python.compiler: clang" in said, said
    assert "r.yaml" in said and "building CPython" not in said, said
    builds = empty / "builds"
    assert [p.name for p in builds.iterdir() if p.name not in ("failed", ".locks")] == []
