"""Stress and bisect on Dask: a LocalCluster, and a scheduler with workers as OS processes.

Everything listens on 127.0.0.1 only, every process started here is stopped here, and
the demo's race (a real TSAN program in a real git history) is what runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_CONFIDENCE, repro

sys.path.insert(0, str(ROOT / "demo"))
from make_repo import make_demo_recipe

pytest.importorskip("distributed")

from cluster_helpers import (
    BIN,
    FIX_SUBJECT,
    RACY,
    SLOW,
    Dask,
    _env,
    _events,
    _kill_while_it_runs,
    _only_dir,
    _runs,
    _wait_for_runs,
    _wait_workers,
    running_repro,
    scheduler_address,
    stress_ended,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_recipe(tmp_path_factory.mktemp("cluster-demo"), confidence=TEST_CONFIDENCE)


# --- a scheduler and workers as separate processes --------------------------------------


@contextlib.contextmanager
def dask_processes(
    tmp: Path,
    n: int = 2,
    *,
    nanny: bool = False,
    worker_env: dict[str, str] | None = None,
    each_worker: Sequence[dict[str, str]] = (),
    **scheduler_env: str,
) -> Iterator[Dask]:
    """`dask scheduler` and `n` `dask worker`s on loopback, each worker its own cache.

    Without a nanny by default (one process per worker: the tests kill workers); with
    one, as `dask worker` runs unless told otherwise. ``each_worker[k]``: variables that
    worker ``k`` alone has, as on machines set up apart."""
    tmp.mkdir(parents=True, exist_ok=True)
    sched_file = tmp / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp / "dask.log").open("wb")
    try:
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                stdout=log,
                stderr=log,
                env=_env(**scheduler_env),
                start_new_session=True,
            )
        )
        address = scheduler_address(sched_file)
        caches = []
        for k in range(n):
            cache = tmp / f"worker-cache-{k}"
            caches.append(cache)
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        "--scheduler-file",
                        str(sched_file),
                        "--host",
                        "127.0.0.1",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        *([] if nanny else ["--no-nanny"]),
                        "--no-dashboard",
                        "--local-directory",
                        str(tmp / f"w{k}"),
                    ],
                    stdout=log,
                    stderr=log,
                    env={
                        **(_env() if worker_env is None else worker_env),
                        **(each_worker[k] if k < len(each_worker) else {}),
                        "REPRO_CACHE_DIR": str(cache),
                    },
                    start_new_session=True,
                )
            )
        if n:
            _wait_workers(address, n)
        yield Dask(address, procs[1:], caches, procs[0])
    finally:
        # Workers first (they would wait for a scheduler that is gone), then it.
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


# --- the tests --------------------------------------------------------------------------


def _check_stress(run_dir: Path, n: int) -> list[dict[str, Any]]:
    """Each index once, 0..n-1; every run names its worker; kept logs are here."""
    runs = _runs(run_dir)
    assert sorted(r["index"] for r in runs) == list(range(n))
    assert all(r.get("worker", "").startswith("tcp://127.0.0.1:") for r in runs)
    hits = [r for r in runs if r["outcome"] == "target"]
    # As locally: the logs of the first 20 hits are kept (their files came back).
    assert all(r["log_dir"] for r in hits[:20])
    for r in runs:
        if r["log_dir"]:
            texts = "".join(p.read_text() for p in (run_dir / r["log_dir"]).iterdir())
            if r["outcome"] == "target":
                assert "tq_publish" in texts
    return runs


# What a Dask nanny writes into its workers' environment (pre-spawn-environ and the
# hash seed), unless the environment it was started with set them already.
_DASK_WRITES = {
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MALLOC_TRIM_THRESHOLD_",
    "PYTHONHASHSEED",
}


def _reproducer_envs(out: Path) -> list[dict[str, str]]:
    envs = []
    for f in sorted(out.glob("env-*")):
        pairs = (line.partition("=") for line in f.read_text().splitlines())
        envs.append({k: v for k, _, v in pairs if k and "\n" not in k})
    return envs


def test_a_reproducer_on_a_worker_sees_the_environment_it_sees_locally(
    demo: Path, tmp_path: Path
) -> None:
    """A nanny pins Python's hash seed and one BLAS/OpenMP thread, and its workers (and, in
    a LocalCluster, repro itself) inherit them: on a cluster a reproducer ran with a fixed
    seed and one BLAS thread, locally with neither. And with Ctrl-C ignored."""
    launch = {k: v for k, v in _env(OMP_NUM_THREADS="3").items() if k not in _DASK_WRITES}
    found: dict[str, list[dict[str, str]]] = {}
    ignored: dict[str, set[str]] = {}
    recorded: dict[str, dict[str, str]] = {}
    for how in ("local", "workers", "nanny"):
        out = tmp_path / f"env-{how}"
        out.mkdir()
        cmd = (
            f"reproducer.command=env > {out}/env-$$ && grep ^SigIgn /proc/self/status"
            f" > {out}/sig-$$ && ./stress_test 3 100 1000"
        )
        args = ["stress", str(demo), "--runs", "4", "--set", cmd,
                "--runs-dir", str(tmp_path / f"runs-{how}")]  # fmt: skip
        if how == "local":
            res = repro(*args, "-j", "2", env=launch)
        elif how == "workers":
            res = repro(*args, "--workers", "2", env=launch)
        else:
            # A variable the workers' machine has and this one not: the run record
            # states what the reproducers ran with, from where they ran.
            # And one that only the second worker has: the record states one worker's
            # variables, and where the others' differ (their runs count in one rate).
            on_workers = {**launch, "PYTHON_GIL": "0"}
            with dask_processes(
                tmp_path / "dask",
                nanny=True,
                worker_env=on_workers,
                each_worker=[{}, {"PYTHONMALLOC": "malloc"}],
            ) as dask:
                res = repro(*args, "--cluster", dask.address, env=launch)
                # A bisect's record too, once the racy end is built where it runs.
                bis = repro(
                    "bisect", str(demo), "--cluster", dask.address, "--probes", "1",
                    "--runs-dir", str(tmp_path / "bisect"), env=launch,
                )  # fmt: skip
                assert bis.returncode == 0, bis.stdout + bis.stderr
                # Said, once for each worker, in both commands.
                for out_text in (res.stdout, bis.stdout):
                    said = [x for x in out_text.splitlines() if "PYTHON_GIL (here unset" in x]
                    assert len(said) == 2, out_text
                    assert all("there '0'" in x and "reproducer.env" in x for x in said)
                    said = [x for x in out_text.splitlines() if "PYTHONMALLOC (here" in x]
                    assert len(said) == 1 and "there 'malloc'" in said[0], out_text
            bmeta = json.loads((_only_dir(tmp_path / "bisect") / "meta.json").read_text())
            assert bmeta["environment"]["env"].get("PYTHON_GIL") == "0", bmeta["environment"]
            _one_worker_differs(bmeta["environment"], "PYTHONMALLOC", "malloc")
            stress_dir = _only_dir(tmp_path / "runs-nanny")
            smeta = json.loads((stress_dir / "meta.json").read_text())
            _one_worker_differs(smeta["environment"], "PYTHONMALLOC", "malloc")
            report = repro("report", str(stress_dir)).stdout
            assert "Other workers' run variables" in report, report
            assert "PYTHONMALLOC=" in report, report
        assert res.returncode in (0, 1), res.stdout + res.stderr
        if how != "nanny":
            assert "note: worker" not in res.stdout, res.stdout
        found[how] = _reproducer_envs(out)
        assert len(found[how]) == 4, how
        ignored[how] = {f.read_text() for f in out.glob("sig-*")}
        meta = json.loads((_only_dir(tmp_path / f"runs-{how}") / "meta.json").read_text())
        recorded[how] = meta["environment"]["env"]
        if how != "nanny":  # one machine: every worker's variables are repro's
            assert "worker_env" not in meta["environment"], meta["environment"]
    for how, envs in found.items():
        for env in envs:
            assert not _DASK_WRITES & env.keys(), (how, _DASK_WRITES & env.keys())
            assert "__DASK_PARENT_PID" not in env, how
            # What the user set stays, even where Dask would have written its own.
            assert env["OMP_NUM_THREADS"] == "3", how
    # The signals a reproducer starts with ignored, too: a LocalCluster's workers ignore
    # Ctrl-C (repro ends them) and their reproducers inherited that.
    assert ignored["workers"] == ignored["nanny"] == ignored["local"], ignored
    (line,) = ignored["local"]
    assert not int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)), line
    keys = {how: set.union(*(set(e) for e in envs)) for how, envs in found.items()}
    # Only a worker's own cache directory and the shell's bookkeeping may differ.
    loose = {"REPRO_CACHE_DIR", "SHLVL", "_", "OLDPWD"}
    assert keys["workers"] ^ keys["local"] <= loose, keys["workers"] ^ keys["local"]
    assert keys["nanny"] ^ keys["local"] <= loose | {"PYTHON_GIL", "PYTHONMALLOC"}
    assert all(e["PYTHON_GIL"] == "0" for e in found["nanny"])
    assert recorded["nanny"].get("PYTHON_GIL") == "0", recorded["nanny"]
    assert "PYTHON_GIL" not in recorded["local"] and "PYTHON_GIL" not in recorded["workers"]
    assert "PYTHONHASHSEED" not in recorded["workers"], recorded["workers"]


def _one_worker_differs(environment: dict[str, Any], name: str, value: str) -> None:
    """The record states one worker's ``name``, and the other worker's other value."""
    (diff,) = environment["worker_env"].values()
    assert diff == {name: None if environment["env"].get(name) == value else value}, environment


def test_local_cluster_stress_same_as_local(demo: Path, tmp_path: Path) -> None:
    n = 40
    local = repro(
        "stress", str(demo), "--runs", str(n), "-j", "2", "--runs-dir", str(tmp_path / "local"),
        "--set", RACY,
        "--json-out", str(tmp_path / "local.json"), env=_env(),
    )  # fmt: skip
    assert local.returncode == 0, local.stdout + local.stderr
    res = repro(
        "stress", str(demo), "--runs", str(n), "--workers", "2", "--set", RACY,
        "--runs-dir", str(tmp_path / "dask"), "--json-out", str(tmp_path / "dask.json"),
        env=_env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = _only_dir(tmp_path / "dask")
    runs = _check_stress(run_dir, n)
    assert len({r["worker"] for r in runs}) == 2
    ours = json.loads((tmp_path / "dask.json").read_text())
    theirs = json.loads((tmp_path / "local.json").read_text())
    # The same race, classified the same way: only target and clean runs on both sides,
    # and the one target signature.
    assert {k for k, v in ours["outcomes"].items() if v} <= {"target", "clean"}
    assert {k for k, v in theirs["outcomes"].items() if v} <= {"target", "clean"}
    target = {s["id"] for s in ours["signatures"] if s["target"]}
    assert target == {s["id"] for s in theirs["signatures"] if s["target"]}
    assert ours["runs"] == n and ours["hits"] > 0
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["cluster"]["workers"] == 2 and meta["cluster"]["local"] is True
    assert meta["jobs"] == 2  # runs at once: the threads, not the chunks queued for them
    # Runs this short travel several to a task (a task per run cost the cluster 42% more
    # time than threads on the demo's 400 runs; chunked, 5%). How many depends on how long
    # they took, which load changes: whenever they were fast enough for chunks of two,
    # fewer tasks than runs.
    from repro.app.cluster import LONG_CHUNKS

    tasks = meta["cluster"]["tasks"]
    mean = sum(r["duration"] for r in runs) / len(runs)
    assert 0 < tasks <= n
    # No hit ends this stress: no run of a chunk is wasted, so the long ones.
    assert meta["cluster"]["chunk_seconds"] == LONG_CHUNKS.seconds
    if mean < LONG_CHUNKS.seconds / 3:
        assert tasks < n, (tasks, mean)


def test_a_stress_until_the_first_hit_sends_short_chunks(demo: Path, tmp_path: Path) -> None:
    """The first hit ends it, and the runs after the hit in its chunk are wasted."""
    from repro.app.cluster import SHORT_CHUNKS

    res = repro(
        "stress", str(demo), "--until-first", "--workers", "2", "--runs-dir", str(tmp_path),
        env=_env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    meta = json.loads((_only_dir(tmp_path) / "meta.json").read_text())
    assert meta["cluster"]["chunk_seconds"] == SHORT_CHUNKS.seconds


def test_a_worker_holds_its_next_chunk_while_it_runs_one(demo: Path, monkeypatch: Any) -> None:
    """Without a chunk waiting on the worker, every chunk's end idled the worker for a round
    trip (the loop took +48% of `-j 2`'s time on the demo's 400 runs; +12% with two)."""
    from repro.app.cluster import QUEUE_DEPTH, Cluster
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    loaded = load_recipe(demo, ())
    with Cluster.open(1, None) as cluster:
        runner = cluster.runner(cluster.prepare_local(loaded, Overrides()))
        assert runner.threads == 1 and runner.slots == QUEUE_DEPTH * runner.chunk
        for i in range(runner.slots):
            runner.submit(i)
        (worker,) = cluster.workers()
        held = 0
        deadline = time.monotonic() + 30
        while held < QUEUE_DEPTH and time.monotonic() < deadline:
            held = max(held, len(cluster.client.processing().get(worker, ())))
        runner.cancel()
        got = [f for _ in range(200) if runner.pending() for f in runner.wait(0.1)]
        got.extend(runner.drain())
        runner.close()
    assert held == QUEUE_DEPTH >= 2, held  # the next chunk waits on the worker
    assert sorted(f.index for f in got) == list(range(QUEUE_DEPTH))  # each once


def test_top_ups_fill_whole_tasks_when_the_chunk_size_moves(demo: Path, monkeypatch: Any) -> None:
    """Room was ``tasks * chunk`` runs: once the chunk size moved (it does at the first
    result, and with every hit's longer run), a top-up left a remainder that the next wait
    sent as a task of its own (400 demo runs went as 99-165 tasks, not about 50)."""
    from repro.app.cluster import Cluster
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    loaded = load_recipe(demo, ())
    sizes: list[tuple[int, int]] = []  # (runs in a task, the chunk size when it was sent)
    with Cluster.open(1, None) as cluster:
        runner = cluster.runner(cluster.prepare_local(loaded, Overrides()))
        nxt = 0
        # Until a few top-ups sent chunks of more than one run (a new binary's first runs
        # can be slow enough for chunks of one).
        for _ in range(60):
            if sum(chunk > 1 for _, chunk in sizes) >= 3:
                break
            known = set(runner.index)
            chunk = runner.chunk
            while runner.pending() < runner.slots:  # the stress loop's top-up
                runner.submit(nxt)
                nxt += 1
            # Nothing waits in the buffer for the next wait to send as a part task.
            assert runner.pending() == sum(len(v) for v in runner.index.values())
            sizes += [(len(v), chunk) for k, v in runner.index.items() if k not in known]
            assert runner.wait(60)
        runner.cancel()
        list(runner.drain())
        runner.close()
    later = sizes[1:]  # the first top-up is before any run time is known: chunks of one
    assert later and all(n == chunk for n, chunk in later), sizes
    assert any(chunk > 1 for _, chunk in later), sizes  # the size did move


def _run_on(runner: Any, n: int, after: Any = None) -> list[Any]:
    """``n`` runs through ``runner`` as the stress loop sends them (topped up to its
    slots); ``after(got)`` is called after each wait."""
    got: list[Any] = []
    nxt = 0
    deadline = time.monotonic() + 240
    while len(got) < n and time.monotonic() < deadline:
        while nxt < n and runner.pending() < runner.slots:
            runner.submit(nxt)
            nxt += 1
        got.extend(f for f in runner.wait(5) if f.result is not None)
        if after is not None:
            after(got)
    runner.close()
    return got


@contextlib.contextmanager
def _lane_of_one(demo: Path, monkeypatch: Any) -> Iterator[tuple[Any, Any, str, str]]:
    """A LocalCluster of two, the demo built on both, and the runner of a lane that has
    the first worker alone: (cluster, runner, its worker, the other)."""
    import dataclasses

    from repro.app.cluster import Cluster, DaskRunner
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    loaded = load_recipe(demo, ())
    with Cluster.open(2, None) as cluster:
        prepared = cluster.prepare_local(loaded, Overrides())
        own, other = sorted(cluster.workers())
        lane = dataclasses.replace(prepared, holders=(own,))
        yield cluster, DaskRunner(cluster.client, lane, 1), own, other


def test_a_lanes_runs_stay_on_its_workers_while_the_others_idle(
    demo: Path, monkeypatch: Any
) -> None:
    """A lane's runs go to its own workers only. Allowed elsewhere, Dask's work stealing
    moved them to an idle worker: a lane's calibration ran on the other lane's worker (1
    CI run), where a build not in a shared cache is built first."""
    with _lane_of_one(demo, monkeypatch) as (_, lane, own, other):
        got = _run_on(lane, 300)
    assert sorted(f.index for f in got) == list(range(300))
    assert {f.worker for f in got} == {own}, {
        w: sum(f.worker == w for f in got) for w in (own, other)
    }


def test_a_lanes_runs_go_elsewhere_once_its_workers_are_gone(demo: Path, monkeypatch: Any) -> None:
    """Held to its workers, a lane whose workers all left would wait for ever: its runs
    then go to the workers that are left, each run counted once."""
    with _lane_of_one(demo, monkeypatch) as (cluster, lane, own, other):
        gone: list[int] = []

        def retire(got: list[Any]) -> None:
            if len(got) >= 20 and not gone:
                gone.append(len(got))
                cluster.client.retire_workers(workers=[own], close_workers=True, remove=True)

        got = _run_on(lane, 120, retire)
    assert sorted(f.index for f in got) == list(range(120))
    assert gone and {f.worker for f in got[: gone[0]]} == {own}
    assert {f.worker for f in got[gone[0] + 2 :]} == {other}, [f.worker for f in got]


def test_a_worker_that_joins_a_stress_takes_runs(demo: Path, monkeypatch: Any) -> None:
    """Every worker held the build: the runs are not held to them, and a worker started
    during the stress builds and takes its share (a lane's runs are held: above)."""
    from repro.app.cluster import Cluster
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    loaded = load_recipe(demo, ())
    with Cluster.open(1, None) as cluster:
        (first,) = cluster.workers()
        runner = cluster.runner(cluster.prepare_local(loaded, Overrides()))
        joined: list[int] = []

        def scale(got: list[Any]) -> None:
            if len(got) >= 20 and not joined:
                joined.append(len(got))
                cluster.local.scale(2)

        got = _run_on(runner, 400, scale)
    assert sorted(f.index for f in got) == list(range(400))
    assert joined and {f.worker for f in got[: joined[0]]} == {first}
    assert {f.worker for f in got} - {first}, "the worker that joined ran nothing"


def test_the_wait_asks_the_scheduler_without_holding_up_its_event_loop(
    demo: Path, monkeypatch: Any
) -> None:
    """The wait for results checks on the workers with a call to the scheduler. Made
    while holding the condition on which the event loop reports a finished task, it
    stalled both until the call's timeout when a task ended meanwhile: 5 s without a run
    started, in 1 of 20 to 3 of 30 `--workers 2` stresses of 400 short runs here."""
    from repro.app.cluster import Cluster
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    loaded = load_recipe(demo, ())
    answers: list[str] = []
    with Cluster.open(1, None) as cluster:
        runner = cluster.runner(cluster.prepare_local(loaded, Overrides()))

        class Asking:
            """The worker check, made slow enough for a task to end during it."""

            seen = None  # no workers known: the runs stay with their holders

            def check(self, lost: str) -> None:
                time.sleep(0.5)  # a run takes tens of milliseconds: one ends meanwhile
                try:
                    runner.client.nthreads(callback_timeout=3)
                    answers.append("answered")
                except Exception as exc:
                    answers.append(type(exc).__name__)

        runner._watch = Asking()  # type: ignore[assignment]
        for i in range(runner.slots):
            runner.submit(i)
        got = []
        while runner.pending() and len(answers) < 3:
            got.extend(runner.wait(30))
        runner.cancel()
        got.extend(runner.drain())
        runner.close()
    assert answers and set(answers) == {"answered"}, answers
    assert got


def _worker_config(keys: list[str]) -> dict[str, Any]:
    """Dask's settings as a worker process sees them (run there by ``Client.run``)."""
    import dask

    return {k: dask.config.get(k) for k in keys}


def test_the_workers_repro_starts_are_quiet(monkeypatch: Any) -> None:
    """Dask's defaults woke every process 50 times a second and sampled it 12 times more:
    an idle LocalCluster of two took 10.6% of a core, 1.4% with QUIET_WORKERS
    (bench/bench_cluster.py --idle). The settings must reach the worker processes."""
    from repro.app.cluster import QUIET_WORKERS, Cluster

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    with Cluster.open(2, None) as cluster:
        seen = cluster.client.run(_worker_config, list(QUIET_WORKERS))
    assert len(seen) == 2
    for config in seen.values():
        assert config == QUIET_WORKERS


def _log_error(line: str) -> None:
    """Log ``line`` at ERROR on Dask's worker logger (run in a worker by ``Client.run``)."""
    import logging

    logging.getLogger("distributed.worker").error(line)


def test_the_local_clusters_logs_stay_off_the_console(
    monkeypatch: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A worker whose heartbeat met the scheduler closing at Ctrl-C printed its traceback
    under "interrupted" (once, in a fresh-clone run of the Ctrl-C test). The workers'
    logs stay off the console, and this process's go to dask-client.log."""
    import logging

    from repro.app.cluster import Cluster

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    with Cluster.open(1, None) as cluster:
        cluster.client.run(_log_error, "WORKER-SAYS-ERROR")
        logging.getLogger("distributed.scheduler").error("SCHEDULER-SAYS-ERROR")
    out, err = capfd.readouterr()
    assert "SAYS-ERROR" not in out + err
    assert "SCHEDULER-SAYS-ERROR" in (tmp_path / "cache" / "dask-client.log").read_text()


# Run as a fresh process, as repro is: a test process keeps other tests' threads
# (Dask's own among them), and with any thread alive the workers are spawned.
_FORK_CHECK = r"""
import contextlib, json, os, signal, sys, time
from pathlib import Path

def how_started():
    return {
        "pid": os.getpid(),
        "cmdline": Path("/proc/self/cmdline").read_bytes().decode(errors="replace"),
        "sigint": str(signal.getsignal(signal.SIGINT)),
        "sigterm": str(signal.getsignal(signal.SIGTERM)),
    }

def handler(signum, frame):
    raise KeyboardInterrupt

def main():
    from repro.app.cluster import Cluster

    signal.signal(signal.SIGTERM, handler)  # as repro's main does
    out = {"own": Path("/proc/self/cmdline").read_bytes().decode(errors="replace")}
    with Cluster.open(2, None) as cluster:
        first = cluster.client.run(how_started)
        out["first"] = list(first.values())
        out["handler_back"] = signal.getsignal(signal.SIGTERM) is handler
        victim = min(s["pid"] for s in first.values())
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                now = cluster.client.run(how_started)
                pids = {s["pid"] for s in now.values()}
                if len(now) == 2 and victim not in pids:
                    out["again"] = [s for s in now.values() if s["pid"] not in
                                    {f["pid"] for f in first.values()}]
                    break
            time.sleep(0.2)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


def test_the_first_workers_are_forked_and_a_restarted_one_spawned(tmp_path: Path) -> None:
    """A spawned worker imports distributed and repro again (1 s of CPU each on the
    cores the runs need); the LocalCluster's first workers are copies of repro's
    process. They must not keep repro's SIGTERM handler (it raises KeyboardInterrupt),
    and a worker Dask starts again after a death, while threads run, is spawned."""
    script = tmp_path / "fork_check.py"
    script.write_text(_FORK_CHECK)
    env = {**_env(), "REPRO_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.splitlines()[-1])
    assert len(out["first"]) == 2
    for seen in out["first"]:
        assert seen["cmdline"] == out["own"], seen["cmdline"]
        # Caught and passed over, not ignored: what a worker's reproducers would inherit.
        assert "_sigint_passed_over" in seen["sigint"], seen["sigint"]
        assert seen["sigterm"] == str(signal.SIG_DFL)
    assert out["handler_back"]
    assert "again" in out, "the killed worker was not started again"
    (again,) = out["again"]
    assert "spawn_main" in again["cmdline"], again["cmdline"]
    assert "_sigint_passed_over" in again["sigint"], again["sigint"]


def test_workers_are_spawned_while_another_thread_runs() -> None:
    """A fork copies another thread's held locks and the pipe ends of a subprocess it
    is starting; with such a thread alive the workers are spawned."""
    import threading

    from repro.app.cluster import start_method

    gate = threading.Event()
    thread = threading.Thread(target=gate.wait)
    thread.start()
    try:
        assert start_method() == "spawn"
    finally:
        gate.set()
        thread.join()


def _commands_with(text: str) -> list[int]:
    """Processes whose command line holds ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes().replace(b"\0", b" "):
                found.append(int(cmdline.parent.name))
    return found


def test_a_stopped_build_ends_on_the_worker_and_is_no_failure(demo: Path, monkeypatch: Any) -> None:
    """A lane that leaves a settled probe stops its build: the command running on the
    worker is killed at once, and the commit is not taken for one that does not build."""
    import threading

    from repro.app.cluster import Cluster
    from repro.app.context import Overrides
    from repro.builds.cache import BuildCache
    from repro.builds.stop import BuildCancelled
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    marker = "sleep 617"
    loaded = load_recipe(demo, (f'extension.build=["{marker}", "make"]',))
    failures = len(BuildCache().failures())
    stop = threading.Event()
    seen: list[bool] = []

    def stop_once_it_builds() -> None:
        deadline = time.monotonic() + 60
        while not _commands_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append(bool(_commands_with(marker)))
        stop.set()

    with Cluster.open(1, None) as cluster:
        watcher = threading.Thread(target=stop_once_it_builds)
        watcher.start()
        t0 = time.monotonic()
        with pytest.raises(BuildCancelled):
            cluster.prepare_local(loaded, Overrides(), stop=stop)
        took = time.monotonic() - t0
        watcher.join()
        deadline = time.monotonic() + 10
        while _commands_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _commands_with(marker)
    assert seen == [True]  # the build was running when it was stopped
    assert took < 60, took  # not the 617 s of the build
    assert left == [], left
    assert len(BuildCache().failures()) == failures


def test_a_build_for_a_worker_that_left_is_made_by_another(demo: Path, monkeypatch: Any) -> None:
    """A build is held to the worker it was asked of (merely allowed elsewhere, Dask's work
    stealing can give it to a worker that then builds twice); when that worker leaves
    while it builds, the build goes to a worker that is left, which then holds it."""
    import threading

    from repro.app.cluster import Cluster
    from repro.app.context import Overrides
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    marker = f"sleep 4.{os.getpid() % 1000:03d}"  # a build of its own, not in the cache
    loaded = load_recipe(demo, (f'extension.build=["{marker}", "make"]',))
    with Cluster.open(2, None) as cluster:
        first, second = sorted(cluster.workers())

        def retire_once_it_builds() -> None:
            deadline = time.monotonic() + 60
            while not _commands_with(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            cluster.client.retire_workers(workers=[first], close_workers=True, remove=True)

        watcher = threading.Thread(target=retire_once_it_builds)
        watcher.start()
        prepared = cluster.prepare_local(loaded, Overrides(), workers=[first])
        watcher.join()
    assert prepared.holders == (second,)


def test_a_cancel_reaches_a_worker_while_it_builds(demo: Path, monkeypatch: Any) -> None:
    """A lane that ends tells every worker to kill its session's runs (``Client.run``,
    in the worker's event loop). That call used to wait for the lock a build holds: a
    lane's end waited for another lane's build (15 s of a demo bisect's 65), and the
    worker's event loop stood still meanwhile."""
    import threading

    from repro.app.cluster import Cluster, cancel_session
    from repro.app.context import Overrides
    from repro.builds.stop import BuildCancelled
    from repro.recipe import load_recipe

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    marker = "sleep 47"
    loaded = load_recipe(demo, (f'extension.build=["{marker}", "make"]',))
    stop = threading.Event()
    ended: list[BaseException] = []

    def build() -> None:
        try:
            cluster.prepare_local(loaded, Overrides(), stop=stop)
        except BuildCancelled as exc:
            ended.append(exc)

    with Cluster.open(1, None) as cluster:
        builder = threading.Thread(target=build)
        builder.start()
        deadline = time.monotonic() + 60
        while not _commands_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        building = bool(_commands_with(marker))
        t0 = time.monotonic()
        cluster.client.run(cancel_session, "a-session-of-another-lane")
        took = time.monotonic() - t0
        still = bool(_commands_with(marker))
        stop.set()
        builder.join(timeout=60)
    assert building and still  # the cancel came while the build ran
    assert took < 5, took  # not the build's 47 s
    assert len(ended) == 1


def test_chunk_size_follows_the_run_time() -> None:
    from repro.app.cluster import LONG_CHUNKS, SHORT_CHUNKS

    short = SHORT_CHUNKS
    assert short.size(10.0) == 1  # a TSAN CPython run: one a task, as before chunks
    assert short.size(short.seconds) == 1
    assert short.size(short.seconds / 3) == 3
    assert short.size(0.001) == short.most  # a hit wastes at most the rest of a chunk
    assert short.size(0.0) == short.most
    # Without a hit to end the loop, tasks carry more runs of the same length.
    assert LONG_CHUNKS.size(10.0) == 1
    assert LONG_CHUNKS.size(0.02) > short.size(0.02) > 1
    assert LONG_CHUNKS.size(0.0) == LONG_CHUNKS.most


def test_separate_processes_stress_and_bisect(demo: Path, tmp_path: Path) -> None:
    with dask_processes(tmp_path) as dask:
        res = repro(
            "stress", str(demo), "--runs", "30", "--cluster", dask.address, "--set", RACY,
            "--runs-dir", str(tmp_path / "stress"), env=_env(),
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        runs = _check_stress(_only_dir(tmp_path / "stress"), 30)
        assert len({r["worker"] for r in runs}) == 2
        # Each worker built in its own cache.
        for cache in dask.caches:
            assert any((cache / "builds").rglob("stress_test")), cache
        # With --shared-cache both workers use one cache: one build of the commit.
        shared = tmp_path / "shared"
        res = repro(
            "stress", str(demo), "--runs", "6", "--cluster", dask.address,
            "--shared-cache", str(shared), "--runs-dir", str(tmp_path / "shared-runs"),
            env=_env(),
        )  # fmt: skip
        assert res.returncode in (0, 1), res.stdout + res.stderr
        assert len(list((shared / "builds").rglob("stress_test"))) == 1
        _check_stress(_only_dir(tmp_path / "shared-runs"), 6)
        out = tmp_path / "bisect.json"
        res = repro(
            "bisect", str(demo), "--cluster", dask.address, "--probes", "2", "--runs-dir",
            str(tmp_path / "bisect"), "--json-out", str(out), env=_env(),
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        bisect_out = res.stdout
        data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT and data["confidence"] >= 0.99
    runs = _runs(_only_dir(tmp_path / "bisect"))
    assert len({r["index"] for r in runs}) == len(runs)
    assert all(r.get("worker") for r in runs)
    # Two workers: the strategy's probes go two at a time, each on its own worker.
    assert "2 probes at once" in bisect_out, bisect_out
    in_lanes = {r["pos"] for r in runs if r.get("phase") == "bisect"}
    assert len(in_lanes) >= 2
    # Each lane builds on its own worker, so the bisect's commits are not all built on
    # both (they were before lanes: every build on every worker, one after the other).
    for_bisect = [d for d in bisect_out.splitlines() if "lane " in d and "probe" in d]
    assert {d.split(":")[0] for d in for_bisect} == {"  lane 1", "  lane 2"}, bisect_out
    builds = [len(list((c / "builds").rglob("stress_test"))) for c in dask.caches]
    built = data["builds"]
    assert sum(builds) < 2 * built, (builds, built)


@pytest.mark.parametrize("retries", [3, 0], ids=["retried", "lost"])
def test_worker_killed_mid_run(demo: Path, tmp_path: Path, retries: int) -> None:
    """Retried elsewhere (Dask's default), or, when the scheduler may not retry, lost:
    not counted, and another run takes its place. Never counted twice."""
    n = 30
    runs_dir = tmp_path / "runs"
    allowed = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(retries)}
    with (
        dask_processes(tmp_path, **allowed) as dask,
        running_repro(
            "stress",
            str(demo),
            "--runs",
            str(n),
            "--set",
            SLOW,
            "--cluster",
            dask.address,
            "--runs-dir",
            str(runs_dir),
            env=_env(),
        ) as proc,
    ):
        _wait_for_runs(runs_dir, 6, seconds=120)
        _kill_while_it_runs(dask.workers[0])  # both workers are busy: one run dies
        out, _ = proc.communicate(timeout=180)
    assert stress_ended(proc.returncode, out.decode()), out.decode()
    run_dir = _only_dir(runs_dir)
    if retries == 0:
        # The runs in flight on the dead worker are lost: their indices are skipped and as
        # many runs are made in their place, so the total is still n, each index once.
        indices = [r["index"] for r in _runs(run_dir)]
        assert len(indices) == len(set(indices)) == n
        assert 0 < max(indices) + 1 - n <= 2  # one run in flight per worker thread
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["runs"] == n
        assert b"lost with the worker that ran them" in out
        return
    runs = _check_stress(run_dir, n)  # every index once: none lost or doubled
    summary = json.loads((_only_dir(runs_dir) / "summary.json").read_text())
    assert summary["runs"] == n
    late = [r["worker"] for r in runs[-5:]]
    assert len(set(late)) == 1  # after the kill only the survivor runs


def _marked_processes(mark: str) -> list[str]:
    """Command lines of the running processes whose environment holds REPRO_TEST_MARK=mark."""
    found = []
    needle = f"REPRO_TEST_MARK={mark}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "stress_test" in args:
            found.append(f"{proc.name}: {args}")
    return found


@pytest.mark.parametrize(
    ("command", "n"),
    [(SLOW, 24), ("reproducer.command=sleep 0.04 && ./stress_test 3 100 1000", 300)],
    ids=["a-run-a-task", "chunks"],
)
def test_interrupt_and_resume_through_the_cluster(
    demo: Path, tmp_path: Path, command: str, n: int
) -> None:
    """Ctrl-C keeps every run that finished, also those of a chunk still running (runs
    of 50 ms travel five to a task), and --resume makes up the rest, each index once."""
    runs_dir = tmp_path / "runs"
    with running_repro(
        "stress",
        str(demo),
        "--runs",
        str(n),
        "--set",
        command,
        "--workers",
        "2",
        "--runs-dir",
        str(runs_dir),
        env=_env(REPRO_TEST_MARK=str(tmp_path)),
    ) as proc:
        deadline = time.monotonic() + 120
        seen = False  # the mark reaches the reproducers (else the check below proves nothing)
        while time.monotonic() < deadline:
            seen = seen or bool(_marked_processes(str(tmp_path)))
            dirs = list(runs_dir.glob("*/events.jsonl"))
            if dirs and len(_runs(dirs[0].parent)) >= (4 if n < 100 else 40):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole group
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out.decode()
    # The worker processes leave Ctrl-C to repro: no traceback of theirs on the console.
    assert b"Traceback" not in out and b"interrupted: resume with" in out
    run_dir = _only_dir(runs_dir)
    before = _runs(run_dir)
    assert 4 <= len(before) < n
    assert len({r["index"] for r in before}) == len(before)
    # No reproducer of this run is left running after the Ctrl-C. Only this test's (their
    # environment carries its mark: other tests run the same command), and given time to
    # die (CI saw two still there after a fixed 0.5 s, under load).
    deadline = time.monotonic() + 20
    while (left := _marked_processes(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seen and not left, left
    res = repro("stress", "--resume", str(run_dir), "--workers", "2", env=_env())
    assert stress_ended(res.returncode, res.stdout), res.stdout + res.stderr
    after = _runs(run_dir)
    assert after[: len(before)] == before
    assert sorted(r["index"] for r in after) == sorted(
        {r["index"] for r in after}
    )  # no index twice
    assert len(after) == n


def test_amplify_through_a_local_cluster(demo: Path, tmp_path: Path) -> None:
    res = repro(
        "amplify", str(demo), "--runs", "8", "--threads", "2", "--workers", "2",
        "--runs-dir", str(tmp_path / "runs"), env=_env(),
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stdout + res.stderr
    run_dir = _only_dir(tmp_path / "runs")
    runs = _runs(run_dir)
    assert sorted(r["index"] for r in runs) == list(range(16))
    assert {r["setting"] for r in runs} == {"recipe as is", "threads=2"}
    assert all(r.get("worker") for r in runs)
    rows = json.loads((run_dir / "summary.json").read_text())["settings"]
    assert [r["runs"] for r in rows] == [8, 8]


def test_lanes_build_ahead_while_the_racy_end_calibrates(demo: Path, tmp_path: Path) -> None:
    """Two lanes known before the calibration (--probes 2): lane 1 builds and calibrates
    the racy end on its worker while lane 2 builds and runs other commits on the other,
    and the strategy made at the calibration's end counts those runs: the fix is named."""
    runs_dir = tmp_path / "runs"
    out = tmp_path / "bisect.json"
    res = repro(
        "bisect", str(demo), "--set", SLOW, "--workers", "2", "--probes", "2",
        "--runs-dir", str(runs_dir), "--json-out", str(out), env=_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the other lanes build ahead" in res.stdout, res.stdout
    assert "(building ahead)" in res.stdout, res.stdout
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT and data["confidence"] >= 0.99
    events = _events(_only_dir(runs_dir))
    at = next(i for i, e in enumerate(events) if e["event"] == "strategy")
    early = [e for e in events[:at] if e["event"] == "run"]
    calibration = [e for e in early if e["phase"] == "calibrate"]
    ahead = [e for e in early if e["phase"] == "bisect"]
    assert calibration and ahead, early
    assert all(e["pos"] == 0 for e in calibration) and all(e["pos"] != 0 for e in ahead)
    # One worker calibrates, the other builds ahead.
    assert len({e["worker"] for e in calibration}) == 1
    assert {e["worker"] for e in ahead}.isdisjoint({e["worker"] for e in calibration})
    assert data["runs"] == len(_runs(_only_dir(runs_dir)))


def test_lanes_on_no_measurement_give_way_when_builds_are_cheap(demo: Path, tmp_path: Path) -> None:
    """Without --probes, nothing says before the first build whether lanes pay: they start
    (building ahead), and once a build and a run are measured (builds of a second against
    runs of half a second here) one commit at a time takes over, every worker on it; the
    runs so far count and the fix is named."""
    runs_dir = tmp_path / "runs"
    out = tmp_path / "bisect.json"
    res = repro(
        "bisect", str(demo), "--set", SLOW, "--workers", "2",
        "--runs-dir", str(runs_dir), "--json-out", str(out), env=_env(), timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout
    assert "the other lanes build ahead" in text, text
    assert "less than 10 runs" in text and "one commit at a time" in text, text
    after = text.split("one commit at a time", 1)[1]
    assert "lane " not in after and "\nstep " in after, text  # one probe at a time from then on
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT and data["confidence"] >= 0.99
    runs = _runs(_only_dir(runs_dir))
    assert len({r["index"] for r in runs}) == len(runs)
    # The calibration went on over both workers once one commit at a time took over.
    assert len({r["worker"] for r in runs if r["phase"] == "calibrate"}) == 2


def test_parallel_bisect_interrupted_and_resumed(demo: Path, tmp_path: Path) -> None:
    """Ctrl-C in the middle of a round of parallel probes: the runs that finished are kept
    (each index once), nothing of the run is left running, and --resume finds the fix."""
    runs_dir = tmp_path / "runs"
    with running_repro(
        "bisect",
        str(demo),
        "--set",
        SLOW,
        "--workers",
        "2",
        "--probes",
        "2",
        "--runs-dir",
        str(runs_dir),
        env=_env(REPRO_TEST_MARK=str(tmp_path)),
    ) as proc:
        _wait_for_runs(runs_dir, 1, "bisect")
        time.sleep(1.0)  # into a round
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    text = out.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "probes at once" in text, text
    run_dir = _only_dir(runs_dir)
    before = _runs(run_dir)
    assert len({r["index"] for r in before}) == len(before)
    deadline = time.monotonic() + 20
    while (left := _marked_processes(str(tmp_path))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left
    res = repro("bisect", "--resume", str(run_dir), "--workers", "2", env=_env(), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    after = _runs(run_dir)
    assert after[: len(before)] == before
    assert len({r["index"] for r in after}) == len(after)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["culprit"]["subject"] == FIX_SUBJECT and summary["confidence"] >= 0.99


def test_worker_killed_in_a_parallel_bisect(demo: Path, tmp_path: Path) -> None:
    """Two lanes, one worker each; one worker dies while its lane runs. Its runs go to the
    survivor (which builds what it lacks), nothing is counted twice, and the bisect still
    names the fix at its confidence."""
    runs_dir = tmp_path / "runs"
    out = tmp_path / "bisect.json"
    with (
        dask_processes(tmp_path) as dask,
        running_repro(
            "bisect",
            str(demo),
            "--set",
            SLOW,
            "--cluster",
            dask.address,
            "--probes",
            "2",
            "--runs-dir",
            str(runs_dir),
            "--json-out",
            str(out),
            env=_env(),
        ) as proc,
    ):
        _wait_for_runs(runs_dir, 2, "bisect")
        _kill_while_it_runs(dask.workers[0])
        text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text.decode()
    assert b"Traceback" not in text
    data = json.loads(out.read_text())
    assert data["culprit"]["subject"] == FIX_SUBJECT and data["confidence"] >= 0.99
    runs = _runs(_only_dir(runs_dir))
    assert len({r["index"] for r in runs}) == len(runs)
    # Both workers ran bisect runs before the kill; after it, only the survivor.
    late = {r["worker"] for r in runs[-5:]}
    assert len(late) == 1 and len({r["worker"] for r in runs}) == 2


def test_a_scheduler_without_workers_says_how_to_start_them(demo: Path, tmp_path: Path) -> None:
    with dask_processes(tmp_path, n=0) as dask:
        res = repro("stress", str(demo), "--runs", "2", "--cluster", dask.address, env=_env())
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out
    assert f"the scheduler at {dask.address} has no workers" in out, out
    assert f"dask worker {dask.address}" in out, out


@pytest.mark.parametrize("command", ["stress", "bisect"])
def test_the_scheduler_lost_midway_keeps_the_runs_and_resumes(
    demo: Path, tmp_path: Path, command: str
) -> None:
    """The scheduler dies (its machine rebooted): the client gives up after Dask's connect
    timeout, and repro stops as if interrupted, with every finished run kept and a line
    to resume; the resume, through a new cluster, finishes the job. (Before, it waited
    for the lost runs for ever.)"""
    n = 40
    runs_dir = tmp_path / "runs"
    args = ["--runs", str(n)] if command == "stress" else ["--probes", "1"]
    with (
        dask_processes(tmp_path / "first") as dask,
        running_repro(
            command,
            str(demo),
            *args,
            "--set",
            SLOW,
            "--cluster",
            dask.address,
            "--runs-dir",
            str(runs_dir),
            env=_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s"),
        ) as proc,
    ):
        _wait_for_runs(runs_dir, 6)
        os.killpg(dask.scheduler.pid, signal.SIGKILL)
        text, _ = proc.communicate(timeout=300)
    out = text.decode()
    assert proc.returncode == 2, out
    assert "Traceback" not in out and f"lost the Dask scheduler at {dask.address}" in out, out
    run_dir = _only_dir(runs_dir)
    assert f"--resume {run_dir} --cluster {dask.address}" in " ".join(out.split()), out
    kept = _runs(run_dir)
    assert len(kept) >= 6 and len({r["index"] for r in kept}) == len(kept)
    if command == "stress":
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["runs"] == len(kept) < n and summary["interrupted"]
    with dask_processes(tmp_path / "again") as dask:
        res = repro(command, "--resume", str(run_dir), "--cluster", dask.address, env=_env())
    assert res.returncode in (0, 1), res.stdout + res.stderr
    runs = _runs(run_dir)
    assert len({r["index"] for r in runs}) == len(runs) > len(kept)
    if command == "stress":
        assert len(runs) == n
    else:
        assert FIX_SUBJECT in res.stdout, res.stdout


def test_a_lost_scheduler_asked_for_its_workers_is_runner_gone(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A bisect asks how many workers there are between calibration and the probes; a
    scheduler lost just then was an internal error (CommClosedError, once in a fresh-clone
    run), not the resume line that RunnerGone gives."""
    from repro.app.cluster import Cluster
    from repro.app.executors import RunnerGone

    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    with dask_processes(tmp_path) as dask, Cluster.open(None, dask.address) as cluster:
        assert len(cluster.workers()) == 2
        os.killpg(dask.scheduler.pid, signal.SIGKILL)
        dask.scheduler.wait(timeout=30)
        with pytest.raises(RunnerGone, match="lost the Dask scheduler"):
            cluster.workers()


def test_the_scheduler_lost_while_building(demo: Path, tmp_path: Path) -> None:
    """Lost before any run: a clear error, not the client's FutureCancelledError as an
    'internal error' between the tracebacks of its reconnect attempts."""
    with (
        dask_processes(tmp_path) as dask,
        running_repro(
            "stress",
            str(demo),
            "--runs",
            "5",
            "--set",
            "extension.build=[sleep 20, make]",
            "--cluster",
            dask.address,
            "--runs-dir",
            str(tmp_path / "runs"),
            env=_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s"),
        ) as proc,
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            _cmdline(pid)[:2] == ["sleep", "20"] for pid in _pids()
        ):
            time.sleep(0.1)  # until a worker runs the build's first step
        os.killpg(dask.scheduler.pid, signal.SIGKILL)
        text, _ = proc.communicate(timeout=120)
    out = text.decode()
    assert proc.returncode == 2, out
    assert f"lost the Dask scheduler at {dask.address} while building" in out, out
    assert "Traceback" not in out and "internal error" not in out, out


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def test_the_scheduler_lost_in_amplify(demo: Path, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    with (
        dask_processes(tmp_path) as dask,
        running_repro(
            "amplify",
            str(demo),
            "--runs",
            "40",
            "--threads",
            "2,3",
            "--set",
            SLOW,
            "--cluster",
            dask.address,
            "--runs-dir",
            str(runs_dir),
            env=_env(DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="3s"),
        ) as proc,
    ):
        _wait_for_runs(runs_dir, 4)
        os.killpg(dask.scheduler.pid, signal.SIGKILL)
        text, _ = proc.communicate(timeout=120)
    out = text.decode()
    assert proc.returncode == 2, out
    assert f"lost the Dask scheduler at {dask.address}" in out, out
    assert "Traceback" not in out and "internal error" not in out, out
    summary = json.loads((_only_dir(runs_dir) / "summary.json").read_text())
    assert summary["settings"] and summary["settings"][0]["runs"] >= 4


def test_workers_without_this_repro_are_named_before_any_task(demo: Path, tmp_path: Path) -> None:
    """One worker has no repro (its import fails), one has other code (a copy of repro
    with one line more): both named, no task sent. (Before: Dask closed the first at its
    first task, and the runs waited for ever.)"""
    fake = tmp_path / "no-repro" / "repro"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("repro is not installed here")\n')
    other = tmp_path / "other-repro"
    shutil.copytree(ROOT / "repro", other / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "repro" / "text.py").open("a") as f:
        f.write("# a line this machine's repro does not have\n")
    log = tmp_path / "extra-workers.log"
    with dask_processes(tmp_path, n=1) as dask, log.open("wb") as out:
        extra = [
            subprocess.Popen(
                [
                    str(BIN / "dask"), "worker", dask.address, "--host", "127.0.0.1",
                    "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                    "--local-directory", str(tmp_path / f"extra{k}"),
                ],
                stdout=out, stderr=out, start_new_session=True,
                env={**_env(), "PYTHONPATH": str(path.parent)},
            )
            for k, path in enumerate((fake, other / "repro"))
        ]  # fmt: skip
        try:
            _wait_workers(dask.address, 3)
            res = repro(
                "stress", str(demo), "--runs", "4", "--cluster", dask.address,
                "--runs-dir", str(tmp_path / "runs"), env=_env(),
            )  # fmt: skip
        finally:
            for proc in extra:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out_text = res.stdout + res.stderr
    assert res.returncode == 2, out_text
    flat = " ".join(out_text.split())
    assert "do not run the repro you are running" in flat, out_text
    assert "cannot import repro (ImportError: repro is not installed here)" in flat, out_text
    assert flat.count("(code ") == 2, out_text  # the other code's digest and ours
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_runs_stop_when_no_worker_is_left(demo: Path, tmp_path: Path) -> None:
    """The only worker dies and none comes: after the grace, repro stops with what it
    measured instead of waiting for a worker for ever."""
    runs_dir = tmp_path / "runs"
    with (
        dask_processes(tmp_path, n=1) as dask,
        running_repro(
            "stress",
            str(demo),
            "--runs",
            "40",
            "--set",
            SLOW,
            "--cluster",
            dask.address,
            "--runs-dir",
            str(runs_dir),
            env=_env(REPRO_NO_WORKER_GRACE="3"),
        ) as proc,
    ):
        _wait_for_runs(runs_dir, 3)
        _kill_while_it_runs(dask.workers[0])
        text, _ = proc.communicate(timeout=120)
    out = text.decode()
    assert proc.returncode == 2, out
    assert f"the cluster at {dask.address} has had no workers for 3 s" in " ".join(out.split())
    assert "Traceback" not in out, out
    run_dir = _only_dir(runs_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["runs"] == len(_runs(run_dir)) >= 3 and summary["interrupted"]
