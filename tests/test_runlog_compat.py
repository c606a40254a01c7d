"""Run directories written before the typed run log stay readable (issue 10).

Older versions kept signatures only in signatures.json (no signature events), and their
run events lacked the fields added since (detail, elapsed). A real stress run is turned
back into that shape; the report and a resume read it with the same figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import repro
from tsan_helpers import PROGRAMS, compile_c

OLD_RUN_KEYS = (
    "event",
    "index",
    "outcome",
    "exit_code",
    "duration",
    "target_reports",
    "signatures",
    "fatal",
    "log_dir",
    "started",
)


def test_old_run_directory_is_read_and_resumed(tmp_path: Path) -> None:
    lost = compile_c(PROGRAMS / "lost_history.c", tmp_path / "lost")
    r = tmp_path / "r.yaml"
    r.write_text(
        "name: old\n"
        f"reproducer: {{command: {json.dumps(str(lost))}, timeout: 20}}\n"
        "tsan: {options: {history_size: 7}}\n"
        "target: {functions: [read_shared, write_shared]}\n"
    )
    runs = tmp_path / "runs"
    assert repro("stress", str(r), "-n", "4", "-j", "1", "--runs-dir", str(runs)).returncode == 0
    run_dir = next(runs.iterdir())
    new = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    # Back to the old shape: signature events out (into signatures.json), run events trimmed.
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    sigs = [
        {k: v for k, v in e.items() if k != "event"} | {"count": 0, "runs": 0}
        for e in events
        if e["event"] == "signature"
    ]
    old = [{k: e[k] for k in OLD_RUN_KEYS if k in e} for e in events if e["event"] == "run"]
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    (run_dir / "signatures.json").write_text(json.dumps(sigs))
    (run_dir / "summary.json").unlink()
    doc = json.loads(repro("report", str(run_dir), "--format", "json").stdout)
    for k in ("runs", "evidence_runs", "hits", "rate", "rate_ci95", "outcomes"):
        assert doc["summary"][k] == new["summary"][k], k
    assert doc["target"]["signature"] == new["target"]["signature"]
    out = tmp_path / "s.json"
    res = repro("stress", "--resume", str(run_dir), "-n", "6", "--json-out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads(out.read_text())
    assert data["runs"] == 6 and data["hits"] == 6
    assert [s["target"] for s in data["signatures"]] == [True]


def test_a_commit_built_before_a_resume_stays_built_here() -> None:
    """After kill -9 and --resume, the bisect found its own earlier builds in the cache,
    and the record said "3 of them from the cache" of builds this bisect had paid for."""
    from repro.runlog.events import BuildEvent
    from repro.runlog.fold import fold

    record = fold(
        [
            BuildEvent(pos=0, id="a", ok=True, seconds=40.0),
            BuildEvent(pos=3, id="b", ok=True, seconds=0.0, cached=True),  # an earlier run's
            # the resumed session
            BuildEvent(pos=0, id="a", ok=True, seconds=0.0, cached=True),
            BuildEvent(pos=3, id="b", ok=True, seconds=0.0, cached=True),
            BuildEvent(pos=5, id="c", ok=True, seconds=30.0),
        ]
    )
    assert record.builds == 3 and record.builds_from_cache == 1
    assert not record.positions[0].cached and record.positions[3].cached
    assert record.build_seconds == 70.0
