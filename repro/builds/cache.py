"""A content-addressed store of finished builds, shared by every repro process.

Builds cost minutes and a bisection asks for the same ones again and again, so an
entry is named by everything that changes its result and nothing else. Entries
appear atomically (a killed build never leaves something that looks finished), and
failures are remembered so that a bisection skips a commit that cannot build
instead of paying for the failure twice.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

from repro.builds.stop import BuildCancelled, check_stop, current_stop, kill_group
from repro.errors import ReproError
from repro.paths import cache_dir

# Bump when a builder changes how it builds: old entries then stop matching.
BUILD_RECIPE_VERSION = 1

META_FILE = "repro-build.json"
LOG_FILE = "build.log"
# The files a build made, one relative path a line: an entry that lost one since (a
# reproducer that ran `make clean` or deleted its build) is built again, not trusted.
MANIFEST_FILE = "repro-files.txt"


class BuildError(ReproError):
    """A build that failed; ``log`` and ``tail`` say why, ``key`` which one."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        log: Path | None = None,
        tail: list[str] | None = None,
        record: bool = True,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.log = log
        self.tail = tail or []
        # False when the build was killed from outside: that says nothing about the
        # source, so it must not mark the commit as unbuildable.
        self.record = record


class MachineBuildError(BuildError):
    """A build that cannot start on this machine, whatever is built: no compiler, no
    CPython source to be had, no interpreter where the recipe says. A bisect must not
    take it for the commit under test failing to build (every commit would), and the
    cache must not remember it against the build: once the machine is mended, it builds.
    """

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **{**kwargs, "record": False})


class NotInCache(Exception):
    """Raised, within ``lookup_only()``, where a build would start: the entry is not there."""


_LOOKUP_ONLY: ContextVar[bool] = ContextVar("repro_cache_lookup_only", default=False)


@contextlib.contextmanager
def lookup_only() -> Iterator[None]:
    """Within it, a build the cache lacks raises ``NotInCache`` instead of starting.

    "Is all that this commit needs built already?" is then asked through the same code
    that builds it, so the answer cannot drift from the keys the builders compute.
    """
    token = _LOOKUP_ONLY.set(True)
    try:
        yield
    finally:
        _LOOKUP_ONLY.reset(token)


def would_build(key: str) -> None:
    """Where a builder is about to build (or to remove a damaged entry of) ``key``: within
    ``lookup_only()``, say it is not in the cache instead."""
    if _LOOKUP_ONLY.get():
        raise NotInCache(key)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the inputs (order of dict keys never matters)."""
    return hashlib.sha256(
        canonical_json({**parts, "_recipe": BUILD_RECIPE_VERSION}).encode()
    ).hexdigest()


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per (path, size, mtime) in a process: a bisect
    asks for the CPython tarball's at every commit, and it is 20 MB."""
    st = path.stat()
    ident = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    known = _FILE_DIGESTS.get(ident)
    if known is not None:
        return known
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    _FILE_DIGESTS[ident] = digest = h.hexdigest()
    return digest


def tail_lines(path: Path | None, n: int = 30) -> list[str]:
    if path is None or not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        data = f.read().decode("utf-8", "replace")
    return data.splitlines()[-n:]


@dataclass
class BuildContext:
    """What a build function gets: where to put the result and where to log.

    ``dest`` is the final path (builds that embed their prefix, like CPython, need
    it); ``staging`` is where the result goes for now and is renamed to ``dest``
    once the function returns. For in-place builds the two are the same.
    """

    key: str
    dest: Path
    staging: Path
    log_path: Path
    log: IO[str]
    scratch: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.log.write(f"[repro {time.strftime('%H:%M:%S')}] {text}\n")
        self.log.flush()

    def run(
        self,
        cmd: list[str] | str,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        step: str,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run a command, its output appended to the log; failure is a BuildError."""
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)  # pasteable into a shell
        check_stop()
        self.note(f"$ {shown}  (in {cwd})")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise BuildError(
                f"{step}: cannot run {shown!r}: {exc.strerror}: {exc.filename}",
                key=self.key,
                log=self.log_path,
            ) from None
        assert proc.stdout is not None
        stop = current_stop()
        if stop is not None:
            stop.started(proc)
        try:
            for line in proc.stdout:
                self.log.write(line)
                if on_line is not None:
                    on_line(line)
                if deadline is not None and time.monotonic() > deadline:
                    _kill_group(proc)
                    raise BuildError(
                        f"{step} timed out after {timeout:.0f} s", key=self.key, log=self.log_path
                    )
            rc = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if stop is not None:
                stop.ended(proc)
            self.log.flush()
        if rc != 0 and stop is not None and stop.stopped:
            self.note("stopped: its probe was no longer needed")
            raise BuildCancelled(f"{step} was stopped")
        if rc != 0:
            self.note(f"exit status {rc}")
            killed = rc < 0
            raise BuildError(
                f"{step} was killed by signal {-rc}"
                if killed
                else f"{step} failed (exit status {rc})",
                key=self.key,
                log=self.log_path,
                tail=tail_lines(self.log_path),
                record=not killed,
            )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    kill_group(proc)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


BuildFn = Callable[[BuildContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class BuildEntry:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def what(self) -> str:
        return str(self.meta.get("what") or self.meta.get("kind") or "?")

    @property
    def finished(self) -> float:
        return float(self.meta.get("finished", 0.0))

    @property
    def last_used(self) -> float:
        try:
            return (self.path / META_FILE).stat().st_mtime
        except OSError:
            return self.finished

    def size(self) -> int:
        return _tree_size(self.path)


@dataclass(frozen=True)
class FailureRecord:
    key: str
    meta: dict[str, Any]
    error: str
    log: Path | None
    when: float


class BuildCache:
    """Builds under ``<base>/builds/<key>`` (base defaults to :func:`cache_dir`).

    ``retry_failed`` makes known failures build again instead of failing fast; it
    lives on the cache so a CLI flag reaches every builder without plumbing
    (``retry_failed_default``: what `--retry-failed` of stress and bisect sets for
    every cache the command opens).
    """

    retry_failed_default: bool = False

    def __init__(self, base: Path | None = None, *, retry_failed: bool | None = None) -> None:
        self.base = (base if base is not None else cache_dir()).absolute()
        self.root = self.base / "builds"
        self.retry_failed = (
            BuildCache.retry_failed_default if retry_failed is None else retry_failed
        )
        for sub in (self.root, self.root / "failed", self.root / ".locks"):
            sub.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str) -> FileLock:
        return FileLock(str(self.root / ".locks" / f"{key}.lock"))

    def lookup(self, key: str) -> BuildEntry | None:
        """The finished entry, or None; cheap (one small file), so hits are instant."""
        meta_path = self.path(key) / META_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):
            os.utime(meta_path)  # last use, for prune
        return BuildEntry(key, self.path(key), meta)

    def lost_file(self, key: str) -> str | None:
        """A file the build of ``key`` made that is gone now (None: none is, or the
        entry is older than manifests)."""
        root = self.path(key)
        try:
            listed = (root / MANIFEST_FILE).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return None
        for rel in listed.splitlines():
            if rel and not os.path.lexists(root / rel):
                return rel
        return None

    def failure(self, key: str) -> FailureRecord | None:
        p = self.root / "failed" / f"{key}.json"
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        log = self.root / "failed" / f"{key}.log"
        return FailureRecord(
            key=key,
            meta=dict(data.get("meta", {})),
            error=str(data.get("error", "")),
            log=log if log.exists() else None,
            when=float(data.get("when", 0.0)),
        )

    def forget_failure(self, key: str) -> None:
        for suffix in (".json", ".log"):
            (self.root / "failed" / f"{key}{suffix}").unlink(missing_ok=True)

    def ensure(
        self,
        key: str,
        meta: Mapping[str, Any],
        build_fn: BuildFn,
        *,
        in_place: bool = False,
        retry_failed: bool | None = None,
        on_wait: Callable[[], None] | None = None,
        on_damaged: Callable[[str], None] | None = None,
    ) -> Path:
        """The entry for ``key``, building it with ``build_fn`` if needed (once per key).

        ``in_place`` builds straight into the final directory, for results that cannot
        move after the fact (git worktrees, virtualenvs); such an entry counts as
        finished only once its metadata file is written, which is atomic too.
        """
        if self.lookup(key) is not None and self.lost_file(key) is None:
            return self.path(key)
        would_build(key)
        retry = self.retry_failed if retry_failed is None else retry_failed
        lock = self.lock(key)
        try:
            lock.acquire(timeout=0.05)
        except Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            if self.lookup(key) is not None:
                lost = self.lost_file(key)
                if lost is None:
                    return self.path(key)
                if on_damaged is not None:
                    on_damaged(lost)
                # _build removes what is left of it; a run that used it is not undone.
            known = self.failure(key)
            if known is not None and not retry:
                raise BuildError(
                    f"this build failed before ({known.error}); log: {known.log}; "
                    "pass --retry-failed (to repro stress, bisect or build) to try again",
                    key=key,
                    log=known.log,
                    tail=tail_lines(known.log),
                )
            self.forget_failure(key)
            return self._build(key, meta, build_fn, in_place)
        finally:
            lock.release()

    def _build(self, key: str, meta: Mapping[str, Any], build_fn: BuildFn, in_place: bool) -> Path:
        dest = self.path(key)
        if dest.exists():  # a killed in-place build, or a leftover: never half an entry
            _rmtree(dest)
        staging = (
            dest if in_place else Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=self.root))
        )
        staging.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".scratch-{key[:16]}-", dir=self.root))
        log_path = staging / LOG_FILE
        started = time.time()
        with log_path.open("w", encoding="utf-8", errors="replace") as log:
            ctx = BuildContext(key, dest, staging, log_path, log, scratch)
            ctx.note(f"building {meta.get('what', key)} (key {key})")
            try:
                extra = build_fn(ctx) or {}
            except BaseException as exc:
                recordable = isinstance(exc, ReproError) and getattr(exc, "record", True)
                ctx.note(f"FAILED: {exc}")
                log.flush()
                if recordable:
                    self._record_failure(key, meta, str(exc), log_path, started)
                _rmtree(staging)
                _rmtree(scratch)
                if isinstance(exc, BuildError):
                    failed_log = self.root / "failed" / f"{key}.log"
                    exc.key = key
                    exc.log = failed_log if failed_log.exists() else None
                    if not exc.tail:
                        exc.tail = tail_lines(exc.log)
                raise
            ctx.note(f"finished in {time.time() - started:.1f} s")
        _rmtree(scratch)
        record = {
            **meta,
            **extra,
            "key": key,
            "started": started,
            "finished": time.time(),
            "seconds": round(time.time() - started, 1),
            "log": str(dest / LOG_FILE),
            "recipe_version": BUILD_RECIPE_VERSION,
        }
        _write_manifest(staging)
        tmp_meta = staging / f".{META_FILE}.tmp"
        tmp_meta.write_text(json.dumps(record, indent=2, sort_keys=True))
        if in_place:
            os.replace(tmp_meta, dest / META_FILE)
        else:
            os.replace(tmp_meta, staging / META_FILE)
            os.replace(staging, dest)
        return dest

    def _record_failure(
        self, key: str, meta: Mapping[str, Any], error: str, log_path: Path, started: float
    ) -> None:
        failed = self.root / "failed"
        if log_path.exists():
            shutil.copyfile(log_path, failed / f"{key}.log")
        data = {
            "key": key,
            "meta": dict(meta),
            "error": error,
            "when": time.time(),
            "seconds": round(time.time() - started, 1),
        }
        tmp = failed / f".{key}.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, failed / f"{key}.json")

    def list(self) -> list[BuildEntry]:
        entries = []
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".") or p.name == "failed" or not p.is_dir():
                continue
            entry = self._peek(p.name)
            if entry is not None:
                entries.append(entry)
        return entries

    def commits(self) -> set[str]:
        """Every commit some finished entry was built from (an extension's, a package's or
        a CPython's git sha): a cheap first sieve before asking whether a commit's whole
        build is here (``lookup_only``)."""
        out: set[str] = set()
        for entry in self.list():
            source = entry.meta.get("source_id")
            for sha in (
                entry.meta.get("sha"),
                source.get("git_sha") if isinstance(source, dict) else None,
            ):
                if isinstance(sha, str):
                    out.add(sha)
        return out

    def failures(self) -> builtins.list[FailureRecord]:
        out = []
        for p in sorted((self.root / "failed").glob("*.json")):
            rec = self.failure(p.stem)
            if rec is not None:
                out.append(rec)
        return out

    def _peek(self, key: str) -> BuildEntry | None:
        try:
            meta = json.loads((self.path(key) / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        return BuildEntry(key, self.path(key), meta)

    def prune(self, older_than: timedelta) -> builtins.list[BuildEntry]:
        """Remove entries unused for ``older_than`` (and stale failures and leftovers).

        An entry being built or waited for holds its lock and is left alone.
        """
        cutoff = time.time() - older_than.total_seconds()
        removed = []
        for entry in self.list():
            if entry.last_used >= cutoff:
                continue
            lock = self.lock(entry.key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                _rmtree(entry.path)
                removed.append(entry)
            finally:
                lock.release()
        for rec in self.failures():
            if rec.when < cutoff:
                self.forget_failure(rec.key)
        for p in self.root.iterdir():
            if p.name.startswith((".tmp-", ".scratch-")) and p.stat().st_mtime < cutoff:
                _rmtree(p)
        self._prune_work_dirs(cutoff)
        return removed

    def _prune_work_dirs(self, cutoff: float) -> None:
        """Build trees and cargo target dirs (GBs each) not used since ``cutoff``.

        A build tree's tree.json is rewritten by every build that uses the tree, and
        its lock is held meanwhile; a cargo target dir's mtime changes when cargo
        writes into it.
        """
        trees = self.base / "trees"
        if trees.is_dir():
            for t in trees.iterdir():
                if not t.is_dir():
                    continue
                stamp = t / "tree.json"
                used = stamp.stat().st_mtime if stamp.exists() else t.stat().st_mtime
                if used >= cutoff:
                    continue
                lock = FileLock(str(t) + ".lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                try:
                    _rmtree(t)
                finally:
                    lock.release()
        targets = self.base / "cargo-target"
        if targets.is_dir():
            for t in targets.iterdir():
                if t.is_dir() and t.stat().st_mtime < cutoff:
                    _rmtree(t)


# Directories whose files their tools replace and delete as they go (rustc's incremental
# sessions, cargo's fingerprints, bytecode caches): a reproducer that runs `cargo test`
# there changes them without damaging the build.
_VOLATILE_DIRS = frozenset({"incremental", ".fingerprint", "__pycache__", ".pytest_cache", ".git"})


def _write_manifest(root: Path) -> None:
    """The files under ``root`` (links as themselves, not followed), for ``lost_file``."""
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _VOLATILE_DIRS]
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            rel = str(base / name) if str(base) != "." else name
            if rel not in (LOG_FILE, META_FILE, MANIFEST_FILE) and not name.startswith(
                f".{META_FILE}"
            ):
                rels.append(rel)
        dirnames.sort()
    with contextlib.suppress(OSError):
        (root / MANIFEST_FILE).write_text(
            "\n".join(sorted(rels)) + "\n", encoding="utf-8", errors="surrogateescape"
        )


def _rmtree(path: Path) -> None:
    if not path.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # read-only bits (e.g. Go/cargo caches): make writable and retry
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, d), 0o755)
        shutil.rmtree(path, ignore_errors=True)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total
