"""When a bisect skips a commit whose runs do not count (pure, fast)."""

from __future__ import annotations

import random

import pytest

from repro.strategy.usability import cannot_count, usable_fraction


def test_a_commit_whose_runs_all_crash_is_skipped_as_soon_as_that_is_unlikely() -> None:
    everywhere = usable_fraction(20, 20)  # every run elsewhere counted
    assert not cannot_count(0, 2, 0, everywhere)
    assert cannot_count(0, 3, 0, everywhere)  # as before: 3 runs
    # greenlet: 11 of 20 counted elsewhere; 3 crashes in a row happen 9% of the time
    half = usable_fraction(11, 20)
    assert not cannot_count(0, 3, 0, half)
    assert not cannot_count(0, 5, 0, half)
    assert cannot_count(0, 6, 0, half)


def test_a_hit_or_runs_that_mostly_count_keep_a_commit() -> None:
    everywhere = usable_fraction(20, 20)
    assert not cannot_count(1, 10, 1, everywhere)  # it showed the race: it is testable
    assert not cannot_count(5, 5, 0, everywhere)
    assert cannot_count(1, 12, 0, everywhere)  # 1 of 13 where all counted elsewhere


@pytest.mark.parametrize("share", [0.3, 0.55, 0.9])
def test_a_commit_as_usable_as_the_others_is_seldom_skipped(share: float) -> None:
    """Asked after every run of a long probe (200 runs), as a bisect asks at its fixed
    end: a commit whose runs count as often as the others' is skipped in at most 2% of
    probes, where the old rule ("3 that do not count, more than those that do") skipped
    72% at a share of 0.55."""
    rng = random.Random(7)
    usable = usable_fraction(round(share * 40), 40)
    skipped = 0
    for _ in range(1000):
        counted = not_counted = 0
        for _ in range(200):
            if rng.random() < share:
                counted += 1
            else:
                not_counted += 1
            if cannot_count(counted, not_counted, 0, usable):
                skipped += 1
                break
    assert skipped <= 20, skipped
