"""The run directory: everything a stress run or a bisect measured, on disk, as it happens.

Results are appended one JSON line per event and flushed at once, so a Ctrl-C, a
kill or a crash of repro loses at most the run in flight; the summary files are
derived data, rewritten atomically, and can always be rebuilt from the event log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import ReproError


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())
    return out.strip("-")[:60] or "run"


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, base: Path, name: str, kind: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # Absolute: TSAN's log_path is resolved in the reproducer's working directory.
        base = base.expanduser().absolute()
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            suffix = "" if n == 0 else f"-{n}"
            path = base / f"{slug(name)}-{kind}-{stamp}{suffix}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            rd = cls(path)
            rd.logs.mkdir()
            return rd
        raise ReproError(f"cannot create a run directory under {base}")

    @classmethod
    def open(cls, path: Path) -> RunDir:
        path = path.expanduser().absolute()
        if not (path / "meta.json").is_file():
            raise ReproError(f"{path}: not a repro run directory (no meta.json)")
        return cls(path)

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        write_json_atomic(self.path / "meta.json", dict(meta))

    def meta(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        return data

    def update_meta(self, **changes: Any) -> None:
        meta = self.meta()
        meta.update(changes)
        self.write_meta(meta)

    def append(self, event: Mapping[str, Any]) -> None:
        """Write one event with a single write(2) on an O_APPEND descriptor.

        Once write returns, the line survives a Ctrl-C or a SIGKILL of repro (it is in
        the kernel); there is no fsync per event, which would cost more than a fast
        reproducer's run and only guards against the machine itself crashing.
        """
        line = (json.dumps(dict(event), separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def events(self) -> Iterator[dict[str, Any]]:
        """Every complete event; a line torn by a kill mid-write is ignored."""
        if not self.events_path.exists():
            return
        with self.events_path.open(encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def write(self, name: str, data: Any) -> Path:
        path = self.path / name
        write_json_atomic(path, data)
        return path

    def read(self, name: str) -> Any:
        path = self.path / name
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))
