"""The demo through a Dask cluster whose workers are other hosts.

The loopback tests (test_cluster.py) share an address, a home and a filesystem between the
orchestrator and its workers. Here each worker is a host of its own (tests/hosts.py: a
network namespace with its own address and hostname, on a bridge with this machine), its
cache is the platform default under its own home, and the orchestrator's cache is hidden
from it: what runs there is what a second machine with the same checkout would do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_CONFIDENCE, repro
from hosts import Host, hosts, stop

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

pytest.importorskip("distributed")

from cluster_helpers import (
    BIN,
    FIX_SUBJECT,
    RACY,
    SLOW,
    _env,
    _kill_while_it_runs,
    _only_dir,
    _runs,
    _wait_for_runs,
    _wait_workers,
    running_repro,
    scheduler_address,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_recipe(tmp_path_factory.mktemp("hosts-demo"), confidence=TEST_CONFIDENCE)


def _host_env(host: Host) -> dict[str, str]:
    """A worker host's environment: its own home, so the default cache is its own."""
    env = {k: v for k, v in _env().items() if k not in ("REPRO_CACHE_DIR", "XDG_CACHE_HOME")}
    return {**env, "HOME": str(host.home)}


@contextlib.contextmanager
def cluster_on_hosts(
    tmp: Path, names: tuple[str, ...] = ("a", "b"), scheduler_env: dict[str, str] | None = None
) -> Iterator[tuple[str, list[Host]]]:
    """A scheduler on this machine's bridge address, one worker process on each host."""
    own_cache = Path(os.environ["REPRO_CACHE_DIR"])
    log = tmp / "dask.log"
    with hosts(tmp, names, hide=[own_cache]) as (me, made):
        sched_file = tmp / "scheduler.json"
        with log.open("ab") as out:
            sched = subprocess.Popen(
                [
                    str(BIN / "dask"), "scheduler", "--host", me, "--port", "0",
                    "--no-dashboard", "--scheduler-file", str(sched_file),
                ],
                stdout=out, stderr=out, env=_env(**(scheduler_env or {})),
                start_new_session=True,
            )  # fmt: skip
        try:
            address = scheduler_address(sched_file)
            for host in made:
                host.popen(
                    [
                        str(BIN / "dask"), "worker", address, "--host", host.address,
                        "--nworkers", "1", "--nthreads", "1", "--no-nanny",
                        "--no-dashboard", "--local-directory", str(host.home / "dask"),
                    ],
                    _host_env(host),
                    log,
                )  # fmt: skip
            _wait_workers(address, len(made))
            # What a host sees of our cache: nothing, though it holds a file.
            (own_cache / "mark").write_text("ours")
            seen = tmp / "seen.txt"
            made[0].popen(["ls", "-A", str(own_cache)], {"PATH": os.environ["PATH"]}, seen).wait()
            assert seen.read_text() == "", seen.read_text()
            yield address, made
        finally:
            for host in made:
                for proc in host.procs:
                    stop(proc)
            stop(sched)


def _host_of(run: dict[str, Any]) -> str:
    """The address of the host whose worker ran ``run`` (its worker is tcp://HOST:PORT)."""
    return str(run["worker"]).removeprefix("tcp://").rsplit(":", 1)[0]


def _builds(host: Host) -> list[Path]:
    return list((host.home / ".cache" / "repro" / "builds").rglob("stress_test"))


def test_workers_on_other_hosts_stress_and_bisect(demo: Path, tmp_path: Path) -> None:
    with cluster_on_hosts(tmp_path) as (address, made):
        res = repro(
            "stress", str(demo), "--runs", "30", "--cluster", address, "--set", RACY,
            "--runs-dir", str(tmp_path / "stress"), env=_env(),
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        runs = _runs(_only_dir(tmp_path / "stress"))
        assert sorted(r["index"] for r in runs) == list(range(30))
        # Every run came back from one of the hosts, and both took runs.
        where = {_host_of(r) for r in runs}
        assert where == {h.address for h in made}, where
        hits = [r for r in runs if r["outcome"] == "target"]
        assert hits and all(r["log_dir"] for r in hits[:20])
        run_dir = _only_dir(tmp_path / "stress")
        kept = "".join(p.read_text() for p in (run_dir / hits[0]["log_dir"]).iterdir())
        assert "tq_publish" in kept  # the log of a hit travelled back from its host
        # Each host built in the default cache under its own home: it could not see ours.
        for host in made:
            assert _builds(host), host.name

        out = tmp_path / "bisect.json"
        res = repro(
            "bisect", str(demo), "--cluster", address, "--probes", "2", "--runs-dir",
            str(tmp_path / "bisect"), "--json-out", str(out), env=_env(),
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        data = json.loads(out.read_text())
        assert data["culprit"]["subject"] == FIX_SUBJECT and data["confidence"] >= 0.99
        runs = _runs(_only_dir(tmp_path / "bisect"))
        assert len({r["index"] for r in runs}) == len(runs)
        bisect_hosts = {_host_of(r) for r in runs}
        assert bisect_hosts == {h.address for h in made}, bisect_hosts


@pytest.mark.parametrize("failure", ["killed", "unplugged"])
def test_a_host_lost_mid_run_loses_no_run(demo: Path, tmp_path: Path, failure: str) -> None:
    """Host a is lost while a reproducer runs on it: its worker is killed, or its link goes
    down (a machine unplugged: no process dies, no connection is reset, its worker just
    stops answering, and the scheduler gives up on it after its time to live). Its runs
    go to host b (which has its own build), no index is lost or counted twice, and after
    that only host b runs."""
    n = 30
    runs_dir = tmp_path / "runs"
    ttl = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "10s"} if failure == "unplugged" else {}
    with (
        cluster_on_hosts(tmp_path, scheduler_env=ttl) as (address, made),
        running_repro(
            "stress", str(demo), "--runs", str(n), "--set", SLOW, "--cluster", address,
            "--runs-dir", str(runs_dir), env=_env(),
        ) as proc,
    ):  # fmt: skip
        _wait_for_runs(runs_dir, 4)
        if failure == "killed":
            _kill_while_it_runs(made[0].procs[0])
        else:
            made[0].unplug()
        text, _ = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1), text.decode()
    assert b"Traceback" not in text
    run_dir = _only_dir(runs_dir)
    runs = _runs(run_dir)
    assert sorted(r["index"] for r in runs) == list(range(n))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["runs"] == n
    assert {_host_of(r) for r in runs[-5:]} == {made[1].address}
