"""Building (or inspecting) the CPython that a race is reproduced with.

A TSAN free-threaded CPython takes minutes to build, so builds are cached by
content, and each source keeps one persistent build tree that is moved between
commits (or patch sets) so that make recompiles only what changed: a bisection
pays for one clean build and then for the few files each step touches.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from repro.builds.cache import (
    BuildCache,
    BuildContext,
    BuildError,
    MachineBuildError,
    cache_key,
    canonical_json,
    sha256_file,
    tail_lines,
    would_build,
)
from repro.builds.progress import BuildProgress, NullProgress, lost_note
from repro.gitrepo import GitRepo, is_url
from repro.host.compilers import clang_candidates, version_output
from repro.host.environ import child_environ
from repro.host.setarch import setarch_prefix
from repro.host.tsan_binary import links_runtime
from repro.recipe import PythonSpec

DEFAULT_MIRROR = "https://www.python.org/ftp/python/{v}/Python-{v}.tar.xz"
TARBALL_NAMES = ("Python-{v}.tar.xz", "Python-{v}.tgz", "Python-{v}.tar.gz")

_GIT_ID = ["-c", "user.name=repro", "-c", "user.email=repro@localhost", "-c", "gc.auto=0"]


# --- the result ---------------------------------------------------------------------


@dataclass(frozen=True)
class PythonBuild:
    """A usable interpreter and what it is; ``key`` names its cache entry."""

    python: Path
    prefix: Path
    key: str
    version: str
    gil_disabled: bool
    tsan: bool
    compiler: str
    compiler_version: str
    source: str
    source_id: str
    configure_args: tuple[str, ...] = ()
    patches: tuple[str, ...] = ()
    log: Path | None = None

    @property
    def bin_dir(self) -> Path:
        return self.python.parent

    @property
    def lib_dir(self) -> Path:
        return self.prefix / "lib"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("python", "prefix", "log"):
            d[k] = None if d[k] is None else str(d[k])
        d["configure_args"] = list(self.configure_args)
        d["patches"] = list(self.patches)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PythonBuild:
        return cls(
            python=Path(d["python"]),
            prefix=Path(d["prefix"]),
            key=str(d["key"]),
            version=str(d["version"]),
            gil_disabled=bool(d["gil_disabled"]),
            tsan=bool(d["tsan"]),
            compiler=str(d["compiler"]),
            compiler_version=str(d["compiler_version"]),
            source=str(d["source"]),
            source_id=str(d["source_id"]),
            configure_args=tuple(d.get("configure_args", ())),
            patches=tuple(d.get("patches", ())),
            log=Path(d["log"]) if d.get("log") else None,
        )


# --- compilers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Compiler:
    """A C compiler as found on this machine; its version is part of every cache key."""

    requested: str
    command: str  # what CC gets, e.g. "clang-19"
    path: str  # resolved real path (for the key)
    version: str  # first line of --version
    version_output: str
    family: str  # "gcc" or "clang"

    @property
    def cxx(self) -> str:
        if self.family == "clang":
            return self.command.replace("clang", "clang++", 1)
        return re.sub(r"gcc", "g++", self.command, count=1)


def _install_hint(name: str) -> str:
    if "clang" in name:
        return "install it: apt-get install clang-19 (or give --compiler gcc)"
    return "install it: apt-get install gcc (or give --compiler clang)"


def resolve_compiler(name: str) -> Compiler:
    """Find ``name`` ("gcc", "clang", "clang-19", a path); plain clang falls back to clang-N."""
    candidates = [name, *clang_candidates()] if name == "clang" else [name]
    for cand in dict.fromkeys(candidates):
        exe = shutil.which(cand)
        if exe is None:
            continue
        out = version_output(exe)
        if out is None:
            continue
        first = out.splitlines()[0] if out else cand
        family = "clang" if "clang" in out.lower() else "gcc"
        return Compiler(
            requested=name,
            command=cand if "/" not in cand else exe,
            path=os.path.realpath(exe),
            version=first.strip(),
            version_output=out.strip(),
            family=family,
        )
    raise MachineBuildError(f"compiler {name!r} not found on PATH; {_install_hint(name)}")


def _ccache_setup(compiler: Compiler) -> tuple[str, str | None]:
    """(CC value, directory to put first on PATH) with ccache when it is installed.

    The masquerade directory keeps ``CC=gcc`` in the installed sysconfig, so
    extensions built later do not depend on ccache being there.
    """
    if os.environ.get("REPRO_CCACHE", "1").lower() in ("0", "no", "false", "off"):
        return compiler.command, None
    if shutil.which("ccache") is None:
        return compiler.command, None
    name = Path(compiler.command).name
    for d in ("/usr/lib/ccache", "/usr/lib64/ccache", "/usr/local/lib/ccache"):
        if (Path(d) / name).exists() and "/" not in compiler.command:
            return compiler.command, d
    return f"ccache {compiler.command}", None


# --- sources ------------------------------------------------------------------------


def _strip_file_scheme(s: str) -> str:
    if s.startswith("file://"):
        return s[len("file://") :]
    if s.startswith("file:"):
        return s[len("file:") :]
    return s


def tarball_origin(version: str, source: str | None, base_dir: Path) -> str:
    """Where the tarball for ``version`` comes from: a local path or a URL (not fetched).

    ``source`` (from the recipe or --source) wins, then REPRO_CPYTHON_MIRROR, then
    python.org. Each may be a file, a ``file:`` path, a directory holding
    Python-X.Y.Z.tar.xz (flat or python.org layout), or a URL; ``{v}`` expands.
    """
    origin = source or os.environ.get("REPRO_CPYTHON_MIRROR") or DEFAULT_MIRROR
    origin = origin.replace("{v}", version).replace("{version}", version)
    if is_url(origin) and not origin.startswith("file:"):
        if re.search(r"\.(tar\.xz|tgz|tar\.gz)$", origin):
            return origin
        return f"{origin.rstrip('/')}/{version}/Python-{version}.tar.xz"
    p = Path(_strip_file_scheme(origin)).expanduser()
    if not p.is_absolute():
        p = (base_dir / p).resolve()
    if p.is_dir():
        for sub in (p, p / version):
            for pattern in TARBALL_NAMES:
                cand = sub / pattern.format(v=version)
                if cand.is_file():
                    return str(cand)
        have = sorted(x.name for x in p.glob("Python-*.t*z"))
        listing = ", ".join(have) if have else "no Python-*.tar.xz at all"
        raise MachineBuildError(
            f"no tarball for CPython {version} in mirror directory {p} (it has: {listing})"
        )
    if p.is_file():
        return str(p)
    mirror = os.environ.get("REPRO_CPYTHON_MIRROR")
    if source and mirror and origin != mirror:
        # A recipe's own path, on a machine where it is not: the user's mirror holds
        # the same release (the build's key is the tarball's checksum, not its path).
        return tarball_origin(version, None, base_dir)
    raise MachineBuildError(
        f"CPython source tarball not found: {p}; give one with --set python.source=PATH "
        "(a tarball or a directory of them), or set REPRO_CPYTHON_MIRROR to such a directory"
    )


def fetch_tarball(origin: str, downloads: Path, notify: Callable[[str], None]) -> Path:
    """A local path for the tarball, downloading a URL once into the cache."""
    if not is_url(origin):
        return Path(origin)
    downloads.mkdir(parents=True, exist_ok=True)
    name = origin.rstrip("/").rsplit("/", 1)[-1]
    dest = downloads / name
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest
        would_build(f"download of {origin}")  # a cache lookup never downloads
        notify(f"downloading {origin}")
        tmp = dest.with_name(f".{name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(origin, timeout=60) as resp, tmp.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            raise MachineBuildError(
                f"cannot download {origin}: {getattr(exc, 'reason', exc)}. Without network, "
                "give a local tarball with --set python.source=PATH (`source:` in the "
                "recipe; `repro build cpython` takes --source), or set "
                "REPRO_CPYTHON_MIRROR to a directory holding Python-X.Y.Z.tar.xz"
            ) from None
        os.replace(tmp, dest)
    return dest


# --- patches ------------------------------------------------------------------------


def patch_targets(patch: Path) -> list[str]:
    """Files a patch writes (``+++ b/path``), so a persistent tree can be cleaned of them."""
    out = []
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("+++ "):
            target = line[4:].split("\t", 1)[0].strip()
            if target != "/dev/null":
                out.append(target.split("/", 1)[1] if "/" in target else target)
    return out


def apply_patch(tree: Path, patch: Path, *, log: Callable[[str], None] | None = None) -> None:
    """Apply with ``patch -p1`` after a dry run, so a failure leaves the tree untouched."""
    if shutil.which("patch") is None:
        _git_apply(tree, patch, log)
        return
    base = ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", str(patch)]
    dry = subprocess.run(
        [*base, "--dry-run"], cwd=tree, capture_output=True, text=True, check=False
    )
    if log is not None:
        log(f"$ {' '.join(base)} --dry-run\n{dry.stdout}{dry.stderr}")
    if dry.returncode != 0:
        raise BuildError(
            f"patch {patch} does not apply to {tree}:\n{_failing_hunks(dry.stdout + dry.stderr)}"
        )
    real = subprocess.run(base, cwd=tree, capture_output=True, text=True, check=False)
    if log is not None:
        log(f"$ {' '.join(base)}\n{real.stdout}{real.stderr}")
    if real.returncode != 0:
        raise BuildError(
            f"patch {patch} failed on {tree}:\n{_failing_hunks(real.stdout + real.stderr)}"
        )


def _git_apply(tree: Path, patch: Path, log: Callable[[str], None] | None) -> None:
    proc = subprocess.run(
        ["git", "apply", "-v", "--check", str(patch)],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if log is not None:
        log(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BuildError(f"patch {patch} does not apply to {tree}:\n{proc.stderr.strip()}")
    subprocess.run(["git", "apply", str(patch)], cwd=tree, check=True)


def _failing_hunks(output: str) -> str:
    """The lines of patch's output that say which file and hunk failed."""
    keep = []
    current = None
    for line in output.splitlines():
        if line.startswith(("patching file", "checking file")):
            current = line
            continue
        if re.search(
            r"FAILED|can't find file|Reversed|malformed|garbage|No such file|not found|"
            r"doesn't contain|unexpected",
            line,
        ):
            if current is not None and current not in keep:
                keep.append(current)
            keep.append(line)
    return "\n".join(keep) if keep else output.strip()[-2000:]


# --- configure ----------------------------------------------------------------------


def configure_command(spec: PythonSpec, prefix: Path, cc: str) -> list[str]:
    """The ./configure command line; the options here are exactly those in the key."""
    args = ["./configure", f"--prefix={prefix}"]
    if spec.free_threading:
        args.append("--disable-gil")
    if spec.tsan:
        args.append("--with-thread-sanitizer")
    if spec.debug:
        args.append("--with-pydebug")
    args.append(f"CC={cc}")
    user = list(spec.configure_args)
    if "--enable-shared" in user and not any(a.startswith("LDFLAGS=") for a in user):
        args.append(f"LDFLAGS=-Wl,-rpath,{prefix}/lib")  # so bin/python finds its libpython
    return args + user


def _options(spec: PythonSpec) -> dict[str, Any]:
    return {
        "free_threading": spec.free_threading,
        "tsan": spec.tsan,
        "debug": spec.debug,
        "configure_args": list(spec.configure_args),
    }


def cpython_key(
    source_id: Mapping[str, str], spec: PythonSpec, compiler: Compiler, patch_digests: Sequence[str]
) -> str:
    return cache_key(
        {
            "kind": "cpython",
            "source": dict(source_id),
            "patches": list(patch_digests),
            "options": _options(spec),
            "compiler": {"path": compiler.path, "version": compiler.version_output},
        }
    )


def describe(spec: PythonSpec, compiler: str | None = None, git_ref: str | None = None) -> str:
    if spec.executable:
        return f"CPython at {spec.executable}"
    ref = git_ref or spec.ref or "HEAD"
    if re.fullmatch(r"[0-9a-f]{13,40}", ref):
        ref = ref[:12]
    what = f"CPython {spec.version}" if spec.version else f"CPython {ref}"
    flags = []
    if spec.free_threading:
        flags.append("free-threaded")
    if spec.tsan:
        flags.append("TSAN")
    if spec.debug:
        flags.append("debug")
    flags.append(compiler or spec.compiler)
    if spec.patches:
        flags.append(f"{len(spec.patches)} patch{'es' if len(spec.patches) > 1 else ''}")
    return f"{what} ({', '.join(flags)})"


# --- inspecting an interpreter ------------------------------------------------------

_PROBE = (
    "import json, platform, sys, sysconfig; print(json.dumps({"
    "'version': platform.python_version(), "
    "'gil_disabled': sysconfig.get_config_var('Py_GIL_DISABLED'), "
    "'executable': sys.executable, 'prefix': sys.prefix, "
    "'cc': sysconfig.get_config_var('CC'), "
    "'config_args': sysconfig.get_config_var('CONFIG_ARGS'), "
    "'libdir': sysconfig.get_config_var('LIBDIR'), "
    "'ldlibrary': sysconfig.get_config_var('LDLIBRARY')}))"
)


def probe_python(python: Path) -> dict[str, Any]:
    """Ask an interpreter what it is; a TSAN start-up failure is explained, not dumped."""
    env = child_environ()
    env["TSAN_OPTIONS"] = "report_bugs=0"
    try:
        proc = subprocess.run(
            [*setarch_prefix(), str(python), "-c", _PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"cannot run {python}: {exc}") from None
    if "FATAL: ThreadSanitizer" in proc.stderr or "ThreadSanitizer: CHECK failed" in proc.stderr:
        raise BuildError(
            f"{python} cannot start under TSAN on this machine "
            f"({proc.stderr.strip().splitlines()[0]}); fix: `sysctl vm.mmap_rnd_bits=28` "
            "(as root) or run under `setarch $(uname -m) -R`; see `repro doctor`"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = proc.stderr.strip()[-1500:]
        raise BuildError(f"{python} does not run (exit {proc.returncode}): {err}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def inspect_executable(spec: PythonSpec, base_dir: Path) -> PythonBuild:
    assert spec.executable is not None
    exe = spec.executable
    if "/" in exe:
        p = Path(exe).expanduser()
        path = p if p.is_absolute() else (base_dir / p)
    else:
        found = shutil.which(exe)
        if found is None:
            raise MachineBuildError(f"python executable {exe!r} not found on PATH")
        path = Path(found)
    if not path.exists():
        raise MachineBuildError(f"python executable not found: {path}")
    info = probe_python(path)
    libs = []
    if info.get("libdir") and info.get("ldlibrary"):
        libs.append(Path(info["libdir"]) / str(info["ldlibrary"]))
    tsan = links_runtime(path.resolve(), libs)
    ident = cache_key(
        {"kind": "executable", "path": str(path.resolve()), "sha256": sha256_file(path.resolve())}
    )
    cc = str(info.get("cc") or "")
    return PythonBuild(
        python=path,
        prefix=Path(info["prefix"]),
        key=f"exe-{ident[:16]}",
        version=str(info["version"]),
        gil_disabled=info.get("gil_disabled") == 1,
        tsan=tsan,
        compiler=cc.split()[-1] if cc else "",
        compiler_version="",
        source=str(path),
        source_id=ident,
        configure_args=tuple(str(info.get("config_args") or "").split()),
    )


# --- the persistent build tree ------------------------------------------------------


@dataclass
class _TreeState:
    """What a persistent tree holds now, so the next build knows what to redo."""

    source: str = ""
    commit: str | None = None
    patches: list[str] = field(default_factory=list)
    patch_targets: list[str] = field(default_factory=list)
    configured: bool = False
    prefix: str | None = None
    full_compiles: int | None = None

    @classmethod
    def load(cls, path: Path) -> _TreeState:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)


class _Counter:
    """Counts compiler invocations in make's output for the progress display."""

    def __init__(self, cc: str, progress: BuildProgress, total: int | None) -> None:
        self.pattern = re.compile(
            r"^\s*(?:ccache\s+)?(?:\S*/)?(?:"
            + re.escape(Path(cc.split()[-1]).name)
            + r")\s(?:.*\s)?-c\s"
        )
        self.count = 0
        self.progress = progress
        self.total = total
        self._last = 0.0

    def __call__(self, line: str) -> None:
        if self.pattern.match(line):
            self.count += 1
            now = time.monotonic()
            if now - self._last > 0.2:
                self._last = now
                self.progress.compiled(self.count, self.total)


def _git(tree: Path, *args: str, git_dir: Path | None = None) -> list[str]:
    where = ["--git-dir", str(git_dir), "--work-tree", str(tree)] if git_dir else []
    return ["git", "-C", str(tree), *where, *_GIT_ID, *args]


def _trees_dir(cache: BuildCache) -> Path:
    d = cache.base / "trees"
    d.mkdir(parents=True, exist_ok=True)
    return d


# --- the entry point ----------------------------------------------------------------


def ensure_cpython(
    spec: PythonSpec,
    *,
    base_dir: Path,
    cache: BuildCache,
    git_ref: str | None = None,
    progress: BuildProgress | None = None,
) -> PythonBuild:
    """The interpreter ``spec`` asks for: inspected, found in the cache, or built."""
    prog: BuildProgress = progress or NullProgress()
    if spec.executable:
        return inspect_executable(spec, base_dir)
    compiler = resolve_compiler(spec.compiler)
    patches = [_resolve_path(p, base_dir) for p in spec.patches]
    for p in patches:
        if not p.is_file():
            raise MachineBuildError(f"patch file not found: {p}")
    digests = [sha256_file(p) for p in patches]

    repo: GitRepo | None = None
    tarball: Path | None = None
    if spec.git:
        location = spec.git if is_url(spec.git) else str(_resolve_path(spec.git, base_dir))
        repo = GitRepo.open_cached(location, cache.base)
        sha = repo.resolve(git_ref or spec.ref or "HEAD")
        source_id = {"git_sha": sha}
        source, ident = repo.source, sha
        tree_identity: dict[str, Any] = {"git": repo.source}
    else:
        assert spec.version is not None
        origin = tarball_origin(spec.version, spec.source, base_dir)
        tarball = fetch_tarball(origin, cache.base / "downloads", prog.waiting)
        named = re.match(r"Python-(\d+\.\d+\.\d+\w*)\.t", tarball.name)
        if named and named.group(1) != spec.version:  # fail now, not after a build
            raise BuildError(f"{tarball} is CPython {named.group(1)}, not {spec.version}")
        ident = sha256_file(tarball)
        source_id = {"tarball_sha256": ident}
        source = origin
        tree_identity = {"tarball_sha256": ident}

    key = cpython_key(source_id, spec, compiler, digests)
    hit = cache.lookup(key)
    if hit is not None and cache.lost_file(key) is None:
        return PythonBuild.from_json(hit.meta["python_build"])

    what = describe(spec, compiler.command, git_ref)
    tree_key = cache_key(
        {
            "kind": "cpython-tree",
            **tree_identity,
            "options": _options(spec),
            "compiler": {"path": compiler.path, "version": compiler.version_output},
        }
    )
    tree_root = _trees_dir(cache) / f"cpython-{tree_key[:20]}"

    def build(ctx: BuildContext) -> dict[str, Any]:
        prog.begin(what, key)
        tree_lock = FileLock(str(tree_root) + ".lock")
        try:
            tree_lock.acquire(timeout=0.05)
        except Timeout:
            prog.waiting(f"waiting for another build using the tree {tree_root}")
            tree_lock.acquire()
        try:
            pb = _build_in_tree(
                ctx,
                spec=spec,
                compiler=compiler,
                tree_root=tree_root,
                tarball=tarball,
                repo=repo,
                sha=source_id.get("git_sha"),
                patches=patches,
                prog=prog,
                key=key,
                source=source,
                source_id=ident,
            )
        finally:
            tree_lock.release()
        return {"python_build": pb.to_json()}

    meta = {
        "kind": "cpython",
        "what": what,
        "spec": spec.model_dump(mode="json"),
        "source": source,
        "source_id": source_id,
        "patches": [str(p) for p in patches],
        "patch_sha256": digests,
        "compiler": {
            "command": compiler.command,
            "path": compiler.path,
            "version": compiler.version,
        },
        "tree": str(tree_root),
    }
    try:
        cache.ensure(
            key,
            meta,
            build,
            on_wait=lambda: prog.waiting(f"another repro process is building {what}; waiting"),
            on_damaged=lambda lost: prog.waiting(lost_note(what, lost)),
        )
    except BuildError as exc:
        prog.finish(ok=False, message=str(exc), log=exc.log, tail=exc.tail or tail_lines(exc.log))
        raise
    except BaseException:
        prog.finish(ok=False, message="interrupted", log=None, tail=[])
        raise
    entry = cache.lookup(key)
    if entry is None:  # pragma: no cover - ensure() returned, so the entry exists
        raise BuildError(f"build {key} vanished from the cache")
    prog.finish(ok=True, message="", log=entry.path / "build.log", tail=[])
    return PythonBuild.from_json(entry.meta["python_build"])


def _resolve_path(p: str, base_dir: Path) -> Path:
    q = Path(_strip_file_scheme(p)).expanduser()
    return q if q.is_absolute() else (base_dir / q).resolve()


def _build_in_tree(
    ctx: BuildContext,
    *,
    spec: PythonSpec,
    compiler: Compiler,
    tree_root: Path,
    tarball: Path | None,
    repo: GitRepo | None,
    sha: str | None,
    patches: list[Path],
    prog: BuildProgress,
    key: str,
    source: str,
    source_id: str,
) -> PythonBuild:
    tree = _TreeBuild(ctx, spec, compiler, tree_root, patches, prog)
    tree.sources(tarball, repo, sha)
    tree.apply_patches()
    cmd = tree.configure()
    tree.compile()
    python = tree.install()
    info, tsan = tree.verify(python)
    return PythonBuild(
        python=ctx.dest / "bin" / "python3",
        prefix=ctx.dest,
        key=key,
        version=str(info["version"]),
        gil_disabled=info.get("gil_disabled") == 1,
        tsan=tsan,
        compiler=compiler.command,
        compiler_version=compiler.version,
        source=source,
        source_id=source_id,
        configure_args=tuple(cmd[1:]),
        patches=tuple(str(p) for p in patches),
        log=ctx.dest / "build.log",
    )


class _TreeBuild:
    """One build in a persistent tree, phase by phase: sources back to pristine, patches,
    configure (only when the tree needs it), compile, install and relocate, verify.

    The tree's state file records what each phase left, so that the next build of
    another commit or patch set redoes only what changed.
    """

    def __init__(
        self,
        ctx: BuildContext,
        spec: PythonSpec,
        compiler: Compiler,
        tree_root: Path,
        patches: list[Path],
        prog: BuildProgress,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.compiler = compiler
        self.root = tree_root
        self.patches = patches
        self.prog = prog
        self.src = tree_root / "src"
        self.state_path = tree_root / "tree.json"
        self.state = _TreeState.load(self.state_path)
        tree_root.mkdir(parents=True, exist_ok=True)
        self.cc, ccache_dir = _ccache_setup(compiler)
        env = child_environ()
        if ccache_dir:
            env["PATH"] = f"{ccache_dir}{os.pathsep}{env.get('PATH', '')}"
        # The freshly built python runs during the build; its races are not ours to report.
        env["TSAN_OPTIONS"] = "report_bugs=0 exitcode=0"
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        env["LC_ALL"] = "C"
        self.env = env
        self.setarch = setarch_prefix()
        self.touched: list[str] = []
        self.build_prefix = ctx.dest
        ctx.note(f"tree {self.src}; compiler {compiler.command} ({compiler.version}); CC={self.cc}")

    def save(self) -> None:
        self.state.save(self.state_path)

    def sources(self, tarball: Path | None, repo: GitRepo | None, sha: str | None) -> None:
        """The tree back to the pristine sources of the tarball or commit."""
        if tarball is not None:
            self._tarball_sources(tarball)
        else:
            assert repo is not None and sha is not None
            self._git_sources(repo, sha)
        self.touched = list(self.state.patch_targets)
        _remove_untracked(self.src, self.state.patch_targets, self.ctx, self._git_dir(tarball))
        self.state.patches, self.state.patch_targets = [], []
        self.save()

    def _git_dir(self, tarball: Path | None) -> Path | None:
        # A tarball tree is tracked by a git directory kept *outside* the sources: with a
        # src/.git, CPython would put that repository's commit into sys.version.
        return self.root / "pristine.git" if tarball is not None else None

    def _tarball_sources(self, tarball: Path) -> None:
        ctx, src = self.ctx, self.src
        git_dir = self.root / "pristine.git"
        sig = f"tarball:{sha256_file(tarball)}"
        if (src / ".git").is_dir() and not git_dir.exists():  # older layout
            os.replace(src / ".git", git_dir)
        if self.state.source == sig and git_dir.exists():
            self.prog.phase("extract", "reusing the build tree")
            ctx.run(
                _git(src, "reset", "-q", "--hard", git_dir=git_dir),
                cwd=src,
                step="resetting the tree",
            )
            return
        self.prog.phase("extract", tarball.name)
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(git_dir, ignore_errors=True)
        self.state = _TreeState(source=sig)
        self.save()
        src.mkdir(parents=True)
        ctx.run(
            ["tar", "-xf", str(tarball), "-C", str(src), "--strip-components=1"],
            cwd=self.root,
            step="extracting the tarball",
        )
        ctx.run(_git(src, "init", "-q", git_dir=git_dir), cwd=src, step="git init")
        ctx.run(_git(src, "add", "-A", "-f", git_dir=git_dir), cwd=src, step="git add")
        message = "pristine " + tarball.name
        ctx.run(
            _git(src, "commit", "-q", "--no-verify", "-m", message, git_dir=git_dir),
            cwd=src,
            step="git commit",
        )

    def _git_sources(self, repo: GitRepo, sha: str) -> None:
        self.prog.phase("fetch", sha[:12])
        sig = f"git:{repo.source}"
        if self.state.source != sig:
            self.state = _TreeState(source=sig)
        if self.state.commit and self.state.commit != sha and (self.src / "configure").exists():
            changed = repo.changed_files(self.state.commit, sha)
            if any(_is_configure_input(f) for f in changed):
                self.ctx.note("configure inputs changed between the commits: reconfiguring")
                self.state.configured = False
        repo.worktree(sha, self.src)
        self.state.commit = sha

    def apply_patches(self) -> None:
        if not self.patches:
            return
        self.prog.phase("patch", f"{len(self.patches)} file(s)")
        for p in self.patches:
            self.state.patch_targets += patch_targets(p)
            self.save()
            apply_patch(self.src, p, log=self.ctx.note)
            self.state.patches.append(str(p))
        self.save()

    def configure(self) -> list[str]:
        """Configure only when the tree needs it; returns the configure command.

        Every build of a tree shares one configured prefix (inside the tree); ``make
        install`` goes to a DESTDIR and the result is relocated to the cache entry. A
        configure per entry (for its prefix) would make every object that depends on the
        Makefile rebuild; and configure with a cache file is not equivalent to a fresh
        one (CPython's configure sets some variables only when a check really runs), so
        it is never used.
        """
        ctx, src, state = self.ctx, self.src, self.state
        shared = "--enable-shared" in self.spec.configure_args
        self.build_prefix = ctx.dest if shared else _build_prefix(self.root, ctx.dest)
        touched = self.touched + [t for p in self.patches for t in patch_targets(p)]
        if any(_is_configure_input(f) for f in touched):
            state.configured = False
        cmd = configure_command(self.spec, self.build_prefix, self.cc)
        fresh = state.configured and state.prefix == str(self.build_prefix)
        if fresh and (src / "Makefile").exists():
            ctx.note(f"tree already configured for {self.build_prefix}")
            return cmd
        self.prog.phase("configure")
        before = _snapshot(src)
        state.configured = False
        self.save()
        ctx.run([*self.setarch, *cmd], cwd=src, env=self.env, step="configure")
        kept = _keep_mtimes(src, before, state.prefix, str(self.build_prefix))
        if kept:
            ctx.note(f"configure left these unchanged (mtimes kept): {', '.join(kept)}")
        state.configured = True
        state.prefix = str(self.build_prefix)
        self.save()
        return cmd

    def compile(self) -> None:
        self.prog.phase("compile")
        counter = _Counter(self.cc, self.prog, self.state.full_compiles)
        jobs = str(os.cpu_count() or 2)
        self.ctx.run(
            [*self.setarch, "make", f"-j{jobs}"],
            cwd=self.src,
            env=self.env,
            step="make",
            on_line=counter,
        )
        self.prog.compiled(counter.count, counter.count)
        if self.state.full_compiles is None or counter.count > self.state.full_compiles:
            self.state.full_compiles = counter.count
        self.save()
        self.ctx.note(f"compiled {counter.count} files")

    def install(self) -> Path:
        """``make install`` to a DESTDIR, relocated into the cache entry; the python.

        Byte-compiling the whole stdlib three times under TSAN takes minutes per build;
        only the top level is compiled now, the rest on first import. pip (ensurepip)
        is installed without compiling for the same reason.
        """
        ctx = self.ctx
        self.prog.phase("install")
        destdir = ctx.scratch / "root"
        ctx.run(
            [*self.setarch, "make", "install", f"DESTDIR={destdir}", "PYTHON_FOR_BUILD=:"],
            cwd=self.src,
            env=self.env,
            step="make install",
        )
        installed = destdir / str(self.build_prefix).lstrip("/")
        for child in installed.iterdir():
            os.replace(child, ctx.staging / child.name)
        if self.build_prefix != ctx.dest:
            texts, binaries = relocate(
                ctx.staging, str(self.build_prefix), str(ctx.dest), skip=[ctx.log_path]
            )
            ctx.note(f"relocated {self.build_prefix} -> {ctx.dest} in {len(texts)} text files")
            if binaries:
                ctx.note(f"relocated in binaries (NUL-padded strings): {binaries[:10]}")
        bin_dir = ctx.staging / "bin"
        if not (bin_dir / "python3").exists():
            cands = sorted(bin_dir.glob("python3.[0-9]*"), key=lambda p: len(p.name))
            cands = [c for c in cands if not c.name.endswith("-config")]
            if not cands:
                raise BuildError("make install produced no bin/python3*", log=ctx.log_path)
            (bin_dir / "python3").symlink_to(cands[0].name)
        no_pip = ("--without-ensurepip", "--with-ensurepip=no")
        if not any(a in self.spec.configure_args for a in no_pip):
            pip = install_bundled_pip(self.src / "Lib", ctx.staging, ctx.dest / "bin" / "python3")
            ctx.note(f"pip: {pip or 'no bundled wheel'}")
        return bin_dir / "python3"

    def verify(self, python: Path) -> tuple[dict[str, Any], bool]:
        """The interpreter must be what was asked for; its probe and whether TSAN is in."""
        ctx, spec = self.ctx, self.spec
        self.prog.phase("verify")
        info = probe_python(python)
        ctx.note(f"probe: {canonical_json(info)}")
        problems = []
        if spec.version and info["version"] != spec.version:
            problems.append(f"version is {info['version']}, expected {spec.version}")
        gil_disabled = info.get("gil_disabled") == 1
        if gil_disabled != spec.free_threading:
            problems.append(
                f"Py_GIL_DISABLED is {info.get('gil_disabled')}, expected "
                f"{1 if spec.free_threading else 0}"
            )
        libs = [ctx.staging / "lib" / str(info["ldlibrary"])] if info.get("ldlibrary") else []
        tsan = links_runtime(python.resolve(), libs)
        if tsan != spec.tsan:
            problems.append(
                "the TSAN runtime is " + ("linked in but was not asked for" if tsan else "missing")
            )
        if info.get("libdir") != str(ctx.dest / "lib"):
            problems.append(f"sysconfig LIBDIR is {info.get('libdir')}, not {ctx.dest / 'lib'}")
        if problems:
            raise BuildError(
                "the built interpreter is wrong: " + "; ".join(problems), log=ctx.log_path
            )
        return info, tsan


def install_bundled_pip(stdlib_src: Path, prefix: Path, final_python: Path) -> str | None:
    """Unpack the pip wheel that CPython bundles for ensurepip, without running pip.

    ``make install`` would run ensurepip with the new interpreter, which under TSAN
    takes minutes per build (a bisection pays it at every step); a wheel is a zip
    of pure Python, so unpacking it and writing the console scripts is equivalent.
    """
    wheels = sorted((stdlib_src / "ensurepip" / "_bundled").glob("pip-*.whl"))
    site = sorted(prefix.glob("lib/python3*/site-packages"))
    if not wheels or not site:
        return None
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site[0])
        names = zf.namelist()
    dist_info = next((n.split("/", 1)[0] for n in names if ".dist-info/" in n), None)
    scripts: dict[str, str] = {}
    if dist_info is not None:
        (site[0] / dist_info / "INSTALLER").write_text("repro\n")
        entry_points = site[0] / dist_info / "entry_points.txt"
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        if entry_points.exists():
            parser.read(entry_points)
        if parser.has_section("console_scripts"):
            scripts = dict(parser.items("console_scripts"))
    bin_dir = prefix / "bin"
    for name, target in scripts.items():
        module, _, func = target.strip().partition(":")
        path = bin_dir / name
        path.write_text(
            f"#!{final_python}\n"
            "import sys\n"
            f"from {module} import {func.split('.')[0]}\n"
            "if __name__ == '__main__':\n"
            f"    sys.exit({func}())\n"
        )
        path.chmod(0o755)
    return wheel.name


# Files ./configure writes that make treats as inputs of big rebuilds (Modules/config.c
# alone is a prerequisite of every built-in module, Makefile of the frozen modules).
# Only the prefix differs between two builds of one tree, so when that is all that
# changed their mtimes are put back, and the one object that embeds the prefix
# (getpath.o, whose -DPREFIX comes from the Makefile) is removed so it is rebuilt;
# the sysconfig data is regenerated from the new Makefile because python relinks.
_CONFIGURE_OUTPUTS = (
    "config.status",
    "Makefile.pre",
    "Makefile",
    "pyconfig.h",
    "Modules/config.c",
    "Modules/Setup.bootstrap",
    "Modules/Setup.stdlib",
    "Modules/Setup.local",
)
_PREFIX_OBJECTS = ("Modules/getpath.o",)


_CONFIGURE_INPUTS = re.compile(
    r"^(configure|configure\.ac|aclocal\.m4|Makefile\.pre\.in|pyconfig\.h\.in|"
    r"Modules/Setup.*|Modules/makesetup|Misc/python.*\.in)$"
)


def _is_configure_input(path: str) -> bool:
    return bool(_CONFIGURE_INPUTS.match(path))


def _build_prefix(tree_root: Path, dest: Path) -> Path:
    """The tree's configured prefix, longer than any entry's path (see relocate)."""
    base = tree_root / "prefix-"
    pad = max(0, len(str(dest)) - len(str(base))) + 16
    return Path(str(base) + "x" * pad)


def relocate(
    root: Path, old: str, new: str, *, skip: Sequence[Path] = ()
) -> tuple[list[str], list[str]]:
    """Replace the build prefix by the real one in every file under ``root``.

    Text files (sysconfig data, the installed Makefile, pkg-config files,
    python-config, script shebangs) are rewritten. Binaries hold the prefix in
    NUL-terminated strings (getpath's PREFIX, which an embedding program such as a
    PyO3 test binary falls back on to find the stdlib): there the string is rewritten
    in place and padded with NULs, which is why the build prefix is longer than any
    entry's path. Returns (text files changed, binaries changed).
    """
    old_b, new_b = old.encode(), new.encode()
    texts, binaries = [], []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            if p.is_symlink() or not p.is_file() or p in skip:
                continue
            data = p.read_bytes()
            if old_b not in data:
                continue
            rel = str(p.relative_to(root))
            if b"\0" in data:
                if len(new_b) > len(old_b):
                    raise BuildError(f"cannot relocate {rel}: the new prefix is longer")
                fixed = _replace_in_c_strings(data, old_b, new_b)
                binaries.append(rel)
            else:
                fixed = data.replace(old_b, new_b)
                texts.append(rel)
            mode = p.stat().st_mode
            p.write_bytes(fixed)
            os.chmod(p, mode)
    return texts, binaries


def _replace_in_c_strings(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace inside each NUL-terminated string, padding it back to its length."""
    out = bytearray(data)
    i = data.find(old)
    while i != -1:
        end = data.find(b"\0", i)
        if end == -1:
            end = len(data)
        segment = data[i:end]
        replaced = segment.replace(old, new)
        out[i:end] = replaced + b"\0" * (len(segment) - len(replaced))
        i = data.find(old, end)
    return bytes(out)


def _snapshot(src: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for rel in _CONFIGURE_OUTPUTS:
        p = src / rel
        try:
            out[rel] = (p.stat().st_mtime_ns, p.read_bytes())
        except OSError:
            continue
    return out


def _keep_mtimes(
    src: Path, before: Mapping[str, tuple[int, bytes]], old_prefix: str | None, new_prefix: str
) -> list[str]:
    """Put back the mtimes of outputs that differ at most by the prefix; say which."""
    kept: list[str] = []
    if "Makefile" not in before or not old_prefix:
        return kept
    for rel, (mtime, old) in before.items():
        p = src / rel
        try:
            raw = p.read_bytes()
        except OSError:
            continue
        if raw.replace(new_prefix.encode(), old_prefix.encode()) == old:
            os.utime(p, ns=(mtime, mtime))
            kept.append(rel)
    if "Makefile" in kept and old_prefix != new_prefix:
        for rel in _PREFIX_OBJECTS:
            (src / rel).unlink(missing_ok=True)
    return kept


def _remove_untracked(
    src: Path, paths: Sequence[str], ctx: BuildContext, git_dir: Path | None
) -> None:
    """Files that an earlier patch created are not undone by a reset; remove them."""
    for rel in paths:
        p = src / rel
        if not p.exists():
            continue
        tracked = subprocess.run(
            _git(src, "ls-files", "--error-unmatch", rel, git_dir=git_dir),
            capture_output=True,
            check=False,
        )
        if tracked.returncode != 0:
            ctx.note(f"removing {rel} (created by an earlier patch)")
            p.unlink()
