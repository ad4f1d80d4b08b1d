"""Drift rules: a violation rate far from earlier runs', beyond chance, is flagged."""

from __future__ import annotations

from pipeline.quality.drift import compare, describe


def test_a_large_shift_over_enough_labels_is_flagged() -> None:
    (drift,) = compare({"spam": (1000, 300)}, [{"spam": (1000, 100)}, {"spam": (1000, 120)}], threshold=0.05)
    assert drift.flagged and drift.runs == 2 and drift.baseline_labels == 2000
    assert round(drift.shift, 3) == 0.19
    assert describe([drift]).startswith("drift: spam 11.0% -> 30.0% (+19.0 pts vs 2 earlier runs)")


def test_a_shift_below_the_threshold_is_not_flagged_however_sure() -> None:
    (drift,) = compare({"spam": (100_000, 12_000)}, [{"spam": (100_000, 10_000)}], threshold=0.05)
    assert not drift.flagged and describe([drift]) == ""


def test_a_shift_within_chance_on_a_small_sample_is_not_flagged() -> None:
    (drift,) = compare({"spam": (12, 4)}, [{"spam": (12, 2)}], threshold=0.05)
    assert abs(drift.shift) >= 0.05 and not drift.flagged


def test_a_drop_is_flagged_like_a_rise() -> None:
    (drift,) = compare({"spam": (500, 10)}, [{"spam": (500, 100)}], threshold=0.05)
    assert drift.flagged and drift.shift < 0


def test_policies_without_history_or_labels_are_left_out() -> None:
    found = compare({"spam": (100, 5), "self_harm": (100, 1), "hate": (0, 0)},
                    [{"spam": (100, 5)}, {"self_harm": (0, 0)}], threshold=0.05)
    assert [d.policy for d in found] == ["spam"]
    assert compare({"spam": (100, 5)}, [], threshold=0.05) == []


def test_rates_from_zero_to_some_are_flagged_even_when_the_baseline_has_no_spread() -> None:
    (drift,) = compare({"spam": (60, 30)}, [{"spam": (120, 0)}], threshold=0.05)
    assert drift.flagged
    assert drift.as_dict()["shift"] == 0.5
