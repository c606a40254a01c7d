"""The last-phase solver behind bench/README.md's "policy or belief" table, on cases whose
answer is known in closed form."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "bench" / "bench_final_phase.py"
_spec = importlib.util.spec_from_file_location("bench_final_phase", _PATH)
assert _spec is not None and _spec.loader is not None
final_phase = importlib.util.module_from_spec(_spec)
sys.modules["bench_final_phase"] = final_phase
_spec.loader.exec_module(final_phase)
# The solver recurses once per run (up to a few thousand deep), as its main() allows for.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))


def test_a_known_rate_needs_the_closed_form_misses() -> None:
    # Rate all but known (0.1): "b racy" at prior odds 1:1 falls below 1% after K misses with
    # 0.9**K <= 1/99, i.e. K = 44; at odds 4:1, 0.9**K <= 1/396, K = 57. No run at f helps.
    for p_racy, odds in ((0.5, 1.0), (0.8, 4.0)):
        fp = final_phase.FinalPhase((100_000, 1_000_000), (4, 40), ((1.0, 1.0),), p_racy, 0.99)
        want = math.ceil(math.log(odds * 99) / -math.log(0.9))
        assert fp.cost(0, 0, 0, False, 0.1) == (want, 0.0)
        if p_racy == 0.5:  # the optimal order spends nothing at f (a slow search: once)
            assert fp.cost(0, 0, 0, True, 0.1) == (want, 0.0)


def test_runs_at_the_racy_commit_pay_when_the_rate_is_vague() -> None:
    # One hit in ten runs at the racy end and one in ten inside: the optimal order is cheaper in
    # the policy's own expectation than runs at b alone, and spends runs at f.
    fp = final_phase.FinalPhase((1, 10), (1, 10), ((1.0, 1.0),), 0.5, 0.99)
    assert fp.value(0, 0, 0, True) < fp.value(0, 0, 0, False)
    at_b, at_f = fp.cost(0, 0, 0, True, 0.1)
    assert at_f > 0 and at_b + at_f < fp.cost(0, 0, 0, False, 0.1)[0]
