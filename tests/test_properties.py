"""Property tests for the edges that take outside input: recipes, `--set`, TSAN logs.

Whatever comes in, the answer is a result or a user-facing error (ReproError, shown as
one line with exit status 2), never another exception, and it comes quickly and in
little memory. Example counts are kept modest so that the file runs in seconds; raise
them with HYPOTHESIS_PROFILE=thorough.
"""

from __future__ import annotations

import io
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.errors import ReproError
from repro.recipe import LoadedRecipe, load_recipe
from repro.tsan.parse import LogScanner, parse_log, read_reports
from repro.tsan.signature import TargetRule, matches, signature_of

DATA = Path(__file__).resolve().parent / "data" / "tsan"
LOGS = {p.name: p.read_text() for p in sorted(DATA.glob("*.log"))}

settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,  # time is asserted below, with a bound that a busy machine meets
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SECONDS = 5.0  # per input
MEGABYTES = 64  # peak of Python allocations per input

GOOD = """\
name: t
description: a race
reproducer:
  command: /bin/true {threads}
  timeout: 5
  env: {A: "1"}
amplify:
  switch_interval: 0.0001
target:
  functions: [racy_fn, other]
  files: [racy.c]
bisect:
  confidence: 0.99
tsan:
  options: {history_size: 4}
"""


def bounded(fn: Callable[[], Any]) -> Any:
    """Run fn, asserting it stays within SECONDS and MEGABYTES."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - t0
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert elapsed < SECONDS, f"took {elapsed:.1f} s"
        assert peak < MEGABYTES << 20, f"peak {peak >> 20} MB"


def load_or_user_error(path: Path, sets: tuple[str, ...] = ()) -> LoadedRecipe | None:
    """A recipe, or None for a user-facing error; anything else fails the test."""
    try:
        return load_recipe(path, sets)
    except ReproError as exc:
        assert str(exc).strip(), "an error without a message"
        return None


# --- recipe text ------------------------------------------------------------------------------

_FRAGMENTS = [
    "name",
    "reproducer",
    "command",
    "target",
    "functions",
    "files",
    "timeout",
    "threads",
    "bisect",
    "confidence",
    "amplify",
    "taskset",
    "tsan",
    "options",
    "extension",
    "repo",
    "python",
    "version",
    ": ",
    ":",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!int ",
    "!!float ",
    "!!binary ",
    "!!python/object ",
    "!!timestamp ",
    "!!set ",
    "? ",
    "'",
    '"',
    "#",
    "|",
    ">",
    "---",
    "...",
    "%YAML 1.1\n",
    ".inf",
    ".nan",
    "-1",
    "0",
    "1e309",
    "2001-02-30",
    "x",
    "*",
    "\t",
    "\x00",
    "\ufeff",
    "é",
]

yaml_like = st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map("".join)


@st.composite
def mutated_recipe(draw: st.DrawFn) -> str:
    text = GOOD
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 20)))
        insert = draw(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8)))
        text = text[:i] + insert + text[j:]
    return text


@st.composite
def alias_chain(draw: st.DrawFn) -> str:
    """Anchors that each repeat the previous one: small text, possibly huge expansion."""
    width = draw(st.integers(1, 12))
    levels = draw(st.integers(1, 12))
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]")
    use = draw(st.sampled_from(["description", "reproducer.env", "target.functions"]))
    text = "\n".join(lines) + "\n" + GOOD
    if use == "target.functions":
        text = text.replace("[racy_fn, other]", f"*l{levels - 1}")
    return text


@given(data=st.one_of(st.binary(max_size=800), yaml_like.map(str.encode)))
def test_any_bytes_give_a_recipe_or_a_user_error(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "r.yaml"
    p.write_bytes(data)
    bounded(lambda: load_or_user_error(p))


@given(text=st.one_of(mutated_recipe(), alias_chain()))
def test_damaged_recipes_give_a_recipe_or_a_user_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    bounded(lambda: load_or_user_error(p))


def test_the_unmutated_recipe_loads(tmp_path: Path) -> None:
    """The properties above are not vacuous: their starting point is a good recipe."""
    p = tmp_path / "r.yaml"
    p.write_text(GOOD)
    assert load_or_user_error(p) is not None


# --- --set KEY=VALUE --------------------------------------------------------------------------

_KEYS = [
    "name",
    "reproducer.timeout",
    "reproducer.threads",
    "reproducer.env",
    "reproducer.env.X",
    "reproducer.command",
    "target.functions",
    "target.files",
    "target.depth",
    "bisect.confidence",
    "amplify.taskset",
    "amplify.switch_interval",
    "tsan.options",
    "python",
    "python.version",
    "name.sub",
    "new.section",
]

set_keys = st.one_of(st.sampled_from(_KEYS), st.text(max_size=20))
set_values = st.one_of(yaml_like, st.text(max_size=40))


@given(items=st.lists(st.tuples(set_keys, set_values), min_size=1, max_size=3))
def test_any_set_gives_a_recipe_or_a_user_error(
    tmp_path: Path, items: list[tuple[str, str]]
) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(GOOD)
    sets = tuple(f"{k}={v}" for k, v in items)
    bounded(lambda: load_or_user_error(p, sets))


@given(raw=st.text(max_size=40))
def test_set_without_equals_is_a_user_error(tmp_path: Path, raw: str) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(GOOD)
    item = raw.replace("=", "")
    with pytest.raises(ReproError):
        load_recipe(p, (item,))


# --- TSAN logs --------------------------------------------------------------------------------


def parse_everything(text: str) -> None:
    """Parse as both entry points do, and use each report as the stress loop does."""
    whole = parse_log(text)
    scanner = LogScanner()
    streamed = list(read_reports(io.StringIO(text, newline=""), scanner))
    assert streamed == list(whole.reports)
    assert scanner.parsed(streamed) == whole
    rule = TargetRule(kind=None, functions=("racy",), files=("c",), accesses="each")
    for report in whole.reports:
        assert len(signature_of(report).id) == 12
        matches(report, rule)


@given(text=st.text(max_size=2000))
def test_any_text_parses_to_reports_or_nothing(text: str) -> None:
    bounded(lambda: parse_everything(text))


_TSAN_LINES = [
    line
    for text in LOGS.values()
    for line in dict.fromkeys(text.splitlines()[:40])  # the first lines of each, deduplicated
]


@given(lines=st.lists(st.sampled_from(_TSAN_LINES), max_size=80))
def test_shuffled_tsan_lines_parse(lines: list[str]) -> None:
    bounded(lambda: parse_everything("\n".join(lines)))


@st.composite
def mutated_log(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(LOGS)))
    lines = LOGS[name].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 8))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "cut", "insert", "swap", "noise"]))
        if op == "delete":
            del lines[i : i + draw(st.integers(1, 10))]
        elif op == "duplicate":
            lines[i:i] = lines[i : i + draw(st.integers(1, 10))]
        elif op == "cut":
            k = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:k]
            if draw(st.booleans()):
                del lines[i + 1 :]  # the log ends there, mid-line
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=60)) + "\n")
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            prefix = draw(st.sampled_from(["\x1b[31m", "2024-12-20T10:11:12Z ", "==12==", "\r"]))
            lines[i] = prefix + lines[i]
    return "".join(lines)


@given(text=mutated_log())
def test_mutated_stored_logs_parse(text: str) -> None:
    bounded(lambda: parse_everything(text))
