"""`repro report` on real runs of the demo race: stress, bisect, interrupted, with secrets around.

The run directories come from the real command line on the demo repository (a C
race under gcc's TSAN, a second or so per run), so these tests check what a user
gets: the reports contain the race, the rate, the culprit and commands that
reproduce it, and the plain shell commands, run exactly as printed, do reproduce
it. The parts of a report that do not depend on timing are compared with stored
expectations (tests/data/report/); regenerate them with REPRO_UPDATE_EXPECTED=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, repro

from repro.report.markdown import PLAIN_MARKER
from repro.report.shell import PLAIN_OK

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_repo

EXPECTED = Path(__file__).resolve().parent / "data" / "report"
FIX_SUBJECT = "Publish the result before unlocking"
SECRETS = {
    "CARGO_REGISTRY_TOKEN": "cargo-registry-secret-0001",
    "GITHUB_TOKEN": "ghp_githubsecret0002",
    "REPRO_DEMO_PASSWORD": "password-secret-0003",
    "PYTHON_KEYRING_API_KEY": "apikey-secret-0004",
}
RECIPE_SECRET = "recipe-env-secret-0005"
FORMATS = ("markdown", "json", "html")
ALWAYS_ROWS = {
    "OS / kernel",
    "CPUs",
    "Compilers",
    "TSAN runtime",
    "Extension",
    "TSAN_OPTIONS",
    "vm.mmap_rnd_bits",
}


@dataclass
class Demo:
    root: Path
    home: Path
    repo: Path
    recipe: Path
    env: dict[str, str]  # what the runs saw: the fake home and the secrets
    report_env: dict[str, str]  # the same home, without the secrets
    stress: Path
    bisect: Path

    def report(self, run_dir: Path, fmt: str = "markdown") -> str:
        res = repro("report", str(run_dir), "--format", fmt, env=self.report_env)
        assert res.returncode == 0, res.stderr
        return res.stdout


def _demo_recipe(repo: Path, dest: Path, **target: Any) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    data["extension"]["repo"] = str(repo)
    data["reproducer"]["env"] = {"DEMO_SERVICE_TOKEN": RECIPE_SECRET}
    data["target"].update(target)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _only_dir(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("report")
    home = root / "home" / "ada"
    repo = make_repo(home / "src" / "ticketq")
    recipe = _demo_recipe(repo, home / "recipes" / "demo.yaml")
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    report_env = {**base, "HOME": str(home)}
    env = {**report_env, **SECRETS}
    runs = root / "stress-runs"
    res = repro(
        "stress", str(recipe), "--runs", "60", "--jobs", "2", "--runs-dir", str(runs),
        "--report", str(root / "stress-end.md"), env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    stress = _only_dir(runs)
    runs = root / "bisect-runs"
    res = repro(
        "bisect", str(recipe), "--jobs", "2", "--runs-dir", str(runs),
        "--report", str(root / "bisect-end.md"), env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return Demo(root, home, repo, recipe, env, report_env, stress, _only_dir(runs))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def _fix_commit(repo: Path) -> str:
    return _git(repo, "log", "--format=%H", f"--grep=^{FIX_SUBJECT}$", "main")


def _plain_script(markdown: str) -> str:
    after = markdown.split(PLAIN_MARKER, 1)[1]
    m = re.search(r"```sh\n(.*?)\n```", after, re.S)
    assert m, "no shell block after the marker"
    return m.group(1) + "\n"


# --- contents -------------------------------------------------------------------------


def test_stress_report(demo: Demo) -> None:
    md = demo.report(demo.stress)
    doc = json.loads(demo.report(demo.stress, "json"))
    s = doc["summary"]
    assert doc["schema_version"] == 2 and doc["kind"] == "stress"
    assert s["runs"] == 60 and 0 < s["hits"] <= 60
    lo, hi = s["rate_ci95"]
    assert lo < s["rate"] < hi
    title = md.splitlines()[0]
    assert title == (
        f"# data race in tq_publish (queue.c): reproduced in {s['hits']} of 60 runs "
        f"({s['hits'] / 60:.0%})"
    )
    assert f"{s['rate'] * 100:.1f}% (95% CI {lo * 100:.1f}% to {hi * 100:.1f}%)" in md
    assert "Time to first hit" in md and s["time_to_first_hit"] > 0
    assert doc["status"] == {"state": "finished", "partial": False, "message": None}
    # The target race's report, trimmed: no runtime frames, no cache paths.
    report = doc["target"]["report"]
    assert "#0 tq_publish queue.c:" in report and "#0 tq_poll queue.c:" in report
    assert "libtsan" not in report and "/builds/" not in report
    assert "<details>" in md and "TSAN report (runtime frames hidden" in md
    # Reproduce: the repro command at the tested commit, and the plain commands.
    sha = _git(demo.repo, "rev-parse", "v1.1")
    assert f"repro stress recipe.yaml --ref {sha} --runs 60" in md
    assert PLAIN_MARKER in md and "make" in _plain_script(md)
    # Environment: the things that explain a race showing on one machine only.
    rows = dict(doc["environment"]["rows"])
    for label in ("OS / kernel", "CPUs", "Compilers", "TSAN runtime", "vm.mmap_rnd_bits"):
        assert label in rows and f"| {label} |" in md
    assert "Extension" in rows and sha in rows["Extension"]
    # A C project's report does not list the Rust toolchain the machine happens to have.
    assert "Rust toolchain" not in rows
    # Suppressions, labelled as a stop-gap.
    assert "race_top:tq_publish" in md and "race_top:tq_poll" in md
    assert "stop-gap" in md.lower()
    # The report written at the end of the run is the same report.
    assert (demo.root / "stress-end.md").read_text().splitlines()[0] == title


def test_bisect_report(demo: Demo) -> None:
    md = demo.report(demo.bisect)
    doc = json.loads(demo.report(demo.bisect, "json"))
    fix = _fix_commit(demo.repo)
    b = doc["bisect"]
    assert b["culprit"]["sha"] == fix and b["culprit"]["subject"] == FIX_SUBJECT
    label = b["culprit"]["label"]
    assert md.splitlines()[0] == f"# data race in tq_publish (queue.c), fixed by {label}"
    assert f"`{label}` {FIX_SUBJECT}" in md
    assert "| Author | Ada Example |" in md and "| Date | 2025-01-14T12:00:00" in md
    assert b["confidence"] >= 0.99 and "| Confidence | 99." in md
    # The step table: both ends, the culprit marked, oldest first.
    assert "| commit | subject | build | runs | hits | other races | not counted | verdict |" in md
    steps = b["steps"]
    # The clean end is run only if the search asked for it; if so, it comes last.
    assert steps[0]["end"] == "racy end"
    assert all(s["end"] != "clean end" for s in steps[:-1])
    assert [s["order"] for s in steps] == sorted(s["order"] for s in steps)
    assert any(s["culprit"] and s["id"] == fix for s in steps)
    assert "**culprit**" in md
    calib = doc["summary"]
    assert calib["scope"] == "racy end" and calib["hits"] >= 3
    # Every figure of the summary is the racy end's; the whole bisect's are all_*.
    assert calib["other_races"]["runs"] <= calib["runs"] < calib["all_runs"]
    assert calib["all_other_races"]["runs"] >= calib["other_races"]["runs"]
    assert sum(st["runs"] for st in steps) == calib["all_runs"]
    assert "Rate at the racy end" in md and "(95% CI" in md
    assert "repro bisect recipe.yaml --racy v1.1 --fixed main --confidence 0.99" in md
    assert PLAIN_MARKER in md
    assert (demo.root / "bisect-end.md").read_text().splitlines()[0] == md.splitlines()[0]


@pytest.mark.parametrize("which", ["stress", "bisect"])
def test_plain_shell_commands_reproduce_the_race(demo: Demo, which: str, tmp_path: Path) -> None:
    """The commands without repro, run as printed, build the racy commit and hit the race."""
    md = demo.report(demo.stress if which == "stress" else demo.bisect)
    script = tmp_path / "reproduce.sh"
    script.write_text(_plain_script(md))
    # A stranger's shell: none of repro's variables, nothing from the reporter's session.
    env = {k: v for k, v in demo.report_env.items() if not k.startswith("REPRO_")}
    res = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert PLAIN_OK in res.stdout, res.stdout + res.stderr
    log = (tmp_path / "repro-work" / "run.log").read_text()
    assert "WARNING: ThreadSanitizer: data race" in log and "tq_publish" in log
    if which == "stress":
        _check_suppressions(md, tmp_path / "repro-work" / "ticketq")


def _check_suppressions(md: str, worktree: Path) -> None:
    """The suggested lines hide the race from the binary the plain commands built."""
    text = md.split("## Suggested TSAN suppression", 1)[1]
    block = re.search(r"```\n(.*?)\n```", text, re.S)
    assert block
    supp = worktree / "supp.txt"
    supp.write_text(block.group(1) + "\n")

    def races(options: str, runs: int, stop_at_first: bool = False) -> int:
        n = 0
        for _ in range(runs):
            out = subprocess.run(
                ["./stress_test", "3", "100", "1000"], cwd=worktree, capture_output=True,
                text=True, env={**os.environ, "TSAN_OPTIONS": options}, timeout=60,
            )  # fmt: skip
            n += "WARNING: ThreadSanitizer: data race" in out.stderr
            if n and stop_at_first:
                break
        return n

    assert races(f"suppressions={supp}", 30) == 0
    # Without them it shows; the demo race is intermittent (0 in 30 runs once, under load),
    # so run until it does, within a bound that a working race never comes near.
    assert races("", 300, stop_at_first=True) > 0


def test_other_races_are_listed(demo: Demo, tmp_path: Path) -> None:
    """With a target that never races, the demo race is an "other" race, with its report.
    Ten jobs a run, not three: with three the race shows in about one run in seven here,
    and in 3 of 100 with two at once on a loaded machine, so 20 runs could show none."""
    recipe = _demo_recipe(demo.repo, tmp_path / "other.yaml", functions=["tq_heartbeat"])
    runs = tmp_path / "runs"
    res = repro(
        "stress", str(recipe), "--runs", "20", "--jobs", "2", "--runs-dir", str(runs),
        "--set", "reproducer.command=./stress_test 10 100 1000", env=demo.env,
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    md = demo.report(_only_dir(runs))
    assert md.splitlines()[0] == "# data race in tq_heartbeat (queue.c): not reproduced in 20 runs"
    assert "was not seen in this run" in md
    assert "## Other races (1)" in md
    assert "`9755c8e885c5`" in md and "tq_poll <- consumer \\| tq_publish <- producer" in md
    # One line in the report; the full TSAN report beside it, or in the run directory.
    assert "#0 tq_publish queue.c:" not in md and "`logs/run-" in md
    assert "## Suggested TSAN suppression" not in md  # nothing to suppress: the target never showed
    out = tmp_path / "issue.md"
    res = repro("report", str(_only_dir(runs)), "-o", str(out), env=demo.report_env)
    assert res.returncode == 0, res.stderr
    assert "`issue-other-races.md` beside this report" in out.read_text()
    assert "#0 tq_publish queue.c:" in (tmp_path / "issue-other-races.md").read_text()


# --- partial runs ---------------------------------------------------------------------


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "repro", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "COLUMNS": "160"},
        start_new_session=True,
    )


def _wait_for_runs(runs_dir: Path, n: int, phase: str | None = None) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for log in runs_dir.glob("*/events.jsonl"):
            lines = [x for x in log.read_text().splitlines() if x.endswith("}")]
            runs = [e for e in map(json.loads, lines) if e.get("event") == "run"]
            if len([e for e in runs if phase is None or e.get("phase") == phase]) >= n:
                return
        time.sleep(0.05)
    pytest.fail(f"no {n} runs in {runs_dir} after 120 s")


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # like Ctrl-C in a terminal: the whole process group
    proc.wait(timeout=120)


@pytest.mark.parametrize(
    ("sig", "state"), [(signal.SIGINT, "interrupted"), (signal.SIGKILL, "incomplete")]
)
def test_interrupted_stress_report_is_partial(
    demo: Demo, tmp_path: Path, sig: signal.Signals, state: str
) -> None:
    runs = tmp_path / "runs"
    proc = _start(
        ["stress", str(demo.recipe), "--runs", "100000", "--jobs", "2", "--runs-dir", str(runs)],
        demo.env,
    )
    _wait_for_runs(runs, 5)
    _stop(proc, sig)
    run_dir = _only_dir(runs)
    doc = json.loads(demo.report(run_dir, "json"))
    assert doc["status"]["partial"] is True and doc["status"]["state"] == state
    assert doc["summary"]["runs"] >= 5
    md = demo.report(run_dir)
    assert md.splitlines()[0].endswith(f"({state}, partial results)")
    assert "> **Partial results.**" in md
    assert "Partial results." in demo.report(run_dir, "html")


def test_interrupted_bisect_report_is_partial(demo: Demo, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = _start(["bisect", str(demo.recipe), "--jobs", "2", "--runs-dir", str(runs)], demo.env)
    _wait_for_runs(runs, 3, phase="calibrate")
    _stop(proc, signal.SIGINT)
    run_dir = _only_dir(runs)
    doc = json.loads(demo.report(run_dir, "json"))
    assert doc["status"]["partial"] is True and doc["status"]["state"] == "interrupted"
    assert doc["bisect"]["culprit"] is None
    md = demo.report(run_dir)
    assert md.splitlines()[0].startswith("# data race in tq_publish (queue.c): bisect interrupted")
    assert "> **Partial results.** The bisect was interrupted" in md
    assert "repro bisect --resume" in md


# --- privacy and determinism ----------------------------------------------------------


def test_secrets_and_home_never_appear(demo: Demo) -> None:
    home = str(demo.home)
    for run_dir in (demo.stress, demo.bisect):
        for fmt in FORMATS:
            text = demo.report(run_dir, fmt)
            for value in (*SECRETS.values(), RECIPE_SECRET):
                assert value not in text, (run_dir.name, fmt, value)
            assert home not in text, (run_dir.name, fmt)
        # Nor did they reach the run directory's stored environment.
        meta = (run_dir / "meta.json").read_text()
        for value in SECRETS.values():
            assert value not in meta
    md = demo.report(demo.stress)
    assert "| `CARGO_REGISTRY_TOKEN` | `<redacted>` |" in md
    assert "DEMO_SERVICE_TOKEN: <redacted>" in md  # in the recipe shown
    assert "~/src/ticketq" in md  # the home directory is shown as ~ ...
    assert 'git clone -q "$HOME/src/ticketq"' in md  # ... and as $HOME where a shell reads it
    for end in ("stress-end.md", "bisect-end.md"):  # written by the runs, with the secrets set
        text = (demo.root / end).read_text()
        assert not any(v in text for v in SECRETS.values()) and home not in text


def test_reports_are_deterministic(demo: Demo) -> None:
    for run_dir in (demo.stress, demo.bisect):
        for fmt in FORMATS:
            assert demo.report(run_dir, fmt) == demo.report(run_dir, fmt)


def _skeleton(demo: Demo, run_dir: Path) -> dict[str, Any]:
    """The parts of a report that do not depend on timing or on the machine."""
    doc = json.loads(demo.report(run_dir, "json"))
    md = demo.report(run_dir)

    def mask(text: str) -> str:
        text = text.replace(str(demo.root), "<tmp>")
        text = re.sub(r"reproduced in \d+ of", "reproduced in N of", text)
        text = re.sub(r"\(\d+%\)", "(N%)", text)
        text = re.sub(r"seq 1 \d+", "seq 1 N", text)
        return re.sub(r"not reproduced in \d+ runs", "not reproduced in N runs", text)

    headings = [mask(line) for line in md.splitlines() if line.startswith(("## ", "### "))]
    target = {k: doc["target"][k] for k in ("kind", "function", "file", "signature", "location")}
    culprit = (doc.get("bisect") or {}).get("culprit")
    return {
        "schema_version": doc["schema_version"],
        "kind": doc["kind"],
        "keys": sorted(doc),
        "title": mask(doc["title"]),
        "status": doc["status"],
        "headings": [re.sub(r"\d+ tested", "N tested", h) for h in headings],
        "target": target,
        "top_frames": doc["target"]["top_frames"],
        "culprit": culprit
        and {k: culprit[k] for k in ("sha", "label", "subject", "author", "date")},
        # Rows that depend on what is installed (Rust, clang) are left out.
        "environment_rows": sorted({r[0] for r in doc["environment"]["rows"]} & ALWAYS_ROWS),
        "repro_commands": [c["command"] for c in doc["reproduce"]["repro"]],
        "shell": mask(doc["reproduce"]["shell"]).splitlines(),
        "suppressions": doc["suppressions"]["lines"],
    }


@pytest.mark.parametrize("which", ["stress", "bisect"])
def test_matches_stored_expectations(demo: Demo, which: str) -> None:
    got = _skeleton(demo, demo.stress if which == "stress" else demo.bisect)
    path = EXPECTED / f"{which}.expected.json"
    if os.environ.get("REPRO_UPDATE_EXPECTED") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2) + "\n")
    assert path.exists(), f"{path} missing: run with REPRO_UPDATE_EXPECTED=1 to create it"
    assert got == json.loads(path.read_text())


# --- HTML -----------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium is needed for the HTML tests: apt-get install -y chromium (make test)")


@pytest.mark.parametrize("which", ["stress", "bisect"])
def test_html_renders_in_chromium(demo: Demo, which: str, tmp_path: Path) -> None:
    run_dir = demo.stress if which == "stress" else demo.bisect
    page = tmp_path / "report.html"
    res = repro("report", str(run_dir), "-o", str(page), env=demo.report_env)
    assert res.returncode == 0, res.stderr
    html = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    assert "<svg" in html and "<style>" in html
    for bad in ("<script", "<link", " src=", "url(", "@import"):
        assert bad not in html, bad
    if which == "bisect":
        assert "Bisect over 16 commits" in html and "fixed by " in html
    assert "Outcomes of " in html
    browser = _chromium()
    common = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,2200",
    ]  # fmt: skip
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=180
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    ).stdout
    assert "<svg" in dom and "data race in tq_publish" in dom


# --- the command line -----------------------------------------------------------------


def test_cli_errors(demo: Demo, tmp_path: Path) -> None:
    res = repro("report", str(tmp_path / "nope"))
    assert res.returncode == 2 and "error:" in res.stderr and len(res.stderr.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = repro("report", str(tmp_path / "empty"))
    assert res.returncode == 2 and "not a repro run directory" in res.stderr
    res = repro("report", str(demo.stress), "--format", "pdf")
    assert res.returncode == 2 and "unknown report format" in res.stderr
    assert "Traceback" not in res.stderr


def test_output_file_and_format_from_suffix(demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = repro("report", str(demo.stress), "-o", str(out), env=demo.report_env)
    assert res.returncode == 0 and res.stdout == ""
    assert json.loads(out.read_text())["schema_version"] == 2
    # From inside the run directory: `.` named it "" in the footer and the JSON.
    here = repro("report", ".", "--format", "json", cwd=demo.stress, env=demo.report_env)
    assert json.loads(here.stdout)["run"]["name"] == demo.stress.name


def test_run_without_recorded_environment(demo: Demo, tmp_path: Path) -> None:
    """Run directories from before environments were recorded still give a report."""
    old = tmp_path / "old"
    shutil.copytree(demo.stress, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["environment"]
    (old / "meta.json").write_text(json.dumps(meta))
    md = demo.report(old)
    assert "did not record its environment" in md
    assert "tq_publish" in md.splitlines()[0]


def test_the_reports_recipe_works_saved_anywhere(tmp_path: Path) -> None:
    """The recipe in "Reproduce with repro" names the extension's repository as the run
    found it: `repo: ../ticketq`, relative to a file the reader does not have, failed
    with "repository not found" once pasted elsewhere."""
    work = tmp_path / "proj"
    repo = make_repo(work / "ticketq")
    recipe = work / "recipes" / "demo.yaml"
    recipe.parent.mkdir(parents=True)
    text = (
        (ROOT / "recipes" / "demo.yaml").read_text().replace("../demo-work/ticketq", "../ticketq")
    )
    recipe.write_text(text)
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "2", "-j", "1", "--runs-dir", str(runs))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    doc = json.loads(repro("report", str(_only_dir(runs)), "--format", "json").stdout)
    pasted = tmp_path / "elsewhere" / "a" / "recipe.yaml"
    pasted.parent.mkdir(parents=True)
    pasted.write_text(doc["reproduce"]["recipe"])
    assert f"repo: {repo.resolve()}" in pasted.read_text()
    check = repro("recipe", "validate", str(pasted))
    assert check.returncode == 0, check.stdout + check.stderr
    # The comments and everything else are the recipe as written.
    assert pasted.read_text().replace(str(repo.resolve()), "../ticketq") == text


def test_the_bisects_counts_come_from_its_log(demo: Demo, tmp_path: Path) -> None:
    """Counts are folded from events.jsonl, as every other count of the report: a
    summary.json out of step with the log (a cut log, an edit) made one Summary table
    state two numbers of runs."""
    copy = tmp_path / demo.bisect.name
    shutil.copytree(demo.bisect, copy)
    honest = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    summary = json.loads((copy / "summary.json").read_text())
    summary["information"]["bisect_runs"] = 999
    summary["run_seconds"] = 12345.0
    summary["calibration"]["reused"] = {"path": "/elsewhere", "runs": 77, "hits": 5}
    (copy / "summary.json").write_text(json.dumps(summary))
    doc = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    for key in ("run_seconds", "calibration_from", "runs", "builds"):
        assert doc["bisect"][key] == honest["bisect"][key], key
    info = doc["bisect"]["information"]
    assert info["bisect_runs"] == honest["bisect"]["information"]["bisect_runs"] != 999
    assert info["at_answer"] == honest["bisect"]["information"]["at_answer"]

    # The verdicts too: the strategy is replayed from the log, not read back.
    summary["culprit"] = {"id": "0" * 40, "label": "bogus", "subject": "edited"}
    summary["confidence"] = 0.5
    summary["information"]["bound_runs"] = 1.0
    for step in summary["steps"]:
        step["verdict"] = "edited"
    (copy / "summary.json").write_text(json.dumps(summary))
    doc = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    for key in ("culprit", "culprit_range", "confidence", "steps", "information"):
        assert doc["bisect"][key] == honest["bisect"][key], key
    # ... and they are what the bisect said when it ended.
    (copy / "summary.json").unlink()
    doc = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    live = json.loads((demo.bisect / "summary.json").read_text())
    assert doc["bisect"]["culprit"]["id"] == live["culprit"]["id"]
    assert doc["bisect"]["confidence"] == live["confidence"]
    assert [s["verdict"] for s in doc["bisect"]["steps"]] == [s["verdict"] for s in live["steps"]]


def test_a_bisect_killed_before_its_summary_states_where_it_stood(
    demo: Demo, tmp_path: Path
) -> None:
    """A bisect killed mid-search (kill -9: no summary.json, status still "running")
    keeps its evidence; the report replays the strategy and names the most probable
    answer with its probability, as the console did while it ran."""
    copy = tmp_path / demo.bisect.name
    shutil.copytree(demo.bisect, copy)
    (copy / "summary.json").unlink()
    meta = json.loads((copy / "meta.json").read_text())
    meta["status"] = "running"
    meta.pop("result", None)
    (copy / "meta.json").write_text(json.dumps(meta))
    lines = (copy / "events.jsonl").read_text().splitlines(keepends=True)
    runs = [i for i, line in enumerate(lines) if '"event":"run"' in line.replace(" ", "")]
    (copy / "events.jsonl").write_text("".join(lines[: runs[-3]]))  # the last 3 runs lost
    doc = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    b = doc["bisect"]
    assert b["culprit"] is None and b["confidence"] is None
    likely = b["likely"]
    assert likely is not None and 0 < likely["confidence"] < 1
    (label,) = likely["commits"]
    step = next(s for s in b["steps"] if s["label"] == label)
    assert step["verdict"] == f"clean ({likely['confidence']:.1%})"
    md = repro("report", str(copy), env=demo.report_env).stdout
    assert f"most likely {label}" in md and f"({likely['confidence']:.1%}" in md
    # Killed at the end of its calibration, its belief names no commit: "most likely X
    # (6.2%)" was one of 16 equal priors, picked.
    search = next(i for i in runs if '"phase":"calibrate"' not in lines[i].replace(" ", ""))
    (copy / "events.jsonl").write_text("".join(lines[:search]))
    doc = json.loads(repro("report", str(copy), "--format", "json", env=demo.report_env).stdout)
    assert doc["bisect"]["culprit"] is None and doc["bisect"]["likely"] is None, doc["bisect"]
    md = repro("report", str(copy), env=demo.report_env).stdout
    assert "not found yet" in md and "most likely" not in md


def test_the_reports_recipe_names_the_repository_by_its_web_url(tmp_path: Path) -> None:
    """Where the run knows the extension's web URL, the pasted recipe clones from it: it
    named the reporter's mirror (/work/.mirror/...), which its reader does not have."""
    work = tmp_path / "proj"
    make_repo(work / "ticketq")
    recipe = work / "recipes" / "demo.yaml"
    recipe.parent.mkdir(parents=True)
    text = (
        (ROOT / "recipes" / "demo.yaml").read_text().replace("../demo-work/ticketq", "../ticketq")
    )
    text = re.sub(r"(  repo: \.\./ticketq.*\n)", r"\1  web_url: https://example.org/acme/t\n", text)
    assert "web_url: https://example.org/acme/t\n" in text
    recipe.write_text(text)
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "1", "-j", "1", "--runs-dir", str(runs))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    doc = json.loads(repro("report", str(_only_dir(runs)), "--format", "json").stdout)
    pasted = doc["reproduce"]["recipe"]
    assert "  repo: https://example.org/acme/t " in pasted, pasted
    assert str(work) not in pasted


def test_the_report_says_which_files_go_beside_the_recipe(tmp_path: Path) -> None:
    """A reproducer run from the recipe's folder ({recipe_dir}/x) needs that file beside
    the pasted recipe; the report did not say so, and its reader's first run failed."""
    (tmp_path / "go.sh").write_text("#!/bin/sh\nexit 0\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: beside\nreproducer: {command: 'sh {recipe_dir}/go.sh', timeout: 30}\n"
        "target: {functions: [nothing_races]}\n"
    )
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "1", "--runs-dir", str(runs))
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(repro("report", str(_only_dir(runs)), "--format", "json").stdout)
    assert doc["reproduce"]["beside_recipe"] == ["go.sh"]
    md = repro("report", str(_only_dir(runs)), "--format", "markdown").stdout
    assert "Save go.sh beside recipe.yaml" in md, md


def test_a_report_carries_the_reproducer_as_it_ran_not_as_it_is_now(tmp_path: Path) -> None:
    """Sweep 18: a report written after the reproducer beside the recipe was edited
    carried the edited text in its plain script, as if it had run."""
    log = Path(__file__).resolve().parent / "data" / "tsan" / "cpython-ext-lazy-init.log"
    folder = tmp_path / "recipes"
    folder.mkdir()
    script = folder / "replay.sh"
    script.write_text(f"#!/bin/sh\n# replay, version 1\ncat '{log}'\nexit 66\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        "name: replay\nreproducer:\n  command: sh {recipe_dir}/replay.sh\n  timeout: 30\n"
        "target:\n  functions: [ring_tag]\n  depth: 1\n"
    )
    runs = tmp_path / "runs"
    res = repro("stress", str(recipe), "--runs", "1", "--runs-dir", str(runs))
    assert res.returncode == 0, res.stdout + res.stderr
    (run_dir,) = runs.iterdir()
    script.write_text("#!/bin/sh\n# replay, version 2 (edited after the run)\nexit 0\n")
    md = repro("report", str(run_dir)).stdout
    assert "replay, version 1" in md and "edited after the run" not in md, md
    assert "Save replay.sh beside recipe.yaml" in " ".join(md.split()), md
