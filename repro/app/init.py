"""`repro init`: a complete, commented recipe from what a user has at hand.

A CI log with a TSAN report gives the target (both accesses) and often the Python
(``Python 3.13.5 experimental free-threading build``); the current directory's git
remote gives the repository; a package checkout gives the kind; a pytest node id
gives the reproducer. What cannot be known is written as an assumption, in a
comment, and the recipe is validated before the next command is printed.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.builds.cache import BuildError
from repro.builds.pypackage import find_backend
from repro.errors import ReproError
from repro.recipe import FILL_ME
from repro.tsan.nearmiss import extension_race_first, suggest_target
from repro.tsan.signature import Signature, signature_of

_PY_VERSION = re.compile(r"\bPython (3\.\d+\.\d+)(\S*)([^\n]*)")
_CP_TAG = re.compile(r"\bcp3(\d+)(t?)\b")
# sys.version's compiler: `Python 3.13.5 experimental free-threading build (...) [Clang 19.1.7]`
_PY_COMPILER = re.compile(r"\bPython 3\.\d+\.\d+[^\n\[]*\[(Clang|GCC) ([\w.+-]+)")
_NODE = re.compile(r"(\S+\.py::[^\s]+)")


@dataclass
class Facts:
    """What init found, each with where it came from (shown as comments)."""

    version: str = "3.13.5"
    version_from: str = "not in the log: assumed"
    free_threading: bool = True
    ft_from: str = "assumed (TSAN races of this kind need it)"
    repo: str = "."
    repo_from: str = "this checkout"
    ref: str = "HEAD"
    ref_from: str = "ASSUMED: the source's HEAD"
    web_url: str | None = None
    package: bool = False
    functions: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    kind: str = "data race"
    summary: str = ""
    tests: list[str] = field(default_factory=list)
    race_from: str = ""
    crate: bool = False  # a Rust crate (Cargo.toml) that is not a Python package
    python_seen: bool = False  # the log names a CPython
    rust_test: str | None = None  # the libtest name of the race's test, from its frames
    backend: str | None = None  # the package's build backend, as repro names it
    clang_from: str | None = None  # why the recipe's CPython is built with clang
    project: str = "race"  # the recipe's name: the project's, not its remote's last part


# A Rust test's closures and the crate's own name around the test's path, as TSAN
# prints its frames: `spinslot::slot::tests::concurrent_add::{closure#0}`.
_RUST_TEST = re.compile(r"^[A-Za-z_]\w*::((?:\w+::)*tests?::\w+)(?:::\{closure[^}]*\})*$")


def rust_test_of(functions: Sequence[str]) -> str | None:
    """The name libtest runs a race's test by (`slot::tests::concurrent_add`), when one
    of the race's frames is inside a `tests` module."""
    for f in functions:
        m = _RUST_TEST.match(f)
        if m:
            return m.group(1)
    return None


def _the_build_line(text: str) -> re.Match[str] | None:
    """The line that says which CPython ran: the one that says free-threading, else one
    with sys.version's compiler, else the first (pytest's `platform linux -- Python
    3.13.5, pytest-8.3.4` comes before the banner, and says neither)."""
    found = list(_PY_VERSION.finditer(text))
    for says in (
        lambda x: "free-threading" in (x.group(2) + x.group(3)).lower() or x.group(2) == "t",
        lambda x: "[" in x.group(3),
        lambda x: True,
    ):
        chosen = next((x for x in found if says(x)), None)
        if chosen is not None:
            return chosen
    return None


def python_from_log(text: str, facts: Facts) -> None:
    cc = _PY_COMPILER.search(text)
    if cc and cc.group(1) == "Clang":
        # Its targets name what clang prints (a lambda is `$_`, g++ writes
        # `{lambda(...)#1}`), and a C++ or Rust module must meet LLVM's TSAN runtime.
        facts.clang_from = f"the log's CPython was built with Clang {cc.group(2)}"
    m = _the_build_line(text)
    facts.python_seen = m is not None
    if m:
        facts.version, facts.version_from = m.group(1), f"from the log: {m.group(0).strip()[:70]}"
        rest = (m.group(2) + m.group(3)).lower()
        if "free-threading" in rest or m.group(2) == "t":
            facts.free_threading, facts.ft_from = True, "from the log (free-threading)"
            return
        # "Python 3.13.5" alone (pytest's header line prints it so for either build)
        # does not say which build: a wheel tag may, else the assumption stands.
    tag = _CP_TAG.search(text)
    if tag:
        if not m:
            facts.version = f"3.{tag.group(1)}"
            facts.version_from = f"from the log's wheel tag {tag.group(0)} (pick a release)"
        facts.free_threading = tag.group(2) == "t"
        facts.ft_from = f"from the log's wheel tag {tag.group(0)}"


def target_from_log(log: Path, race: int | None, facts: Facts) -> None:
    """Both accesses' top frames of race number ``race`` (as `repro parse` lists them).

    No number: the most frequent race, or in a package the most frequent one that
    starts in the package's code (the reference-count races inside CPython that an
    unsafely published object causes are as frequent, and are its symptoms).
    """
    from repro.app.parse import first_report, tally_log

    tally = tally_log(log, 3)
    if not tally.races:
        raise ReproError(f"{log}: no TSAN report in this log")
    if race is not None and not 1 <= race <= len(tally.races):
        raise ReproError(f"--race takes 1 to {len(tally.races)} for this log")
    if race is None:
        race = 1
        if facts.package:
            race = 1 + extension_race_first(r.outside_interpreter for r in tally.races)
        else:
            race = _first_not_noise(log, tally.races)
    if len(tally.races) > 1:
        facts.race_from = f"race {race} of {len(tally.races)} in the log (--race N: another)"
    sig = tally.races[race - 1].signature
    report = first_report(log, sig, 3)
    target = suggest_target(report)
    facts.functions, facts.files = list(target.functions), list(target.files)
    if not facts.functions:
        facts.functions = [f for side in sig.accesses for f in side[:1]]
    facts.kind = sig.kind
    # Named as the report's title names it: TSAN's SUMMARY names the top frame even
    # in Rust's std (cramjam's said cursor.rs, not the package's RustyBuffer).
    from repro.report.data import race_name
    from repro.report.tsantext import race_site

    function, file = race_site(report)
    facts.summary = race_name({"kind": sig.kind, "function": function, "file": file})
    frames = [f.function for a in (report.current, report.previous) if a for f in a.stack]
    facts.rust_test = rust_test_of([*facts.functions, *frames])
    text = log.read_text(encoding="utf-8", errors="replace")
    node = _test_of(text, sig)
    if node and not facts.tests:
        facts.tests = [node]
    python_from_log(text, facts)


def _first_not_noise(log: Path, races: Sequence[Any]) -> int:
    """The number of the most frequent race not wholly inside code the build does not
    instrument (Rust's std, glibc): those are noise the report itself labels so, and a
    new user's init once chose one as the target."""
    from repro.app.parse import first_report
    from repro.report.tsantext import first_not_noise

    found = first_not_noise(first_report(log, r.signature, 3) for r in races)
    return 1 + (found or 0)


def _test_of(text: str, sig: Signature) -> str | None:
    """The pytest test the first report of ``sig`` came in: the last test id the log
    named before that report began (or, when none did, the one named by its end)."""
    from repro.tsan.parse import LogScanner

    scanner = LogScanner()
    last: str | None = None
    at_start: str | None = None
    for line in [*text.splitlines(), None]:
        if line is None:
            report = scanner.finish()
        else:
            if "WARNING: ThreadSanitizer:" in line:
                at_start = last
            report = scanner.feed(line)
        if report is not None and signature_of(report, depth=3) == sig:
            found = at_start or last
            return found.rstrip(":") if found else None
        if line is not None and "WARNING: ThreadSanitizer:" not in line:
            nodes = _NODE.findall(line)
            if nodes:
                last = nodes[-1]
    return None


def repo_from_checkout(cwd: Path, facts: Facts) -> None:
    def git(*args: str) -> str | None:
        proc = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None

    top = git("rev-parse", "--show-toplevel")
    if top is None:
        raise ReproError(f"{cwd}: not in a git checkout (repro init reads its remote and history)")
    root = Path(top)
    facts.package = (root / "pyproject.toml").is_file() or (root / "setup.py").is_file()
    facts.crate = (root / "Cargo.toml").is_file() and not facts.package
    if facts.package:
        # A pyproject.toml that is not TOML: the build says so, with the commit; the
        # recipe is still worth writing.
        with contextlib.suppress(BuildError):
            facts.backend = find_backend(root, str(root)).name
    facts.repo, facts.repo_from = str(root), "this checkout (no git remote)"
    facts.project = root.name
    # The commit checked out here, not "HEAD": in the remote, HEAD is its default
    # branch (a user who checked out the racy release got the fixed one built, and
    # "not reproduced").
    sha = git("rev-parse", "--verify", "HEAD^{commit}")
    if sha is not None:
        name = git("describe", "--tags", "--exact-match", "HEAD") or git(
            "symbolic-ref", "--short", "-q", "HEAD"
        )
        facts.ref = sha
        facts.ref_from = "the commit checked out here" + (f" ({name})" if name else "")
    remote = git("remote", "get-url", "origin")
    # The remote can stand for this checkout only if it has the commit (a local branch
    # with commits not pushed: the checkout itself).
    pushed = sha is None or bool(git("branch", "-r", "--contains", sha))
    if remote and pushed:
        facts.repo, facts.repo_from = remote, "git remote origin of this checkout"
    elif remote:
        facts.repo_from = "this checkout: its commit is not on the remote origin"
    if remote:
        m = re.match(r"(?:git@([^:]+):|https?://([^/]+)/)(.+?)(?:\.git)?/?$", remote)
        if m:
            facts.web_url = f"https://{m.group(1) or m.group(2)}/{m.group(3)}"
            facts.project = m.group(3).rsplit("/", 1)[-1]


def render(facts: Facts, name: str, source: str) -> str:
    q = json.dumps
    lines = [
        f"# Recipe written by `repro init` from {source}. Check every line marked ASSUMED.",
        f"name: {name}",
        f"description: {q(facts.summary or f'{FILL_ME}: which race')}",
        "",
    ]
    if facts.crate and not facts.python_seen:
        lines += [
            "# A Rust crate's tests: no CPython is built (add `python:` if the test binary",
            "# links libpython, as PyO3's does).",
        ]
    else:
        lines += [
            "# The CPython the race is reproduced with: built from python.org's tarball, with",
            "# TSAN, and cached (or `executable:` for one you have).",
            "python:",
            f"  version: {q(facts.version)}    # {facts.version_from}",
            "  # source: Python-X.Y.Z.tar.xz   # a local tarball, without network (or set "
            "REPRO_CPYTHON_MIRROR)",
            f"  free_threading: {str(facts.free_threading).lower()}    # {facts.ft_from}",
            "  tsan: true",
        ]
        if facts.clang_from:
            lines.append(f"  compiler: clang    # {facts.clang_from}")
        elif facts.backend == "maturin":
            lines.append("  compiler: clang    # a maturin package: Rust links LLVM's TSAN runtime")
    lines += ["", "# The project under test, at each commit.", "extension:"]
    if facts.crate:
        lines += [
            "  sanitize: rust           # RUSTFLAGS=-Zsanitizer=thread on stable, --target",
            "  build:                   # the lib test binary, once per commit, into the worktree",
            "    - cargo test --lib --no-run 2>&1 | tee .repro-cargo.txt",
            "    - >-",
            """      cp "$(sed -n 's/.*Executable unittests src\\/lib.rs (\\(.*\\))$/\\1/p'""",
            '      .repro-cargo.txt | tail -n 1)" repro-test-bin',
        ]
    elif facts.package:
        lines += [
            "  kind: python-package     # built with its own backend, with TSAN, per commit",
        ]
    else:
        lines += [f'  build: ["{FILL_ME}: make"]   # ASSUMED: not a Python package']
    lines += [
        f"  repo: {q(facts.repo)}    # {facts.repo_from}",
        f"  ref: {q(facts.ref)}    # {facts.ref_from}",
    ]
    if facts.web_url:
        lines.append(f"  web_url: {q(facts.web_url)}")
    lines += ["", "# What to run, again and again."]
    if facts.tests and facts.package:
        lines += [
            "reproducer:",
            "  pytest:                  # under pytest-run-parallel",
            "    tests:",
            *[f"      - {q(t)}" for t in facts.tests],
            "    threads: 8",
            "    iterations: 20",
            "  timeout: 600",
        ]
    elif facts.crate and facts.rust_test:
        lines += [
            "reproducer:               # the test alone, one libtest thread (its own threads race)",
            f"  command: ./repro-test-bin --exact {facts.rust_test} --test-threads 1",
            "  timeout: 300",
        ]
    else:
        lines += [
            "reproducer:",
            f'  command: "{FILL_ME}: the command that shows the race"',
            "  timeout: 120",
        ]
    if facts.package:
        # Sweep 15: multidict before its free-threading commit declares no Py_mod_gil, so
        # importing it switched the GIL back on and every run of the written recipe was
        # gil-enabled. Harmless where the module declares it.
        lines += [
            "  env:",
            '    PYTHON_GIL: "0"   # the GIL stays off where a module does not declare Py_mod_gil',
        ]
    lines += [
        "",
        "# Which race counts: every name must be in the race's top frames, and each access",
        "# must have one of them (one target per recipe: a list is not alternatives).",
    ]
    lines += [
        f"target:  # {facts.race_from}" if facts.race_from else "target:",
        f"  kind: {q(facts.kind)}",
    ]
    if facts.functions:
        lines += ["  functions:", *[f"    - {q(f)}" for f in facts.functions]]
    else:
        lines += [f'  functions: ["{FILL_ME}"]   # no log given: name the racing functions']
    if facts.files:
        lines += ["  files:", *[f"    - {q(f)}" for f in facts.files]]
    lines += [
        "",
        f"# For `repro bisect`: where it races and where it does not ({FILL_ME} both).",
        "# bisect:",
        "#   find: fix",
        "#   racy: v1.0",
        "#   fixed: main",
        "",
    ]
    return "\n".join(lines)


def check_node(node: str, cwd: Path) -> None:
    """A pytest node id that names no test ran nothing in every run (pytest's "ERROR: not
    found", exit 4): say so now, not after a stress of such runs."""
    path, _, rest = node.partition("::")
    file = cwd / path
    if not file.is_file():
        raise ReproError(f"--pytest {node}: {path} is not a file under {cwd}")
    names = [part.split("[", 1)[0] for part in rest.split("::") if part]
    if not names:
        return
    text = file.read_text(encoding="utf-8", errors="replace")
    test = names[-1]
    if not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(test)}\s*\(", text, re.MULTILINE):
        raise ReproError(f"--pytest {node}: {path} defines no test {test}")


def run_init(
    *,
    from_log: Path | None,
    pytest_nodes: list[str],
    race: int | None,
    output: Path,
    force: bool,
    cwd: Path,
) -> tuple[Path, str, bool]:
    """Write the recipe; (path, the next command, whether FILL_ME is left)."""
    from repro.recipe import load_recipe

    if output.exists() and not force:
        raise ReproError(f"{output}: exists already (pass --force to overwrite)")
    if from_log is None and not pytest_nodes:
        raise ReproError("give --from-log LOG, --pytest NODE, or both")
    facts = Facts(tests=list(pytest_nodes))
    repo_from_checkout(cwd, facts)
    if pytest_nodes and not facts.package:
        raise ReproError(f"{cwd}: --pytest needs a Python package (pyproject.toml or setup.py)")
    for node in pytest_nodes:
        check_node(node, cwd)
    source = []
    if from_log is None:
        facts.version_from = "assumed: no log to read it from"
    if from_log is not None:
        if not from_log.is_file():
            raise ReproError(f"{from_log}: no such log file")
        target_from_log(from_log, race, facts)
        source.append(from_log.name)
    if pytest_nodes:
        source.append(" ".join(pytest_nodes))
    # The checkout's directory names the project; a remote's last part may not (a mirror's
    # `.../repo`).
    name = re.sub(r"[^\w.-]+", "-", facts.project).strip("-") or "race"
    text = render(facts, f"{name}-race", " and ".join(source))
    output.write_text(text, encoding="utf-8")
    loaded = load_recipe(output, unfilled_ok=True)  # validates: a problem names the line
    nxt = f"repro stress {output} --runs 20"
    if loaded.recipe.target.unfilled:
        nxt += " --suggest-target"  # a stress run can find what the target should be
    left = any(FILL_ME in line.split("#", 1)[0] for line in text.splitlines())
    return output, nxt, left
