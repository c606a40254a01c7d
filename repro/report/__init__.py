"""Bug reports from run directories: Markdown for issues, JSON for tools, HTML with charts.

A maintainer who found a race has to convince someone else; the report carries
the evidence (rate and interval, the TSAN report, the culprit commit), the
machine it was measured on, and commands that reproduce it with or without repro.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.redact import redact

FORMATS = ("markdown", "json", "html")
_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".json": "json", ".html": "html"}
_SUFFIXES[".htm"] = "html"

__all__ = [
    "FORMATS",
    "build_document",
    "format_for",
    "inside_cpython",
    "other_races_path",
    "render",
    "write_report",
    "write_report_files",
]


def build_document(run_dir: Path) -> dict[str, Any]:
    """The report document (what ``--format json`` prints)."""
    from repro.report.data import build_document as build

    return build(Path(run_dir))


def inside_cpython(run_dir: Path) -> list[str]:
    """The other races that start inside CPython beside a target in the extension's code.

    Read off the report's own document (``inside_cpython`` in its JSON), so that the
    console names the same races the report does: two copies of that verdict would
    drift apart.
    """
    doc = build_document(run_dir)
    return [str(o["signature"]) for o in doc["other_races"] if o.get("inside_cpython")]


def format_for(path: Path | None, fmt: str | None = None) -> str:
    """The format asked for, else the one the file name suggests, else Markdown."""
    if fmt is not None:
        name = fmt.lower()
        if name == "md":
            name = "markdown"
        if name not in FORMATS:
            raise ReproError(f"unknown report format {fmt!r} (use {', '.join(FORMATS)})")
        return name
    if path is not None:
        return _SUFFIXES.get(path.suffix.lower(), "markdown")
    return "markdown"


def render(doc: Mapping[str, Any], fmt: str, others_file: str | None = None) -> str:
    """One rendering of a document, redacted once more as a last guard.

    JSON and HTML are redacted as data, before serialising: a pass over their text
    would see escaped quotes instead of values, and would write ``<redacted>`` into
    HTML as if it were a tag. Markdown is plain text and gets a final text pass too.
    ``others_file`` is where the Markdown says the other races' full reports are.
    """
    safe: dict[str, Any] = redact(dict(doc))
    if fmt == "json":
        return json.dumps(safe, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if fmt == "html":
        from repro.report.html import render_html

        return render_html(safe)
    if fmt == "markdown":
        from repro.report.markdown import render_markdown

        result: str = redact(render_markdown(safe, others_file))
        return result
    raise ReproError(f"unknown report format {fmt!r} (use {', '.join(FORMATS)})")


def other_races_path(path: Path) -> Path:
    """Where a Markdown report's other races go in full: ``report.md`` gets
    ``report-other-races.md`` beside it."""
    return path.with_name(f"{path.stem}-other-races{path.suffix or '.md'}")


def write_report_files(
    run_dir: Path, path: Path, fmt: str | None = None, doc: dict[str, Any] | None = None
) -> list[Path]:
    """Write the report of ``run_dir`` to ``path``; the files written, report first.

    A Markdown report must fit an issue, so it lists the other races one line each;
    their full TSAN reports go to a second file beside it (other_races_path).
    """
    from repro.report.markdown import render_other_races

    name = format_for(Path(path), fmt)
    doc = build_document(Path(run_dir)) if doc is None else doc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out]
    others_file = None
    if name == "markdown":
        others = render_other_races(redact(dict(doc)))
        if others is not None:
            side = other_races_path(out)
            side.write_text(redact(others), encoding="utf-8")
            others_file = side.name
            written.append(side)
    out.write_text(render(doc, name, others_file), encoding="utf-8")
    return written


def write_report(run_dir: Path, path: Path, fmt: str | None = None) -> Path:
    """Write the report of ``run_dir`` to ``path`` (format from ``fmt`` or the suffix)."""
    return write_report_files(run_dir, path, fmt)[0]
