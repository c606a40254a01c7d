"""`repro build`, `repro builds` and `repro doctor`, through typer's runner."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from repro.builds.cache import META_FILE, BuildCache, BuildContext
from repro.cli.builds import register
from repro.cli.common import parse_duration
from repro.errors import ReproError


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    a = typer.Typer()

    @a.callback()
    def main() -> None:
        """repro (test app)."""

    register(a)
    return a


def _entry(cache: BuildCache, key: str, what: str) -> Path:
    def build(ctx: BuildContext) -> None:
        (ctx.staging / "payload").write_bytes(b"x" * 5000)

    return cache.ensure(key, {"what": what}, build)


def test_builds_list_path_prune(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    cache = BuildCache(tmp_path / "cache")
    old = _entry(cache, "aaaa1111" + "0" * 56, "CPython 3.13.5 (free-threaded, TSAN, gcc)")
    _entry(cache, "bbbb2222" + "0" * 56, "pyo3 1e2aae3")
    res = runner.invoke(app, ["builds", "list"])
    assert res.exit_code == 0, res.output
    assert "aaaa1111" in res.output and "pyo3 1e2aae3" in res.output and "2 build(s)" in res.output
    res = runner.invoke(app, ["builds", "path", "aaaa"])
    assert res.exit_code == 0 and res.output.strip() == str(old)
    res = runner.invoke(app, ["builds", "path", "cccc"])
    assert res.exit_code == 2 and "no cached build" in res.output
    assert "Traceback" not in res.output
    long_ago = time.time() - 40 * 86400
    os.utime(old / META_FILE, (long_ago, long_ago))
    res = runner.invoke(app, ["builds", "prune", "--older-than", "30d"])
    assert res.exit_code == 0 and "1 build(s) removed" in res.output
    assert not old.exists()
    res = runner.invoke(app, ["builds", "prune", "--older-than", "soon"])
    assert res.exit_code == 2 and "cannot read the duration" in res.output


def test_build_cpython_errors_are_messages(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["build", "cpython"])
    assert res.exit_code == 2 and "exactly one of" in res.output
    res = runner.invoke(
        app, ["build", "cpython", "--version", "3.13.5", "--source", str(tmp_path / "none.tgz")]
    )
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["build", "cpython", "--version", "3.13.5", "--compiler", "cc-99"])
    assert res.exit_code == 2 and "apt-get install" in res.output


def test_doctor_command(app: typer.Typer) -> None:
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code in (0, 1), res.output
    assert "gcc" in res.output and "vm.mmap_rnd_bits" in res.output


def test_parse_duration() -> None:
    """One parser for every duration: a bare number is seconds, except where a slip
    would delete data (builds prune), which asks for a unit."""
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90
    with pytest.raises(ReproError, match="unit"):
        parse_duration("7", require_unit=True)
    for bad in ("", "abc", "5x", "1 2"):
        with pytest.raises(ReproError, match="cannot read"):
            parse_duration(bad)
