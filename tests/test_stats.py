"""Rates and intervals: checked against values computed by hand and by brute force."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.strategy.stats import clean_runs_needed, upper_rate_if_clean, wilson_interval


def test_wilson_known_value() -> None:
    # 10 of 100: the textbook Wilson interval is about [0.0552, 0.1744].
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-3)
    assert hi == pytest.approx(0.1744, abs=1e-3)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and 0.0 < hi < 0.1
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and 0.9 < lo < 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(st.integers(min_value=1, max_value=5000), st.data())
def test_wilson_contains_estimate(runs: int, data: st.DataObject) -> None:
    hits = data.draw(st.integers(min_value=0, max_value=runs))
    lo, hi = wilson_interval(hits, runs)
    assert 0.0 <= lo <= hits / runs <= hi <= 1.0


def test_clean_runs_needed_matches_definition() -> None:
    for rate in (0.01, 0.1, 0.5, 0.9):
        for conf in (0.9, 0.99):
            n = clean_runs_needed(rate, conf)
            assert (1 - rate) ** n <= 1 - conf
            assert n == 1 or (1 - rate) ** (n - 1) > 1 - conf
    assert clean_runs_needed(1.0, 0.99) == 1


def test_upper_rate_if_clean_rule_of_three() -> None:
    # The rule of three: 0 hits in n runs bounds the rate by about 3/n at 95%.
    assert upper_rate_if_clean(300) == pytest.approx(3 / 300, rel=0.01)
    assert math.isclose(upper_rate_if_clean(0), 1.0)
