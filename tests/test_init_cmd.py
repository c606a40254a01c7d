"""`repro init` through the real command line, in a real git checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml
from conftest import repro

DATA = Path(__file__).resolve().parent / "data" / "tsan"


def checkout(tmp_path: Path, package: bool = True) -> Path:
    root = tmp_path / "pkg"
    root.mkdir()
    if package:
        (root / "pyproject.toml").write_text('[project]\nname = "pkg"\nversion = "1"\n')
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(
        ["git", "-C", str(root), "remote", "add", "origin", "git@github.com:someone/pkg.git"],
        check=True,
    )
    return root


def ci_log(tmp_path: Path) -> Path:
    log = tmp_path / "ci.log"
    log.write_text(
        "Python 3.13.5 experimental free-threading build (main, Jun 11 2025)\n"
        "tests/test_x.py::test_y \n" + (DATA / "gcc-half_locked.log").read_text()
    )
    return log


def test_init_from_log_in_a_package(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    out = root / "r.yaml"
    res = repro("init", "--from-log", str(ci_log(tmp_path)), "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"next: repro stress {out} --runs 20" in res.stdout
    data = yaml.safe_load(out.read_text())
    assert data["python"] == {"version": "3.13.5", "free_threading": True, "tsan": True}
    assert data["extension"]["kind"] == "python-package"
    assert data["extension"]["repo"] == "git@github.com:someone/pkg.git"
    assert data["extension"]["web_url"] == "https://github.com/someone/pkg"
    assert data["reproducer"]["pytest"]["tests"] == ["tests/test_x.py::test_y"]
    # A commit whose module lacks Py_mod_gil would switch the GIL on in every run.
    assert data["reproducer"]["env"] == {"PYTHON_GIL": "0"}, data["reproducer"]
    # Both accesses of the log's race: the target names each side's function.
    assert len(data["target"]["functions"]) == 2, data["target"]
    assert "from the log: Python 3.13.5 experimental free-threading build" in out.read_text()
    again = repro("init", "--from-log", str(ci_log(tmp_path)), "-o", str(out), cwd=root)
    assert again.returncode == 2 and "--force" in again.stderr


def test_init_in_a_maturin_package_builds_the_python_with_clang(tmp_path: Path) -> None:
    """Rust links LLVM's TSAN runtime, which a gcc-built TSAN CPython cannot load the
    module with (`undefined symbol: __tsan_memcpy`): the recipe init wrote built the
    default gcc CPython, and every build of the package failed."""
    root = checkout(tmp_path)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["maturin>=1,<2"]\nbuild-backend = "maturin"\n'
        '[project]\nname = "pkg"\nversion = "1"\n'
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text("def test_b():\n    pass\n")
    out = root / "r.yaml"
    res = repro("init", "--pytest", "tests/test_a.py::test_b", "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    data = yaml.safe_load(out.read_text())
    assert data["python"]["compiler"] == "clang", out.read_text()
    assert data["extension"]["kind"] == "python-package"


def test_init_pytest_only(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text("import threading\n\n\ndef test_b():\n    pass\n")
    out = root / "r.yaml"
    # A node id that names no test ran nothing in every run: said now, with what is wrong.
    for node, said in (
        ("tests/nothere.py::test_b", "tests/nothere.py is not a file under"),
        ("tests/test_a.py::test_nope", "tests/test_a.py defines no test test_nope"),
    ):
        res = repro("init", "--pytest", node, "-o", str(out), cwd=root)
        assert res.returncode == 2 and said in " ".join(res.stderr.split()), res.stderr
        assert not out.exists()
    res = repro("init", "--pytest", "tests/test_a.py::test_b", "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FILL_ME" in res.stdout
    # No log: the target is unknown, and the stress run is how to find it.
    assert f"next: repro stress {out} --runs 20 --suggest-target" in res.stdout
    data = yaml.safe_load(out.read_text())
    assert data["reproducer"]["pytest"]["tests"] == ["tests/test_a.py::test_b"]
    assert data["name"] == "pkg-race"
    # No log to read the version from: the comment does not send the user to one.
    assert 'version: "3.13.5"    # assumed: no log to read it from' in out.read_text()


def test_a_placeholder_left_in_a_command_is_refused_with_its_line(tmp_path: Path) -> None:
    """Outside a Python package, init cannot know the build or the command: both stay
    FILL_ME, and running them would fail in every run, so the recipe is refused until
    they are filled in, each with its line and field."""
    root = checkout(tmp_path, package=False)
    out = root / "r.yaml"
    res = repro("init", "--from-log", str(ci_log(tmp_path)), "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "(valid)" not in res.stdout and "fill in the FILL_ME lines" in res.stdout
    lines = out.read_text().splitlines()
    build = next(i for i, t in enumerate(lines, 1) if t.strip().startswith("build:"))
    command = next(i for i, t in enumerate(lines, 1) if t.strip().startswith("command:"))
    res = repro("recipe", "validate", str(out))
    assert res.returncode == 2
    said = " ".join(res.stderr.split())
    # Both at once: one per attempt made a user fix them one by one.
    assert f"{out}:{build}: extension.build.0: still FILL_ME" in said
    assert f"{out}:{command}: reproducer.command: still FILL_ME" in said
    fixed = out.read_text().replace('["FILL_ME: make"]', '["make"]')
    out.write_text(fixed)
    res = repro("stress", str(out), "--runs", "1")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{out}:{command}: reproducer.command: still FILL_ME" in " ".join(res.stderr.split())


def test_init_errors(tmp_path: Path) -> None:
    root = checkout(tmp_path, package=False)
    res = repro("init", "--pytest", "t.py::x", "-o", str(root / "r.yaml"), cwd=root)
    assert res.returncode == 2 and "needs a Python package" in res.stderr
    res = repro("init", "-o", str(root / "r.yaml"), cwd=root)
    assert res.returncode == 2 and "give --from-log" in res.stderr
    res = repro("init", "--pytest", "t.py::x", cwd=tmp_path)
    assert res.returncode == 2 and "not in a git checkout" in res.stderr


def test_init_in_a_package_targets_the_race_that_starts_in_its_code(tmp_path: Path) -> None:
    """A real log of a package's first-use race: ring_tag (the package's C code) and two
    reference-count races inside CPython that the half-published object causes. Here the
    symptoms come more often, as they can; the target is still the package's race, the
    names come normalised, and --race still picks by the listed order."""
    from repro.tsan.parse import parse_log

    reports = parse_log((DATA / "cpython-ext-lazy-init.log").read_text()).reports
    root = checkout(tmp_path)
    log = tmp_path / "ci.log"
    log.write_text(
        "Python 3.13.5 experimental free-threading build\ntests/test_ring.py::test_tag \n"
        + "".join(r.raw + "\n" for r in [reports[1], reports[2], reports[1], reports[0]])
    )
    out = root / "r.yaml"
    res = repro("init", "--from-log", str(log), "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    data = yaml.safe_load(out.read_text())
    assert data["target"]["functions"] == ["ring_tag"], data["target"]
    assert data["target"]["files"] == ["_ring.c"]
    # Named as the report's title names it, not by TSAN's SUMMARY line (which names the
    # top frame even in Rust's std: sweep 16's said cursor.rs).
    assert data["description"] == "data race in ring_tag (_ring.c)", data["description"]
    assert "race 3 of 3 in the log (--race N: another)" in out.read_text()
    res = repro("init", "--from-log", str(log), "-o", str(out), "--race", "1", "--force", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    first = yaml.safe_load(out.read_text())["target"]["functions"]
    assert "ring_tag" not in first and "new_reference" in first, first


def test_the_test_named_is_the_one_the_chosen_race_came_in(tmp_path: Path) -> None:
    """Two tests, two races: each race's recipe runs the test it showed in (not the
    first test of the log), and says which race of the log it is."""
    root = checkout(tmp_path)
    log = tmp_path / "two.log"
    log.write_text(
        "tests/test_a.py::test_lock_order \n"
        + (DATA / "gcc-lock_order.log").read_text()
        + "PASSED\ntests/test_b.py::test_half \n"
        + (DATA / "gcc-half_locked.log").read_text()
        + (DATA / "gcc-half_locked.log").read_text()
        + "FAILED\n"
    )
    listing = repro("parse", str(log), "--json")
    races = {
        r["kind"]: n for n, r in enumerate(__import__("json").loads(listing.stdout)["races"], 1)
    }
    for kind, test in (("data race", "test_b.py::test_half"), ("lock-order-inversion", "test_a")):
        n = next(v for k, v in races.items() if k.startswith(kind))
        out = root / f"r{n}.yaml"
        res = repro("init", "--from-log", str(log), "--race", str(n), "-o", str(out), cwd=root)
        assert res.returncode == 0, res.stdout + res.stderr
        data = yaml.safe_load(out.read_text())
        assert test in data["reproducer"]["pytest"]["tests"][0], (kind, data["reproducer"])
        assert f"race {n} of 2 in the log" in out.read_text()


def test_a_bare_version_line_does_not_make_the_build_a_gil_one(tmp_path: Path) -> None:
    """pytest's header prints "Python 3.13.5" for a free-threaded build too: only what
    says which build (a banner, a wheel tag) sets free_threading."""
    root = checkout(tmp_path)
    log = tmp_path / "pytest.log"
    log.write_text(
        "platform linux -- Python 3.13.5, pytest-8.3.4, pluggy-1.5.0\n"
        "tests/test_x.py::test_y \n" + (DATA / "gcc-half_locked.log").read_text()
    )
    out = root / "r.yaml"
    assert repro("init", "--from-log", str(log), "-o", str(out), cwd=root).returncode == 0
    data = yaml.safe_load(out.read_text())
    assert data["python"]["version"] == "3.13.5" and data["python"]["free_threading"] is True
    log.write_text(log.read_text() + "Building wheel pkg-1.0-cp313-cp313-linux_x86_64.whl\n")
    out.unlink()
    assert repro("init", "--from-log", str(log), "-o", str(out), cwd=root).returncode == 0
    assert yaml.safe_load(out.read_text())["python"]["free_threading"] is False


def test_the_banner_after_pytest_s_header_says_which_build_and_compiler(tmp_path: Path) -> None:
    """A CI log has pytest's `platform ... -- Python 3.13.5, pytest-...` line before the
    interpreter's banner: init took the version from it, called free-threading "assumed",
    and wrote no `compiler: clang` for a CPython built with clang, whose lambda names
    (`$_`) its target then used (sweep 12, a pybind11 package)."""
    root = checkout(tmp_path)
    log = tmp_path / "ci.log"
    log.write_text(
        "platform linux -- Python 3.13.5, pytest-8.3.4, pluggy-1.5.0 -- /venv/bin/python\n"
        "Python 3.13.5 experimental free-threading build (main, Jun 12 2025, 12:00:00) "
        "[Clang 19.1.7 ]\n"
        "tests/test_x.py::test_y \n" + (DATA / "clang-pybind11-template.log").read_text()
    )
    out = root / "r.yaml"
    res = repro("init", "--from-log", str(log), "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    data = yaml.safe_load(text)
    assert data["python"]["compiler"] == "clang", text
    assert "built with Clang 19.1.7" in text
    assert "from the log: Python 3.13.5 experimental free-threading build" in text, text
    assert "# from the log (free-threading)" in text, text
    # A gcc-built CPython's banner adds nothing: gcc is the default.
    log.write_text(log.read_text().replace("[Clang 19.1.7 ]", "[GCC 12.2.0]"))
    out.unlink()
    assert repro("init", "--from-log", str(log), "-o", str(out), cwd=root).returncode == 0
    assert "compiler" not in yaml.safe_load(out.read_text())["python"]


def test_init_passes_over_races_inside_code_the_build_does_not_instrument(
    tmp_path: Path,
) -> None:
    """PyO3's real log: the two most frequent races are inside Rust's std (not built with
    TSAN; the report labels them noise), the BorrowFlag race in the crate's own test comes
    third. init chose the first, and a new user's Rust crate was stressed for a race in
    `core::profiling::compiler_copy`."""
    root = checkout(tmp_path, package=False)
    out = root / "r.yaml"
    log = DATA / "pyo3-borrowflag-racy.log"
    res = repro("init", "--from-log", str(log), "-o", str(out), cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    functions = yaml.safe_load(out.read_text())["target"]["functions"]
    assert any("test_thread_safety_2" in f for f in functions), functions
    assert not any(f.startswith(("alloc::", "core::", "std::", "<alloc::")) for f in functions)
    res = repro("init", "--from-log", str(log), "-o", str(out), "--race", "1", "--force", cwd=root)
    first = yaml.safe_load(out.read_text())["target"]["functions"]
    assert "alloc::alloc::dealloc" in first, first  # --race still picks by the listed order


def test_init_in_a_rust_crate_writes_a_cargo_recipe(tmp_path: Path) -> None:
    """A cargo test log in a crate: the recipe got a CPython, `build: FILL_ME: make` and
    no command, and, filled in by hand without `sanitize: rust`, built the crate without
    TSAN. Now: the lib test binary built with Rust's TSAN flags, the race's own test run
    alone, no CPython unless the log shows one."""
    root = checkout(tmp_path, package=False)
    (root / "Cargo.toml").write_text('[package]\nname = "pyo3"\nversion = "0.1.0"\n')
    out = root / "r.yaml"
    res = repro("init", "--from-log", str(DATA / "pyo3-borrowflag-racy.log"), "-o", str(out),
                cwd=root)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "fill in the FILL_ME" not in res.stdout, res.stdout
    data = yaml.safe_load(out.read_text())
    assert "python" not in data
    ext = data["extension"]
    assert ext["sanitize"] == "rust" and ext["build"][0].startswith("cargo test --lib --no-run")
    assert data["reproducer"]["command"] == (
        "./repro-test-bin --exact pycell::impl_::tests::test_thread_safety_2 --test-threads 1"
    )
    assert repro("recipe", "validate", str(out)).returncode == 0


def test_the_libtest_name_of_a_race_s_test() -> None:
    from repro.app.init import rust_test_of

    assert rust_test_of(["spinslot::slot::tests::concurrent_add::{closure#0}"]) == (
        "slot::tests::concurrent_add"
    )
    assert rust_test_of(["<spinslot::slot::Slot>::add", "x::tests::t::{closure}::{closure}"]) == (
        "tests::t"
    )
    assert rust_test_of(["racy::main::{closure#0}", "core::ptr::write"]) is None


def test_the_recipe_builds_the_commit_checked_out_not_the_remotes_head(tmp_path: Path) -> None:
    """In a clone checked out at the racy release, the recipe said `ref: HEAD` of the
    remote: the remote's default branch (the fixed release) was built, and every run
    was clean. A commit that is not on the remote makes the checkout the source."""

    def git(repo: Path, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    # The upstream is a fetched mirror (`.../Owner+pkg/repo`): its last part is no name.
    upstream = tmp_path / "Owner+pkg" / "repo"
    upstream.mkdir(parents=True)
    git(upstream, "init", "-q", "-b", "main")
    (upstream / "pyproject.toml").write_text('[project]\nname = "pkg"\nversion = "1"\n')
    (upstream / "tests").mkdir()
    (upstream / "tests" / "test_a.py").write_text("def test_b():\n    pass\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "racy")
    git(upstream, "tag", "v1.0")
    racy = git(upstream, "rev-parse", "HEAD")
    (upstream / "fix.txt").write_text("fixed")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "the fix")
    clone = tmp_path / "pkg"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    git(clone, "checkout", "-q", "v1.0")
    out = clone / "r.yaml"
    res = repro("init", "--pytest", "tests/test_a.py::test_b", "-o", str(out), cwd=clone)
    assert res.returncode == 0, res.stdout + res.stderr
    ext = yaml.safe_load(out.read_text())["extension"]
    assert ext["ref"] == racy and ext["repo"] == str(upstream)
    assert "the commit checked out here (v1.0)" in out.read_text()
    assert yaml.safe_load(out.read_text())["name"] == "pkg-race"  # was "repo-race"
    # A commit of this checkout's only: the checkout is the source.
    git(clone, "checkout", "-q", "-b", "work")
    (clone / "local.txt").write_text("mine")
    git(clone, "add", "local.txt")
    git(clone, "commit", "-q", "-m", "not pushed")
    res = repro("init", "--pytest", "tests/test_a.py::test_b", "-o", str(out), "--force", cwd=clone)
    assert res.returncode == 0, res.stdout + res.stderr
    ext = yaml.safe_load(out.read_text())["extension"]
    assert ext["ref"] == git(clone, "rev-parse", "HEAD") and ext["repo"] == str(clone)
