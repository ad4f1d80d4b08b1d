"""Confidence intervals."""

from __future__ import annotations

import pytest

from pipeline.core.intervals import wilson


def test_wilson_holds_the_proportion_and_stays_within_zero_and_one() -> None:
    for k, n in ((0, 10), (10, 10), (3, 7), (500, 1000)):
        low, high = wilson(k, n)  # type: ignore[misc]
        assert 0.0 <= low <= k / n <= high <= 1.0
    assert wilson(0, 0) is None


@pytest.mark.parametrize(("k", "n", "low", "high"), [(10, 100, 0.0552, 0.1744), (0, 50, 0.0, 0.0713),
                                                    (50, 50, 0.9287, 1.0)])
def test_wilson_interval_known_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert wilson(0, 0) is None
