"""A parallel bisect's lanes: ``k`` commits probed at once on a cluster, each lane on its
own workers, so that their builds overlap."""

from __future__ import annotations

import queue
import threading

from rich.markup import escape

from repro.app.bisect_run import (
    ROUND_BUILD_RUNS,
    BisectOptions,
    BisectRun,
    IndexPool,
    Lane,
    answered,
    say_step,
)
from repro.app.calibration import calibrated, calibration_left
from repro.app.loop import Limits, StressState
from repro.app.view import fmt_seconds
from repro.builds.stop import BuildCancelled
from repro.strategy.bisect import Done, Probe
from repro.strategy.proposals import propose_probes, settled_probes

# Marks the calibration's lane among the lanes' probes (no strategy proposes the racy end).
CALIBRATION = Probe(0, 0)


class LanesDoNotPay(Exception):
    """Lanes started before anything was measured, and the first build and run say that a
    build costs less than ``ROUND_BUILD_RUNS`` runs: one commit at a time is faster."""


def probe_lanes(run: BisectRun, k: int, calibrate: BisectOptions | None = None) -> bool:
    """Probe ``k`` commits at once, each in its own lane, until the answer holds.

    Each lane has its own workers (``Cluster.shares``): they build its commit, so the
    lanes' builds overlap, and they run it. A lane whose probe ends (a hit, its runs
    spent, or a commit that does not build) takes the next probe at once, chosen around
    the commits still in flight (``propose_probes`` with ``busy``), instead of waiting
    for the slowest probe of a round. Every result goes through the one run log (it
    serialises), so the strategy sees each as it lands; once the answer holds (or the
    clean end cannot be tested) the other lanes stop and their finished runs are kept.
    Ctrl-C reaches the main thread only: it sets the lanes' stops, which every loop reads.
    When a result leaves a lane's commit all but decided (``settled_probes``), that lane
    leaves it, its build too if it is still building, and takes a new probe.

    With ``calibrate`` (the strategy does not exist yet), lane 1 builds and calibrates the
    racy end while the others build ahead: they probe what the calibration so far
    proposes (``BisectRun.provisional``), and the strategy made at the calibration's end
    counts their runs. In the simulation (``bench/bench_parallel_bisect.py``, k = 4) that
    took the makespan from 0.48 / 0.52 of one lane's to 0.43 / 0.45 at p = 0.1 / 0.5: the
    lanes used to start one build time late. False: the bisect stops at the calibration
    (its checks failed, or ``--plan``).
    """
    assert run.cluster is not None and (run.bisector is None) == (calibrate is not None)
    console = run.console
    # Lanes on no measurement (no --probes): they give way once the costs say so.
    tentative = run.probes is None and run.lanes_pay() is None
    shares = run.cluster.shares(k)
    slots = max(1, run.cluster.threads() // k)
    pool = IndexPool(run.record.next_index)
    lanes = [Lane(i + 1, shares[i], slots, pool.take, threading.Event()) for i in range(k)]
    ended: queue.Queue[tuple[Lane, Probe, StressState | None, BaseException | None]]
    ended = queue.Queue()
    console.print(
        f"[bold]{k} probes at once[/], each on its own workers (their builds overlap)",
        highlight=False,
    )

    def probe(lane: Lane, p: Probe, limits: Limits, phase: str) -> None:
        state: StressState | None = None
        error: BaseException | None = None
        try:
            state = run.run(p.index, limits, phase, lane=lane)
        except (KeyboardInterrupt, BuildCancelled):
            pass  # the lane's stop: what finished is in the log
        except BaseException as exc:  # raised again in the main thread
            error = exc
        ended.put((lane, p, state, error))

    busy: dict[int, int] = {}  # lane number -> position in flight
    leaving: set[int] = set()  # lanes told to leave a settled probe, not yet out
    idle = list(lanes)
    threads: list[threading.Thread] = []

    def start(lane: Lane, p: Probe, limits: Limits, phase: str) -> None:
        busy[lane.number] = p.index
        t = threading.Thread(target=probe, args=(lane, p, limits, phase), daemon=True)
        threads.append(t)
        t.start()

    last = len(run.positions) - 1
    if calibrate is not None:
        limits = calibration_left(run, slots)
        if limits is not None:
            lane = idle.pop(0)
            console.print(
                f"  lane {lane.number}: [bold]calibrating[/] at the racy end "
                f"{escape(run.describe(0))}; the other lanes build ahead",
                highlight=False,
            )
            start(lane, CALIBRATION, limits, "calibrate")
        elif not calibrated(run, calibrate):
            return False
    try:
        while True:
            with run.runlog.lock:
                open_ = {t for n, t in busy.items() if n not in leaving}
                strategy = run.bisector if run.bisector is not None else run.provisional()
                proposed = propose_probes(strategy, len(idle), open_) if idle else []
            if isinstance(proposed, Done):
                if run.bisector is not None:
                    break
                proposed = []  # a provisional answer: the calibration lane goes on
            if not proposed and not busy:
                break
            for p in proposed:
                lane = idle.pop(0)
                ahead = " (building ahead)" if run.bisector is None else ""
                console.print(
                    f"  lane {lane.number}: [bold]probe[/] {run.probe_line(p)}{ahead}",
                    highlight=False,
                )
                start(lane, p, Limits(runs=p.runs, until_hits=1, jobs=slots), "bisect")
            # Wait for a lane to end, looking at the answer (and, on no measurement, at
            # what a build and a run cost) as the runs land.
            while True:
                if tentative:
                    pay = run.lanes_pay()
                    if pay is False:
                        build = max(s.build_seconds for s in run.record.positions.values())
                        each = run.record.mean_run_seconds()
                        raise LanesDoNotPay(
                            f"a build took {fmt_seconds(build)}, less than "
                            f"{ROUND_BUILD_RUNS:g} runs of {each:.2f} s: one "
                            f"{run.terms.unit} at a time, every worker on it"
                        )
                    tentative = pay is None
                try:
                    lane, p, state, error = ended.get(timeout=0.2)
                    break
                except queue.Empty:
                    if answered(run):
                        return True
            if error is not None:
                raise error
            del busy[lane.number]
            label = escape(run.positions[p.index].label)
            left = lane.number in leaving and state is None
            leaving.discard(lane.number)
            lane.stop.clear()
            idle.append(lane)
            if p is CALIBRATION:
                assert calibrate is not None
                if not calibrated(run, calibrate):
                    return False
            elif left:
                console.print(f"  lane {lane.number}: {label}: left", highlight=False)
            else:
                say_step(run, p.index, state, f"lane {lane.number}: {label}: ")
            if p.index == last and run.stats(last).unusable:
                return True
            if answered(run):
                return True
            _leave_settled(run, lanes, busy, leaving)
    finally:  # the answer, an error or Ctrl-C: every lane stops, what finished is kept
        for lane in lanes:
            lane.stop.set()
        for t in threads:
            t.join()
    return True


def _leave_settled(
    run: BisectRun, lanes: list[Lane], busy: dict[int, int], leaving: set[int]
) -> None:
    """Tell the lanes whose probe the evidence has all but decided to leave it."""
    if run.bisector is None:
        return  # nothing is decided before the calibration is over
    with run.runlog.lock:
        settled = set(settled_probes(run.bisector, set(busy.values())))
    for lane in lanes:
        pos = busy.get(lane.number)
        if pos in settled and lane.number not in leaving:
            leaving.add(lane.number)
            lane.stop.set()
            run.console.print(
                f"  lane {lane.number}: leaving {escape(run.describe(pos))}: "
                "the other lanes' results settled it",
                highlight=False,
            )
