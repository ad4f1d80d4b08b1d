"""Confidence intervals."""

from __future__ import annotations

from pipeline.intervals import wilson


def test_wilson_holds_the_proportion_and_stays_within_zero_and_one() -> None:
    for k, n in ((0, 10), (10, 10), (3, 7), (500, 1000)):
        low, high = wilson(k, n)  # type: ignore[misc]
        assert 0.0 <= low <= k / n <= high <= 1.0
    assert wilson(0, 0) is None
