"""From a recipe to a runnable reproducer: build what it names, then the run spec.

This is the one place that knows how the recipe's parts (CPython, extension,
reproducer, amplifiers, TSAN options) combine into the environment of a run, so
stress, bisect and the report's "how to reproduce" all agree.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from repro.app.environment import relevant_env
from repro.app.runner import Matcher, RunSpec
from repro.errors import ReproError
from repro.host.environ import child_environ
from repro.host.setarch import needs_setarch, setarch_argv
from repro.host.symbolizer import choose_for_run
from repro.host.tsan_binary import without_tsan
from repro.placeholders import expand, expand_for_shell
from repro.recipe import (
    AmplifySpec,
    LoadedRecipe,
    ReproducerSpec,
    check_option,
    edited_since,
    field_said,
    repo_location,
    unavailable_cpus,
)
from repro.tsan import options as tsan_options
from repro.tsan.options import COUNTING_DEFAULTS

if TYPE_CHECKING:
    from repro.builds.cpython import PythonBuild


@dataclass(frozen=True)
class Overrides:
    """Command-line knobs that change a run without editing the recipe."""

    threads: int | None = None
    switch_interval: float | None = None
    taskset: str | None = None
    timeout: float | None = None
    extension_repo: str | None = None
    setarch: bool | None = None  # None: ask doctor whether it is needed

    def __post_init__(self) -> None:
        # Each knob stands in for a recipe field and is held to that field's rule, so a
        # value refused in a recipe is refused here too (ReproError: exit 2, one line).
        if self.threads is not None:
            check_option(ReproducerSpec, "threads", self.threads, "--threads")
        if self.timeout is not None:
            check_option(ReproducerSpec, "timeout", self.timeout, "--timeout")
        if self.switch_interval is not None:
            check_option(AmplifySpec, "switch_interval", self.switch_interval, "--switch-interval")
        if self.taskset is not None:
            check_option(AmplifySpec, "taskset", self.taskset, "--taskset")
            problem = unavailable_cpus(self.taskset)
            if problem:
                raise ReproError(f"--taskset: {problem}")


class NotRunnableHere(ReproError):
    """The project's build at this commit gives no program the runs can count with (the
    reproducer is not there, or has no TSAN in it). A bisect skips such a commit, as
    one that does not build; its runs would have read as clean, evidence of a fix."""


@dataclass
class Prepared:
    spec: RunSpec
    matcher: Matcher
    python: Any = None  # repro.builds.cpython.PythonBuild
    extension: Any = None  # repro.builds.extension.ExtensionBuild
    ext_sha: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def matcher_for(loaded: LoadedRecipe) -> Matcher:
    r = loaded.recipe
    return Matcher(
        rule=r.target.rule(), depth=r.signature.depth, drop=tuple(r.signature.drop_frames)
    )


def extension_location(loaded: LoadedRecipe, overrides: Overrides) -> str:
    ext = loaded.recipe.extension
    if ext is None:
        raise ReproError(f"{loaded.path}: the recipe has no `extension` section")
    if overrides.extension_repo:
        # The same forms as the recipe's `repo:` (URLs too), relative to where repro runs.
        return repo_location(overrides.extension_repo, Path.cwd())
    return loaded.resolve_repo(ext.repo)


def base_env() -> dict[str, str]:
    env = child_environ()
    # A user's own TSAN_OPTIONS are merged by the runner; a stray log_path would
    # send reports where repro never looks.
    return env


def check_declared_python(loaded: LoadedRecipe, python: PythonBuild) -> None:
    """An ``executable:`` interpreter must be what the recipe says it is: a stress on
    a GIL build or one without TSAN counts runs that could not show the race, and its
    record would call them free-threaded TSAN runs."""
    spec = loaded.recipe.python
    assert spec is not None
    declared = spec.model_fields_set

    def said(field: str, value: bool) -> str:
        return f"{field}: {str(value).lower()}" + ("" if field in declared else " (the default)")

    problems = []
    if spec.free_threading != python.gil_disabled:
        problems.append(
            f"the recipe says {said('free_threading', spec.free_threading)}, but it is "
            + (
                "a build with the GIL (Py_GIL_DISABLED is not set): give a free-threaded "
                "one (python3.13t, configured --disable-gil)"
                if spec.free_threading
                else "free-threaded"
            )
            + f", or set python.free_threading: {str(python.gil_disabled).lower()}"
        )
    if spec.tsan and not python.tsan:
        problems.append(
            f"the recipe says {said('tsan', True)}, but it has no TSAN runtime (neither "
            "linked nor in its libpython), so no race in CPython's own code can show: "
            "build one (python.version or python.git instead of executable), or set "
            "python.tsan: false when only the extension is built with TSAN"
        )
    if problems:
        where = python.python
        raise ReproError(
            field_said(
                loaded,
                ("python", "executable"),
                f"{where} (Python {python.version}): " + "; ".join(problems),
            )
        )


def check_users_tsan_options(loaded: LoadedRecipe, env: Mapping[str, str]) -> None:
    """The user's own TSAN_OPTIONS reach every run; before any build, refuse those
    under which the counts would be wrong (the recipe's own were checked with it)."""
    r = loaded.recipe
    if "TSAN_OPTIONS" in r.reproducer.env or not env.get("TSAN_OPTIONS"):
        return
    user = tsan_options.parse(env["TSAN_OPTIONS"])
    way_out = "run repro without it (env -u TSAN_OPTIONS repro ...)"
    effective = tsan_options.merge(None, env["TSAN_OPTIONS"], r.tsan.options)
    problems = [
        f"{setting}: {why}"
        for setting, why in tsan_options.defeats_counting(effective)
        if setting.split("=", 1)[0] in user
    ]
    stray = tsan_options.stray_problem(env["TSAN_OPTIONS"])
    if stray:
        problems.append(stray)
    name = user.get("suppressions")
    if name and not (r.tsan.suppressions or "suppressions" in r.tsan.options):
        path = Path(name).expanduser()
        if not path.is_file() and path.is_absolute():
            problems.append(f"suppressions={name}: no such file, so TSAN could not start")
        # A relative path is TSAN's to find (from the run's directory, or the program's).
        elif path.is_file() and not r.target.unfilled:
            text = path.read_text(encoding="utf-8", errors="replace")
            hides = tsan_options.hidden_target(
                text, r.target.kind, r.target.functions, r.target.files
            )
            problems.extend(f"suppressions={name}, {why}" for why in hides)
    if problems:
        raise ReproError(
            "your environment's TSAN_OPTIONS would make the counts wrong:\n  "
            + "\n  ".join(problems)
            + f"\n{way_out}, or set the option in the recipe's tsan.options"
        )


def run_setup(
    loaded: LoadedRecipe,
    values: dict[str, str],
    env: Mapping[str, str],
    info: dict[str, Any],
    progress: Any,
) -> Path:
    """The reproducer's scratch directory, ``{work}``, with the recipe's setup commands
    run in it once per (recipe, Python build, extension build).

    A setup that already succeeded for the same inputs is not run again: a bisect
    prepares the same context many times. Without setup commands the directory is there
    all the same, so that ``{work}`` means one thing in every recipe (and in the
    reproduce.sh of a report, which always has one).
    """
    import hashlib
    import json
    import subprocess

    from repro.builds.stop import kill_group
    from repro.paths import cache_dir

    r = loaded.recipe
    ident = json.dumps(
        [
            str(loaded.path),
            r.reproducer.setup,
            info.get("python", {}).get("key"),
            info.get("extension", {}).get("key"),
        ],
        sort_keys=True,
    )
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    work = cache_dir() / "work" / f"{r.name}-{digest}"
    done = work / ".repro-setup-done"
    if done.exists():
        return work
    work.mkdir(parents=True, exist_ok=True)
    if not r.reproducer.setup:
        return work
    values = {**values, "work": str(work)}
    log = work / "setup.log"
    with log.open("w") as out:
        for i, template in enumerate(r.reproducer.setup):
            cmd = expand_for_shell(template, values)
            if progress is not None:
                # What runs and where its output goes: a slow step is not a hang.
                progress.waiting(
                    f"setup {i + 1}/{len(r.reproducer.setup)}: {cmd[:80]} (log: {log})"
                )
            out.write(f"$ {cmd}\n")
            out.flush()
            # Its own process group, so that a step that hangs is killed with all
            # it started (a stuck pip would otherwise hold the stress forever).
            proc = subprocess.Popen(
                ["bash", "-c", cmd],
                cwd=work,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            limit = r.reproducer.setup_timeout
            try:
                code: int | str = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
                code = f"killed after {limit:g} s, reproducer.setup_timeout"
            except BaseException:
                kill_group(proc)
                proc.wait()
                raise
            if code != 0:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                how = f"exit {code}" if isinstance(code, int) else code
                raise ReproError(
                    f"{loaded.path}: reproducer.setup.{i} failed ({how}): {cmd}\n"
                    + "\n".join(tail)
                    + f"\nlog: {log}"
                )
    done.write_text("ok\n")
    return work


class ProgramMissing(ReproError):
    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def check_command(
    command: str, cwd: Path, env: Mapping[str, str], loaded: LoadedRecipe
) -> Path | None:
    """A reproducer that cannot start is an error now, not a thousand "crash" outcomes.
    The program it starts, when a path names it."""
    from repro.app.runner import command_argv

    argv = command_argv(command)
    if argv[:2] == ["/bin/sh", "-c"]:
        return None  # shell syntax: only the shell can tell
    exe = argv[0]
    if "/" in exe:
        path = Path(exe) if Path(exe).is_absolute() else cwd / exe
        if not path.exists():
            raise ProgramMissing(
                f"{loaded.path}: reproducer.command: `{exe}` does not exist (looked in {cwd})",
                path,
            )
        if not os.access(path, os.X_OK):
            raise ProgramMissing(
                f"{loaded.path}: reproducer.command: `{exe}` is not executable", path
            )
        return path
    if shutil.which(exe, path=env.get("PATH")) is None:
        raise ReproError(f"{loaded.path}: reproducer.command: `{exe}` is not on PATH")
    return None


def _sanitize_hint(sanitize: str | None) -> str:
    if sanitize == "rust":
        return "does the build pass RUSTFLAGS (and --target) on to cargo?"
    if sanitize == "c":
        return (
            "does the build use CFLAGS and LDFLAGS (extension.sanitize: c puts "
            "-fsanitize=thread there)? For a Rust crate, extension.sanitize: rust"
        )
    return "extension.sanitize is none: the build must add TSAN itself"


def run_prefix(loaded: LoadedRecipe, overrides: Overrides) -> tuple[str, ...]:
    prefix: list[str] = []
    use_setarch = overrides.setarch
    if use_setarch is None:
        use_setarch = needs_setarch()
    if use_setarch:
        prefix += setarch_argv()
    cpus = overrides.taskset or loaded.recipe.amplify.taskset
    if cpus:
        prefix += ["taskset", "-c", cpus]
    return tuple(prefix)


def _python_package(
    loaded: LoadedRecipe, repo: Any, sha: str, python: Any, cache: Any, progress: Any
) -> Any:
    """extension.kind: python-package, built into an environment of the recipe's Python."""
    from repro.builds.pypackage import PYTEST_TOOLS, ensure_python_package

    r = loaded.recipe
    assert r.extension is not None
    if python is None:
        raise ReproError(
            f"{loaded.path}: extension.kind: python-package needs a `python:` section "
            "(the free-threaded TSAN CPython to build and run the package with)"
        )
    requirements = list(r.extension.requirements)
    if r.reproducer.pytest is not None:
        requirements += [t for t in PYTEST_TOOLS if t not in requirements]
    return ensure_python_package(
        r.extension,
        repo,
        sha,
        python=python,
        cache=cache,
        requirements=requirements,
        progress=progress,
    )


def gil_warning(extension: Any, python: Any, env: Mapping[str, str]) -> str | None:
    """What to say when a module of the package turns the GIL back on in a free-threaded
    Python, unless the reproducer's environment keeps it off (PYTHON_GIL=0): said at
    every prepare, a build from the cache included, and not where it was heeded."""
    module = getattr(extension, "gil_module", None)
    if not module or python is None or not python.gil_disabled or env.get("PYTHON_GIL") == "0":
        return None
    return (
        f"warning: importing {module} turns the GIL back on (it does not declare "
        "Py_mod_gil): races in it cannot show; set PYTHON_GIL=0 in reproducer.env"
    )


def refuse_on_resume(
    run_dir: Path, given: Sequence[tuple[str, object]], kind: str, allowed: str = ""
) -> None:
    """A resume continues one experiment: what decides a run's rate (the recipe, the
    commit, the reproducer's knobs, a bisect's range and confidence) stays as the run
    began. ``given``: (option, value) pairs, a value of None or empty not given. Taken
    silently, a --ref put another commit's runs into the same rate, and a --confidence
    read as taken."""
    named = [name for name, value in given if value is not None and value != ()]
    if named:
        raise ReproError(
            f"--resume continues {run_dir} as it began, so {', '.join(named)} cannot be "
            f"given with it{allowed}; start a new {kind} to change them"
        )


def say_if_edited(console: Any, loaded: LoadedRecipe) -> None:
    """On a resume: the recipe file changed since the run began, and the run goes on with
    its own copy (run directory's recipe.yaml), not with the file as it is now."""
    if edited_since(loaded):
        console.print(
            f"[yellow]note:[/] {escape(str(loaded.path))} changed since this run began; "
            "the resume runs the recipe as it was run (the run directory's recipe.yaml)",
            highlight=False,
        )


def jobs_on_resume(
    run_dir: Path, given: int | None, meta: Mapping[str, Any], on_cluster: bool, kind: str
) -> int:
    """The runs at once of a resumed stress or bisect: its own, unless it runs on a
    cluster (whose threads decide). Another -j is refused: the rate measured so far is
    the rate at that parallelism, and runs at another would be counted, or weighed by a
    bisect, against a rate that is not theirs."""
    before = meta.get("jobs")
    if given is not None and before is not None and not on_cluster and given != before:
        raise ReproError(
            f"-j {given}: {run_dir} was run with -j {before}, and runs at once change the "
            f"rate; resume with -j {before} (or start a new {kind})"
        )
    return given or before or os.cpu_count() or 1


def in_cache(
    loaded: LoadedRecipe,
    overrides: Overrides = Overrides(),
    *,
    ext_ref: str | None = None,
    python_ref: str | None = None,
    python_version: str | None = None,
) -> bool:
    """Whether ``prepare`` with these refs would take everything from the cache.

    Asked through ``prepare`` itself (under ``lookup_only``), so it reads the same keys
    that a build would write. A ref or recipe that cannot be prepared says no here; the
    real prepare reports it when the bisect gets there.
    """
    from repro.builds.cache import NotInCache, lookup_only

    try:
        with lookup_only():
            prepare(
                loaded,
                overrides,
                ext_ref=ext_ref,
                python_ref=python_ref,
                python_version=python_version,
            )
    except (NotInCache, ReproError):
        return False
    except Exception:
        # Whatever else goes wrong only loses a hint to the plan and the search: the
        # prepare of the commit itself, when the search gets there, says what it is.
        return False
    return True


def _refuse_gcc_for_maturin(
    loaded: LoadedRecipe, overrides: Overrides, compiler: str, ext_ref: str | None
) -> None:
    """Refuse, before a CPython build of 5 to 15 minutes, a gcc Python for a maturin
    package: Rust links LLVM's TSAN runtime, and the module would not load beside gcc's
    (`undefined symbol: __tsan_memcpy`), found only after the build (sweep 16)."""
    from repro.builds.cache import BuildCache
    from repro.builds.pypackage import backend_name
    from repro.gitrepo import GitRepo

    r = loaded.recipe
    if r.extension is None or r.extension.kind != "python-package" or r.python is None:
        return
    if r.python.executable or "clang" in Path(compiler).name:
        return
    try:
        repo = GitRepo.open_cached(
            extension_location(loaded, overrides), BuildCache().base, web_url=r.extension.web_url
        )
        sha = repo.resolve(ext_ref or r.extension.ref)
        backend = backend_name(repo.read_file(sha, "pyproject.toml"))
    except ReproError:
        return  # said where the extension is prepared, with its own words
    if backend == "maturin":
        raise ReproError(
            field_said(
                loaded,
                ("python", "compiler"),
                f"the package is built by maturin (pyproject.toml at {sha[:12]}), which needs "
                f"a CPython built with clang, not {compiler}: Rust links LLVM's TSAN runtime, "
                "which cannot load beside gcc's. Set python.compiler: clang",
            )
        )


def prepare(
    loaded: LoadedRecipe,
    overrides: Overrides = Overrides(),
    *,
    ext_ref: str | None = None,
    python_ref: str | None = None,
    python_version: str | None = None,
    progress: Any = None,
) -> Prepared:
    """Build (or find in the cache) what the recipe needs and describe one run."""
    r = loaded.recipe
    env = base_env()
    check_users_tsan_options(loaded, env)
    set_here: set[str] = set()  # what the recipe and the build set: recorded by name
    values: dict[str, str] = {"recipe_dir": str(loaded.base_dir)}
    info: dict[str, Any] = {"recipe": r.name}
    python = None
    extension = None
    ext_sha = None
    cwd = loaded.base_dir

    if r.python is not None:
        from repro.builds.cache import BuildCache
        from repro.builds.cpython import ensure_cpython

        py_spec = r.python
        if python_version is not None:
            py_spec = py_spec.model_copy(update={"version": python_version})
        _refuse_gcc_for_maturin(loaded, overrides, py_spec.compiler, ext_ref)
        python = ensure_cpython(
            py_spec,
            base_dir=loaded.base_dir,
            cache=BuildCache(),
            git_ref=python_ref,
            progress=progress,
        )
        if py_spec.executable:
            check_declared_python(loaded, python)
        values["python"] = str(python.python)
        info["python"] = python.to_json()
        env["PATH"] = f"{Path(python.python).parent}{os.pathsep}{env.get('PATH', '')}"
    else:
        values["python"] = "python3"

    if r.extension is not None:
        from repro.builds.cache import BuildCache
        from repro.builds.extension import ensure_extension
        from repro.gitrepo import GitRepo

        cache = BuildCache()
        repo = GitRepo.open_cached(
            extension_location(loaded, overrides), cache.base, web_url=r.extension.web_url
        )
        try:
            ext_sha = repo.resolve(ext_ref or r.extension.ref)
        except ReproError as exc:
            if ext_ref is not None:
                raise
            raise ReproError(field_said(loaded, ("extension", "ref"), str(exc))) from None
        note = repo.uncommitted_note()
        if note and progress is not None:
            progress.waiting(f"warning: {note}")
        modules: list[str] | None = None
        if r.extension.kind == "python-package":
            extension = _python_package(loaded, repo, ext_sha, python, cache, progress)
            values["python"] = str(extension.python)
            modules = list(extension.modules)
            if not modules and progress is not None:
                progress.waiting(
                    f"warning: the package's wheel at {ext_sha[:12]} holds no extension "
                    "module (an optional C extension that failed to build falls back to "
                    "pure Python): a race in its native code cannot show"
                )
        else:
            extension = ensure_extension(
                r.extension,
                repo,
                ext_sha,
                python=python,
                base_dir=loaded.base_dir,
                cache=cache,
                progress=progress,
            )
        env.update(extension.env)
        set_here.update(extension.env)
        values["worktree"] = str(extension.worktree)
        cwd = Path(extension.worktree)
        info["extension"] = {"repo": r.extension.repo, "sha": ext_sha, "key": extension.key}
        if modules is not None:
            info["extension"]["modules"] = modules

    threads = overrides.threads or r.reproducer.threads
    values["threads"] = str(threads)
    env["REPRO_THREADS"] = str(threads)
    switch = (
        overrides.switch_interval
        if overrides.switch_interval is not None
        else r.amplify.switch_interval
    )
    if switch is not None:
        env["REPRO_SWITCH_INTERVAL"] = repr(switch)
    if r.reproducer.pytest is not None:
        # Names the test during which TSAN wrote a report (repro/standalone/).
        plugins = [p for p in env.get("PYTEST_PLUGINS", "").split(",") if p]
        env["PYTEST_PLUGINS"] = ",".join([*plugins, "repro_tsan_attrib"])
    # `{worktree}` and the others, as in the command (they are paths, not shell code).
    own = {k: expand(v, values) for k, v in r.reproducer.env.items()}
    env.update(own)
    set_here.update(own)
    warning = gil_warning(extension, python, env)
    if warning is not None and progress is not None:
        progress.waiting(warning)
    # What the reproducer starts from, as the run record states it: taken where it runs
    # (on a cluster, a worker, whose environment is its own), not where repro was started.
    info["env"] = relevant_env(env, also=set_here)
    values["work"] = str(run_setup(loaded, values, env, info, progress))
    if r.reproducer.cwd:
        cwd = Path(expand(r.reproducer.cwd, values))
        if not cwd.is_absolute():
            cwd = (loaded.base_dir / cwd).resolve()
    if not cwd.is_dir():
        raise ReproError(f"{loaded.path}: reproducer.cwd: no such directory: {cwd}")
    command = expand_for_shell(r.reproducer.command, values)
    built = Path(extension.worktree).resolve() if extension is not None else None
    try:
        program = check_command(command, cwd, env, loaded)
    except ProgramMissing as exc:
        if built is not None and exc.path.resolve().is_relative_to(built):
            raise NotRunnableHere(str(exc)) from None  # this commit's build made none
        raise
    preloaded = "tsan" in env.get("LD_PRELOAD", "")
    if program is not None and not preloaded and without_tsan(program):
        # Every run would be clean, evidence that the race is gone: a user's Rust crate
        # built without `sanitize: rust` ran so, and a commit whose Makefile dropped the
        # TSAN flags was named as the fix at 0.99.
        hint = _sanitize_hint(r.extension.sanitize if r.extension else None)
        said = (
            f"{program} has no TSAN in it (it never names __tsan_init), so no race can "
            f"show in it; {hint}"
        )
        if built is not None and program.resolve().is_relative_to(built):
            raise NotRunnableHere(said)
        if progress is not None:
            # A program of the machine's (an interpreter that runs instrumented ones)
            # may be right: said, not refused.
            progress.waiting(f"warning: {said}")
    tsan_options: dict[str, Any] = dict(r.tsan.options)
    if r.tsan.suppressions:
        tsan_options["suppressions"] = str(loaded.resolve(r.tsan.suppressions))
    # Its warning is said only if a run's frames come out without names (stop_hint).
    symbolizer = choose_for_run(python, r.extension.sanitize if r.extension else None, env)
    spec = RunSpec(
        command=command,
        cwd=cwd,
        env=env,
        timeout=overrides.timeout or r.reproducer.timeout,
        tsan_options=tsan_options,
        prefix=run_prefix(loaded, overrides),
        tsan_defaults={**COUNTING_DEFAULTS, **symbolizer.tsan_defaults()},
        tty=r.reproducer.tty,
    )
    info["symbolizer"] = symbolizer.to_json()
    info["command"] = command
    info["cwd"] = str(cwd)
    info["threads"] = threads
    info["switch_interval"] = switch
    info["prefix"] = list(spec.prefix)
    info["tsan_options"] = {k: str(v) for k, v in tsan_options.items()}
    return Prepared(
        spec=spec,
        matcher=matcher_for(loaded),
        python=python,
        extension=extension,
        ext_sha=ext_sha,
        info=info,
    )
