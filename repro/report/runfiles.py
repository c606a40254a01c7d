"""What a run directory holds, read once and folded once, for the report and for the
console's reading of a finished run (near misses): both read the same files the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.recipe import Recipe, RecipeError, parse_recipe
from repro.runlog import Event, Record, RunDir, RunEvent, fold
from repro.tsan.signature import DEFAULT_DROP


@dataclass
class RunFiles:
    """What a run directory holds, read once and folded once."""

    path: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    events: list[Event]
    record: Record
    recipe_text: str | None
    recipe: Recipe | None
    problems: list[str]

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind") or "stress")

    @property
    def drop(self) -> tuple[str, ...]:
        """The frames a stack's reading skips for this run: the defaults and the recipe's
        own (``signature.drop_frames``), for every verdict the report makes."""
        extra = self.recipe.signature.drop_frames if self.recipe is not None else ()
        return (*DEFAULT_DROP, *extra)

    @property
    def runs(self) -> list[RunEvent]:
        """Runs in index order (parallel jobs finish out of order)."""
        runs = [e for e in self.events if isinstance(e, RunEvent)]
        return sorted(runs, key=lambda e: e.index)


def load_run(path: Path) -> RunFiles:
    rd = RunDir.open(path)
    path = rd.path  # absolute: `repro report .` named its run directory ""
    meta = rd.meta()
    if meta.get("kind") not in ("stress", "bisect"):
        raise ReproError(f"{path}: not a stress or bisect run directory")
    summary = None
    with contextlib.suppress(ReproError):
        summary = rd.read("summary.json")
    if not isinstance(summary, dict):
        summary = None
    recipe_text = None
    recipe = None
    recipe_path = path / "recipe.yaml"
    if recipe_path.is_file():
        recipe_text = recipe_path.read_text(encoding="utf-8", errors="replace")
        # Not load_recipe: the files a recipe names may be gone by the time a report
        # is written, and the report does not need them.
        # `--set` overrides given on the command line change the recipe as run.
        sets = [str(x) for x in meta.get("set") or []]
        with contextlib.suppress(RecipeError):
            recipe = (
                parse_recipe(recipe_text, recipe_path, sets)
                if sets
                else parse_recipe(recipe_text, recipe_path)
            )
    events = list(rd.events())
    record = fold(events)
    return RunFiles(path, meta, summary, events, record, recipe_text, recipe, list(rd.problems))


def example_report(files: RunFiles, sig_id: str, example: str | None) -> Any:
    """The parsed TSAN report of one signature from a kept log (None if none is kept)."""
    from repro.tsan.parse import parse_log
    from repro.tsan.signature import DEFAULT_DROP, signature_of

    depth, drop = 3, tuple(DEFAULT_DROP)
    if files.recipe is not None:
        depth = files.recipe.signature.depth
        drop = (*DEFAULT_DROP, *files.recipe.signature.drop_frames)
    candidates = [example] if example else []
    candidates += [ev.log_dir for ev in files.runs if ev.log_dir and sig_id in ev.signatures]
    for rel in candidates:
        log_dir = files.path / rel
        if not log_dir.is_dir():
            continue
        texts = [
            p.read_text(encoding="utf-8", errors="replace") for p in sorted(log_dir.glob("tsan*"))
        ]
        out = log_dir / "output.txt"
        if out.is_file():
            texts.append(out.read_text(encoding="utf-8", errors="replace"))
        for report in parse_log("\n".join(texts)).reports:
            if signature_of(report, depth=depth, drop=drop).id == sig_id:
                return report, rel
    return None, None
