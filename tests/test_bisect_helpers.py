"""The pure parts of `repro bisect` around the strategy: ranges, order, blame."""

from __future__ import annotations

import pytest

from repro.app.bisect_run import Position, expand_versions
from repro.errors import ReproError
from repro.strategy.terms import Find, Terms


def test_expand_versions() -> None:
    assert expand_versions("3.13.0..3.13.3") == ["3.13.0", "3.13.1", "3.13.2", "3.13.3"]
    assert expand_versions("3.13.5, 3.13.15") == ["3.13.5", "3.13.15"]
    with pytest.raises(ReproError, match="one minor series"):
        expand_versions("3.12.0..3.13.5")
    with pytest.raises(ReproError, match="same release"):
        expand_versions("3.13.1..3.13.1")
    with pytest.raises(ReproError, match="at least two"):
        expand_versions("3.13.1")


def test_order_puts_the_racy_end_first() -> None:
    chrono = [Position(id=str(i), label=str(i)) for i in range(5)]
    fix, reg = Terms(Find.FIX), Terms(Find.REGRESSION)
    assert [p.id for p in fix.search_order(chrono)] == ["0", "1", "2", "3", "4"]
    assert [p.id for p in reg.search_order(chrono)] == ["4", "3", "2", "1", "0"]
    for terms in (fix, reg):
        assert terms.history_order(terms.search_order(chrono)) == chrono
        order = terms.search_order(chrono)
        assert [order[k] for k in terms.history_positions(5)] == chrono


@pytest.mark.parametrize("n", [2, 3, 7, 20])
@pytest.mark.parametrize("find", [Find.FIX, Find.REGRESSION])
def test_blame_matches_a_brute_force_reading(n: int, find: Find) -> None:
    """For every true change point, the blamed commit is the one a person would name.

    A person reads history oldest first: the fix is the oldest clean commit after
    the racy ones; the regression is the oldest racy commit after the clean ones.
    The search itself only knows positions (racy end first) and the first clean one.
    """
    terms = Terms(find)
    chrono = list(range(n))
    for change in range(1, n):
        racy = {c for c in chrono if (c < change) == (find is Find.FIX)}
        person = min(c for c in chrono if (c not in racy) == (find is Find.FIX))
        order = terms.search_order(chrono)
        assert order[0] in racy and order[-1] not in racy
        b = next(i for i, c in enumerate(order) if c not in racy)
        lo, hi = terms.culprit_positions(b, b)
        assert lo == hi and order[lo] == person


def test_release_tags_around_the_answer() -> None:
    from types import SimpleNamespace

    from repro.app.bisect import release_tags
    from repro.strategy.bisect import Done

    versions = ["3.13.0", "3.13.1", "3.13.2", "3.13.3", "3.13.4"]
    fix = SimpleNamespace(positions=[Position(id=v, label=v) for v in versions])
    assert release_tags(fix, Done(3, 3, 0.99)) == ("v3.13.2", "v3.13.3")  # type: ignore[arg-type]
    # a regression search runs newest first: position 0 is the newest (racy) release
    reg = SimpleNamespace(positions=[Position(id=v, label=v) for v in reversed(versions)])
    assert release_tags(reg, Done(2, 2, 0.99)) == ("v3.13.3", "v3.13.2")  # type: ignore[arg-type]


def test_the_advice_for_an_end_that_races_points_the_right_way() -> None:
    """A regression search whose clean end raced was told to pick "a later fixed
    commit": the wrong way, and the wrong word."""
    fix = Terms.parse("fix").other_end_advice
    regression = Terms.parse("regression").other_end_advice
    assert "later fixed commit" in fix and "--fixed" in fix
    assert "earlier clean commit" in regression and "--clean" in regression
    assert "fixed" not in regression and "later" not in regression
    assert "earlier clean release" in Terms.parse("regression", "versions").other_end_advice


def test_a_race_begun_at_the_answer_is_a_whole_race_not_seen_racy() -> None:
    """Sweep 15 was warned that a race "shows only where the target does not" where the
    report had a lost stack ("? | new_reference") and its whole race was seen at racy
    commits. Lost-stack signatures are no names for anything; a whole race seen at a
    racy commit only with a lost stack was seen there."""
    from repro.runlog.bisect_answer import begun_at_answer
    from repro.runlog.events import RunEvent, SignatureEvent
    from repro.runlog.fold import fold
    from repro.tsan.outcome import Outcome

    sig = {
        "T": (("bump",), ("peek",)),
        "W": (("new_reference",), ("pair_list_update",)),  # whole
        "Wp": (("new_reference",), ()),  # W with a lost stack
        "N": (("fresh_race",), ("other_side",)),  # begins at the fix
        "Q": (("only_partial",), ()),  # a lost stack with no whole race
    }
    events: list[object] = [
        SignatureEvent(k, "data race", v, k, target=(k == "T")) for k, v in sig.items()
    ]
    runs = [*[(0, ("T", "Wp"), Outcome.TARGET)] * 8, *[(1, ("W", "N", "Q"), Outcome.OTHER)] * 8]
    for index, (pos, sids, outcome) in enumerate(runs):
        events.append(RunEvent(index, outcome, signatures=sids, pos=pos, phase="bisect"))
    record = fold(events)  # type: ignore[arg-type]
    assert [b["signature"] for b in begun_at_answer(record, 1)] == ["N"]


@pytest.mark.parametrize("target_inside", [False, True])
def test_a_race_of_cpythons_own_code_begun_at_the_answer_is_no_extension_target_renamed(
    target_inside: bool,
) -> None:
    """Sweep 15: the fix moved multidict onto PyList_GetItemRef, which brought a race
    wholly inside CPython (new_reference against Py_INCREF), and it was warned of as the
    target under another name. A target that starts in the extension cannot become one;
    a target inside CPython can, and is still warned of."""
    from repro.runlog.bisect_answer import begun_at_answer
    from repro.runlog.events import RunEvent, SignatureEvent
    from repro.runlog.fold import fold
    from repro.tsan.outcome import Outcome

    events: list[object] = [
        SignatureEvent("T", "data race", (("a",), ("b",)), "T", True, inside_cpython=target_inside),
        SignatureEvent("C", "data race", (("new_reference",), ("Py_INCREF",)), "C", False,
                       inside_cpython=True),
        SignatureEvent("E", "data race", (("ext_f",), ("ext_g",)), "E", False),
    ]  # fmt: skip
    runs = [*[(0, ("T",), Outcome.TARGET)] * 8, *[(1, ("C", "E"), Outcome.OTHER)] * 8]
    for index, (pos, sids, outcome) in enumerate(runs):
        events.append(RunEvent(index, outcome, signatures=sids, pos=pos, phase="bisect"))
    record = fold(events)  # type: ignore[arg-type]
    begun = [b["signature"] for b in begun_at_answer(record, 1)]
    assert begun == (["C", "E"] if target_inside else ["E"])
