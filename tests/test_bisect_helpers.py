"""The pure parts of `repro bisect` around the strategy: ranges, order, blame."""

from __future__ import annotations

import pytest

from repro.bisect_cmd import Position, _ordered, culprit_positions, expand_versions
from repro.errors import ReproError


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
    assert [p.id for p in _ordered(chrono, "fix")] == ["0", "1", "2", "3", "4"]
    assert [p.id for p in _ordered(chrono, "regression")] == ["4", "3", "2", "1", "0"]


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_blame_matches_a_brute_force_reading(n: int) -> None:
    """For every true change point, the blamed commit is the one a person would name."""
    chrono = list(range(n))
    for change in range(1, n):
        # find=fix: chrono[:change] racy, chrono[change:] clean; the fix is chrono[change]
        order = chrono
        b = next(i for i, c in enumerate(order) if c >= change)
        lo, hi = culprit_positions("fix", b, b)
        assert order[lo] == change and lo == hi
        # find=regression: chrono[:change] clean, chrono[change:] racy; culprit chrono[change]
        order = list(reversed(chrono))
        b = next(i for i, c in enumerate(order) if c < change)
        lo, _ = culprit_positions("regression", b, b)
        assert order[lo] == change


def test_release_tags_around_the_answer() -> None:
    from types import SimpleNamespace

    from repro.bisect_cmd import release_tags
    from repro.bisect_strategy import Done

    versions = ["3.13.0", "3.13.1", "3.13.2", "3.13.3", "3.13.4"]
    fix = SimpleNamespace(positions=[Position(id=v, label=v) for v in versions])
    assert release_tags(fix, Done(3, 3, 0.99)) == ("v3.13.2", "v3.13.3")  # type: ignore[arg-type]
    # a regression search runs newest first: position 0 is the newest (racy) release
    reg = SimpleNamespace(positions=[Position(id=v, label=v) for v in reversed(versions)])
    assert release_tags(reg, Done(2, 2, 0.99)) == ("v3.13.3", "v3.13.2")  # type: ignore[arg-type]
