"""Sampling rules: which rows a seed picks, and a sample's counts and cost scaled to the whole input."""

from __future__ import annotations

import pytest

from pipeline.quality.sampling import chosen, sample_rate, sample_summary, scale_count, scale_total


def test_the_same_seed_picks_the_same_rows_and_another_seed_other_rows() -> None:
    pick = [n for n in range(5000) if chosen(n, seed=3, rate=0.1)]
    assert pick == [n for n in range(5000) if chosen(n, seed=3, rate=0.1)]
    other = [n for n in range(5000) if chosen(n, seed=4, rate=0.1)]
    assert pick != other
    assert len(set(pick) & set(other)) < len(pick) / 3  # independent samples overlap by about rate


def test_the_share_picked_is_close_to_the_rate_in_every_stretch_of_the_input() -> None:
    for start in (0, 1_000_000):
        picked = sum(chosen(n, seed=0, rate=0.2) for n in range(start, start + 20_000))
        assert 3700 < picked < 4300  # 4000 ± 5 standard deviations


def test_a_sample_at_rate_one_is_every_row() -> None:
    assert all(chosen(n, seed=9, rate=1.0) for n in range(100))


def test_a_row_count_becomes_a_rate_and_needs_the_input_size() -> None:
    assert sample_rate(250, 1000) == 0.25
    assert sample_rate(0.3, None) == 0.3
    assert sample_rate(10, 5) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        sample_rate(10, None)


def test_a_scaled_count_interval_holds_the_estimate_and_shrinks_to_it_for_a_full_sample() -> None:
    part = scale_count(30, 100, 10_000)
    assert part is not None and part["low"] < part["estimate"] == 3000 < part["high"]
    full = scale_count(30, 100, 100)
    assert full == {"estimate": 30.0, "low": 30, "high": 30, "rate": 0.3}
    assert scale_count(0, 0, 10) is None


def test_a_scaled_cost_interval_widens_with_the_spread_of_row_costs() -> None:
    even = scale_total(10.0, 10.0, 10, 1000)  # every row cost 1
    uneven = scale_total(10.0, 100.0, 10, 1000)  # one row cost 10
    assert even is not None and uneven is not None
    assert even["estimate"] == uneven["estimate"] == 1000.0
    assert even["low"] == even["high"] == 1000.0
    assert uneven["low"] < 1000.0 < uneven["high"]


def test_the_sample_summary_scales_each_policy_to_the_input_rows() -> None:
    summary = sample_summary(total_rows=1000, sampled_rows=100, seed=1, rate=0.1,
                             violations={"spam": {"0": 80, "1": 20}}, cost_usd=0.5, cost_sum_squares=0.0025)
    spam = summary["per_policy"]["spam"]
    assert (spam["labelled_ok"], spam["violations"], spam["violations_in_input"]["estimate"]) == (100, 20, 200.0)
    assert summary["cost_usd_in_input"]["estimate"] == pytest.approx(5.0)
