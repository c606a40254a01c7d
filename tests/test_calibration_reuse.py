"""`repro bisect --calibration-from`: a stress record of the racy end as the calibration,
on the demo's history (real TSAN runs, a git repository the test creates)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import repro
from test_bisect_e2e import FIX_SUBJECT, demo  # noqa: F401  (the fixture)

from repro.app.reuse import calibration_prefix, differences
from repro.runlog.events import RunEvent
from repro.tsan.outcome import Outcome


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


def _stress(recipe: Path, tmp_path: Path, *extra: str, runs: int = 60) -> dict:
    out = tmp_path / "stress.json"
    res = repro(
        "stress", str(recipe), "--runs", str(runs), "--jobs", "1", "--runs-dir",
        str(tmp_path / "stress-runs"), "--json-out", str(out), *extra,
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stdout + res.stderr
    data = json.loads(out.read_text())
    # The closing lines spell out the bisect that takes these runs (when they hit).
    text = " ".join(res.stdout.split())
    hint = re.search(r"as its calibration: (repro bisect .*--calibration-from \S+)", text)
    assert (hint is not None) == (data["hits"] > 0), text
    data["hint"] = shlex.split(hint.group(1))[2:] if hint else None
    return data


def _refused(recipe: Path, source: Path, runs_dir: Path, *extra: str) -> str:
    """A bisect that must refuse ``source`` as its calibration: what it said, one line."""
    res = repro(
        "bisect", str(recipe), "--calibration-from", str(source),
        "--runs-dir", str(runs_dir), *extra,
    )  # fmt: skip
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and "Traceback" not in text, text
    return text


@pytest.mark.slow
def test_bisect_takes_a_stress_record_as_its_calibration(
    demo: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, recipe = demo
    # The demo's race shows in 40-55% of runs, idle or loaded (its producer publishes at a
    # random phase); run on to the first hit all the same, at most 600.
    stress = _stress(recipe, tmp_path, "--until-first", runs=600)
    assert stress["hits"] > 0, stress
    runs = tmp_path / "runs"
    out = tmp_path / "bisect.json"
    # The command the stress printed, as it printed it.
    assert stress["hint"] == [
        str(recipe), "-j", "1", "--calibration-from", stress["run_dir"]
    ]  # fmt: skip
    res = repro(
        "bisect", *stress["hint"],
        "--runs-dir", str(runs), "--json-out", str(out), "--report", str(tmp_path / "r.md"),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT
    # What a calibration would have run: the stress runs in order, up to the 5th hit.
    record = sorted(
        (e for e in _events(Path(stress["run_dir"])) if e.get("event") == "run"),
        key=lambda e: e["index"],
    )
    prefix, seen = 0, 0
    for e in record:
        if seen == 5:
            break
        if Outcome(e["outcome"]).is_evidence:
            prefix += 1
            seen += Outcome(e["outcome"]) is Outcome.TARGET
    reused = data["calibration"]["reused"]
    assert (reused["runs"], reused["hits"]) == (prefix, min(5, stress["hits"]))
    assert Path(reused["path"]) == Path(stress["run_dir"])
    text = " ".join(res.stdout.split())
    of = stress["evidence_runs"]
    assert f"reusing {reused['hits']} hits in {prefix} runs (the first {prefix} of {of})" in text
    # Runs it took are not runs it spent: the cost says how many came from the record,
    # on the console and in the report alike.
    took = f"{data['runs']} runs ({prefix} of them from the stress record)"
    assert took in text and took in " ".join((tmp_path / "r.md").read_text().split())
    # The log holds those runs at the racy end, and new runs there only while the hits were
    # short of the calibration's goal.
    run_dir = next(runs.iterdir())
    calib = [
        e
        for e in _events(run_dir)
        if e.get("event") == "run" and e.get("phase") == "calibrate" and e.get("pos") == 0
    ]
    hits = sum(Outcome(e["outcome"]) is Outcome.TARGET for e in calib)
    assert data["calibration"]["runs"] == len(calib) and data["calibration"]["hits"] == hits
    if stress["hits"] >= 5:
        assert len(calib) == prefix and hits == 5
    else:
        assert len(calib) > prefix and hits == 5
    assert f"{prefix} of them from the stress record" in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_a_stress_of_another_commit_is_offered_to_the_bisect_from_that_commit(
    demo: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Sweep 13: a stress at `--ref` elsewhere than the recipe's racy end printed the
    recipe's own bisect as the one to take its runs, which refuses them (another
    commit). The command it prints now starts the bisect at the commit stressed."""
    repo, recipe = demo
    stress = _stress(recipe, tmp_path, "--ref", "v1.1~1", "--until-first", runs=600)
    assert stress["hits"] > 0, stress
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "v1.1~1"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert stress["hint"] == [
        str(recipe), "-j", "1", "--racy", sha[:12], "--calibration-from", stress["run_dir"]
    ]  # fmt: skip
    res = repro("bisect", *stress["hint"], "--plan", "--runs-dir", str(tmp_path / "runs"))
    text = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0 and "reusing" in text and "cannot stand" not in text, text
    # The recipe's own bisect refuses the record, before it builds or runs anything.
    text = _refused(recipe, Path(stress["run_dir"]), tmp_path / "runs2", "-j", "1")
    assert f"extension commit: stress {sha}" in text and f"--racy {sha[:12]}" in text, text
    assert not (tmp_path / "runs2").exists() or not list((tmp_path / "runs2").iterdir())


@pytest.mark.slow
def test_a_stress_record_that_ran_otherwise_is_refused_by_name(
    demo: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, recipe = demo
    stress = _stress(recipe, tmp_path, "--threads", "4")
    assert stress["hint"][-4:] == ["--threads", "4", "--calibration-from", stress["run_dir"]]
    runs = tmp_path / "runs"
    text = _refused(recipe, tmp_path / "stress.json", runs, "--jobs", "1")
    assert "cannot stand for the racy end's" in text and "threads: stress 4, racy end 8" in text
    # Refused before its first run: no run directory is left for a --resume to go on
    # from without the check.
    assert not list(runs.glob("*")), list(runs.glob("*"))
    # Other parallelism: said before anything is built.
    text = _refused(
        recipe, tmp_path / "stress.json", tmp_path / "runs2", "--jobs", "2", "--threads", "4"
    )
    assert "runs at once: stress 1, bisect 2 (give --jobs 1)" in text
    # A variable the recipe sets for the reproducer, whatever its name, is part of the run:
    # a knob that changes the rate (here one no reproducer reads) is refused by name too.
    text = _refused(
        recipe, tmp_path / "stress.json", tmp_path / "runs3", "--jobs", "1", "--threads",
        "4", "--set", 'reproducer.env={DEMO_KNOB: "0"}',
    )  # fmt: skip
    assert "variable DEMO_KNOB: stress not set, racy end '0'" in text
    assert "threads" not in text.split("cannot stand")[1]  # only what differs is named


@pytest.mark.slow
def test_what_cannot_be_a_calibration_is_refused(
    demo: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, recipe = demo

    def bisect(source: Path) -> str:
        return _refused(recipe, source, tmp_path / "runs")

    assert "no such stress record" in bisect(tmp_path / "nowhere")
    (tmp_path / "other.json").write_text('{"kind": "bisect"}')
    assert "not the JSON of a stress run" in bisect(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{")
    assert "not a stress JSON" in bisect(tmp_path / "broken.json")
    # The fixed end never shows the race: its record cannot show the racy end is racy.
    stress = _stress(recipe, tmp_path, "--ref", "main")
    assert stress["hits"] == 0
    assert "has no hit of the target" in bisect(tmp_path / "stress.json")
    # A stress record of another target.
    _stress(recipe, tmp_path, "--set", "target.functions=[tq_poll]")
    assert "counted another race as the target" in bisect(tmp_path / "stress.json")
    assert not (tmp_path / "runs").exists()  # all said before a run directory was made
    res = repro("bisect", "--resume", str(tmp_path), "--calibration-from", str(tmp_path))
    assert res.returncode == 2 and "a resumed one has its calibration" in res.stdout + res.stderr


def _run(index: int, hit: bool) -> RunEvent:
    return RunEvent(index=index, outcome=Outcome.TARGET if hit else Outcome.CLEAN)


def test_the_prefix_is_the_calibration_that_would_have_run() -> None:
    runs = [_run(i, hit) for i, hit in enumerate([0, 1, 0, 0, 1, 1, 0, 1])]
    assert [e.index for e in calibration_prefix(runs, goal=2, budget=100)] == [0, 1, 2, 3, 4]
    assert [e.index for e in calibration_prefix(runs, goal=9, budget=100)] == list(range(8))
    assert [e.index for e in calibration_prefix(runs, goal=3, budget=3)] == [0, 1, 2]
    assert calibration_prefix([], goal=5, budget=10) == []


def test_differences_name_what_would_change_the_rate() -> None:
    info = {
        "extension": {"sha": "a" * 40, "key": "k1"},
        "python": {"key": "py1"},
        "command": "./stress_test 3",
        "threads": 8,
        "switch_interval": None,
        "prefix": [],
        "tsan_options": {},
        "env": {"PATH": "/usr/bin", "CFLAGS": "-fsanitize=thread"},
        "cwd": "/cache/k1/src",
    }
    host = {"cpu": {"count": 2, "usable": 2, "model": "AMD EPYC"}, "os": {"machine": "x86_64"}}
    same = {**info, "env": {**info["env"], "PATH": "/elsewhere"}, "cwd": "/other/k1/src"}
    assert differences(info, same, host, host) == []
    other = {**info, "threads": 4, "python": {"key": "py2"}}
    bigger = {**host, "cpu": {**host["cpu"], "count": 16}}
    assert differences(info, other, host, bigger) == [
        "CPython build: stress 'py1', racy end 'py2'",
        "threads: stress 8, racy end 4",
        "cpu.count: stress 2, racy end 16",
    ]
    flags = {**info, "env": {**info["env"], "CFLAGS": "-O2"}}
    assert differences(info, flags, host, host) == [
        "variable CFLAGS: stress '-fsanitize=thread', racy end '-O2'"
    ]
    # A variable of the reproducer's own (a recipe's reproducer.env), set on one side only.
    knob = {**info, "env": {**info["env"], "STRESS_ROUNDS": "0"}}
    assert differences(info, knob, host, host) == [
        "variable STRESS_ROUNDS: stress not set, racy end '0'"
    ]


def test_a_record_of_an_older_repro_is_the_same_experiment() -> None:
    """This repro passes pytest `-rs` and sets its helpers' variables (REPRO_BUILT_SITE,
    PYTEST_PLUGINS) in a package's environment: neither changes what a run does, and a
    resume of a record made before them was refused as another experiment."""
    pytest_cmd = "/e/python -P -m pytest --import-mode=importlib -p no:cacheprovider -q {}t.py"
    before = {
        "extension": {"sha": "a" * 40, "key": "k1"},
        "python": {"key": "py1"},
        "command": pytest_cmd.format(""),
        "env": {"PYTEST_PLUGINS": "repro_tsan_attrib", "PYTHONPATH": "/c/k1/site"},
    }
    now = {
        **before,
        "command": pytest_cmd.format("-rs "),
        "env": {
            **before["env"],
            "PYTEST_PLUGINS": "repro_site_first,repro_tsan_attrib",
            "REPRO_BUILT_SITE": "/c/k1/site",
            "REPRO_BUILT_PACKAGES": "tally",
        },
    }
    host = {"cpu": {"count": 2}}
    assert differences(before, now, host, host) == []
    # What a run does still counts: another test, another path on the module search path.
    other = {**now, "command": pytest_cmd.format("-rs -x ")}
    assert [d.split(":")[0] for d in differences(before, other, host, host)] == ["command"]
    moved = {**now, "env": {**now["env"], "PYTHONPATH": "/c/k2/site"}}
    assert [d.split(":")[0] for d in differences(before, moved, host, host)] == [
        "variable PYTHONPATH"
    ]
