"""The run directory on disk: its event log, its lock, its derived files.

Results are appended one JSON line per event and flushed at once, so a Ctrl-C, a
kill or a crash of repro loses at most the run in flight; the summary files are
derived data, rewritten atomically, and can always be rebuilt from the event log.
One process at a time may write a run directory: two resumes of the same directory
would run the same indices twice and count them twice.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from repro.errors import ReproError
from repro.runlog.events import BadEvent, Event, RunEvent, SignatureEvent, event_from_json
from repro.runlog.fold import Record, fold

LOCK_NAME = ".lock"
# The files a run's commands take from the recipe's folder, as they were when it began.
RECIPE_FILES = "recipe-files"
KEPT_FILE_LIMIT = 1_000_000


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        # A full disk fails the write with no file named: name the one it was, and leave
        # no half-written temporary beside it.
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())
    return out.strip("-")[:60] or "run"


@dataclass
class RunDir:
    path: Path
    problems: list[str] = field(default_factory=list)  # lines of the log that were skipped
    _lock: FileLock | None = None
    mended: int = 0  # bytes of a torn last line cut when this process took the directory

    @classmethod
    def create(cls, base: Path, name: str, kind: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Absolute: TSAN's log_path is resolved in the reproducer's working directory.
        base = base.expanduser().absolute()
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReproError(
                f"cannot create the runs directory {base}: {exc.strerror or exc}"
            ) from None
        if not base.is_dir():
            raise ReproError(f"the runs directory {base} is not a directory")
        for n in range(1000):
            suffix = "" if n == 0 else f"-{n}"
            path = base / f"{slug(name)}-{kind}-{stamp}{suffix}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise ReproError(f"cannot create {path}: {exc.strerror or exc}") from None
            rd = cls(path)
            rd.logs.mkdir()
            rd.lock()
            return rd
        raise ReproError(f"cannot create a run directory under {base}")

    def keep_recipe(self, recipe: Path, names: Iterable[str], command: str = "") -> None:
        """The recipe as run, and the files its commands take from its folder (``names``,
        and the command's words that are files there): a report written after one was
        edited carried the edited text as the reproducer that ran (sweep 18)."""
        shutil.copyfile(recipe, self.path / "recipe.yaml")
        try:
            words = shlex.split(command)
        except ValueError:
            words = []
        base = recipe.parent
        for name in dict.fromkeys([*names, *words]):
            if not name or Path(name).is_absolute() or ".." in Path(name).parts:
                continue
            src = base / name
            try:
                if not src.is_file() or src.stat().st_size > KEPT_FILE_LIMIT:
                    continue
                dest = self.path / RECIPE_FILES / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
            except OSError:
                continue  # the run goes on; its report reads the folder as before

    @classmethod
    def open(cls, path: Path) -> RunDir:
        path = path.expanduser().absolute()
        if not (path / "meta.json").is_file():
            raise ReproError(f"{path}: not a repro run directory (no meta.json)")
        return cls(path)

    def lock(self) -> None:
        """Hold the directory for this process (until it exits), or refuse at once."""
        if self._lock is not None:
            return
        lock = FileLock(str(self.path / LOCK_NAME))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ReproError(
                f"{self.path}: another repro process is using this run directory; "
                "wait for it to finish (or stop it) before resuming"
            ) from None
        except OSError as exc:
            raise ReproError(f"{self.path}: cannot lock: {exc.strerror or exc}") from None
        self._lock = lock
        self._mend_torn_end()

    def _mend_torn_end(self) -> None:
        """Cut a last line that a kill left without its newline: the next event appended
        would run on from it, and the two would be one unreadable line (a run lost).
        Only the holder of the lock writes, so only it may cut."""
        try:
            with self.events_path.open("rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return
                start = max(0, size - (1 << 20))
                f.seek(start)
                tail = f.read()
                if b"\n" not in tail and start > 0:
                    # No event line is that long: not a torn event. Ended, so that the
                    # next event starts a line of its own (the tail is named as not JSON).
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                    return
                cut = start + tail.rfind(b"\n") + 1
                f.truncate(cut)
        except FileNotFoundError:
            return
        self.mended = size - cut

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_json_atomic(self.path / "meta.json", dict(meta))

    def meta(self) -> dict[str, Any]:
        path = self.path / "meta.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReproError(f"{path}: unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise ReproError(f"{path}: not a JSON object (a damaged run directory)")
        return data

    def update_meta(self, **changes: Any) -> None:
        meta = self.meta()
        meta.update(changes)
        self.write_meta(meta)

    def append(self, event: Event) -> None:
        """Write one event with a single write(2) on an O_APPEND descriptor.

        Once write returns, the line survives a Ctrl-C or a SIGKILL of repro (it is in
        the kernel); there is no fsync per event, which would cost more than a fast
        reproducer's run and only guards against the machine itself crashing.
        """
        line = (json.dumps(event.to_json(), separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def events(self) -> Iterator[Event]:
        """Every readable event, in log order.

        A line torn by a kill mid-write (the last one, without its newline) is
        ignored; any other line that cannot be read is skipped and named in
        ``problems`` (file and line), so a damaged log still gives what it holds.
        """
        self.problems = []
        if self.mended:
            self.problems.append(
                f"{self.events_path}: its last line was cut short by a kill mid-write "
                f"({self.mended} bytes); left out, and the resume goes on after it"
            )
        if self.signatures_path.is_file():
            # Older run directories kept signatures only in this file.
            try:
                for entry in json.loads(self.signatures_path.read_text(encoding="utf-8")):
                    yield SignatureEvent.from_json(entry)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                self.problems.append(f"{self.signatures_path}: skipped ({exc})")
        if not self.events_path.exists():
            if (self.path / "summary.json").exists():
                # Runs were made (their summary is here) and their record is not: every
                # figure folded now would read as a run that never ran.
                self.problems.append(
                    f"{self.events_path}: missing, though {self.path / 'summary.json'} "
                    "says runs were made: the record of those runs is gone"
                )
            return
        unknown: Counter[str] = Counter()
        seen_runs: set[int] = set()
        doubled: list[str] = []
        with self.events_path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    self.problems.append(
                        f"{self.events_path}:{number}: cut short ({len(raw)} bytes without "
                        "an end: a kill mid-write, or a run still writing), left out"
                    )
                    break
                where = f"{self.events_path}:{number}"
                try:
                    decoded = json.loads(raw.decode("utf-8"))
                    event = event_from_json(decoded)
                except UnicodeDecodeError:
                    self.problems.append(f"{where}: not UTF-8, skipped")
                    continue
                except json.JSONDecodeError as exc:
                    self.problems.append(f"{where}: not JSON ({exc.msg}), skipped")
                    continue
                except BadEvent as exc:
                    self.problems.append(f"{where}: {exc}, skipped")
                    continue
                if event is None:
                    unknown[str(decoded.get("event"))] += 1
                    continue
                if isinstance(event, RunEvent):
                    # The fold counts a run once; a log that holds one twice (edited, or
                    # joined from two copies) is worth saying, not only surviving.
                    if event.index in seen_runs:
                        doubled.append(f"{where}: run {event.index} again, counted once")
                    seen_runs.add(event.index)
                yield event
        self.problems.extend(doubled[:5])
        if len(doubled) > 5:
            self.problems.append(f"{self.events_path}: {len(doubled) - 5} more repeated runs")
        if unknown:
            kinds = ", ".join(f"{k!r} ({n})" for k, n in sorted(unknown.items()))
            self.problems.append(
                f"{self.events_path}: {sum(unknown.values())} line(s) of event types this "
                f"repro does not know, left out: {kinds} (written by a newer repro?)"
            )

    def record(self) -> Record:
        """The fold of the whole log."""
        return fold(self.events())

    @property
    def signatures_path(self) -> Path:
        return self.path / "signatures.json"

    def write(self, name: str, data: Any) -> Path:
        path = self.path / name
        write_json_atomic(path, data)
        return path

    def read(self, name: str) -> Any:
        path = self.path / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ReproError(f"{path}: unreadable: {exc}") from None


class RunLog:
    """A run directory and the fold of its events, kept in step.

    Everything that measures writes through ``log``: the event reaches the disk
    first, then the in-memory record, so the bisect reads what the stress loop in
    the same process just measured without going back to the file.
    """

    def __init__(self, rundir: RunDir, record: Record | None = None) -> None:
        self.dir = rundir
        self.record = record if record is not None else Record()
        # Called with each event after the record took it (the bisect's strategy).
        self.listeners: list[Callable[[Event], None]] = []
        # Parallel bisect probes log from several threads: one event (file, record,
        # listeners) at a time, and a caller may hold it across a check-then-log.
        self.lock = threading.RLock()

    @classmethod
    def resume(cls, path: Path) -> RunLog:
        rundir = RunDir.open(path)
        rundir.lock()
        return cls(rundir, rundir.record())

    def replay(self) -> None:
        """Feed the whole log to the record and the listeners (a resume)."""
        self.record = Record()
        for event in self.dir.events():
            self.apply(event)

    def apply(self, event: Event) -> None:
        self.record.apply(event)
        for listener in self.listeners:
            listener(event)

    def log(self, event: Event) -> None:
        with self.lock:
            self.dir.append(event)
            self.apply(event)

    def write_signatures(self) -> None:
        """signatures.json: derived, for readers that want the catalogue alone."""
        self.dir.write("signatures.json", self.record.signatures_json())
