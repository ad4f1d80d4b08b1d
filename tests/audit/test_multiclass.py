"""Multi-class comparison arithmetic: per-class metrics, macro-F1, the matrix and intervals at the edges."""

from __future__ import annotations

import pytest

from pipeline.audit.multiclass import NO_CATEGORY, compare_classes, f1_bounds, interval


def test_a_perfect_class_keeps_an_interval_that_is_not_a_point() -> None:
    result = compare_classes([("SP2", "SP2")] * 28 + [("SP0", "SP0")] * 12)
    for name in ("SP0", "SP2"):
        m = result["per_class"][name]
        assert m["precision"] == m["recall"] == m["f1"] == 1.0
        for key in ("precision", "recall", "f1"):
            low, high = m["intervals"][key]
            assert low < high == pytest.approx(1.0)
    assert result["accuracy"] == 1.0 and result["accuracy_interval"][0] < 1.0
    low, high = result["macro_f1_interval"]
    assert low < high == pytest.approx(1.0)


def test_classes_seen_on_one_side_only_are_scored_not_dropped() -> None:
    result = compare_classes([("SP0", "SP0"), ("SP4", "SP0"), ("SP0", "SP9")], resamples=50)
    assert result["classes"] == ["SP0", "SP4", "SP9"]
    assert result["per_class"]["SP4"]["precision"] is None and result["per_class"]["SP4"]["recall"] == 0.0
    assert result["per_class"]["SP9"]["recall"] is None and result["per_class"]["SP9"]["precision"] == 0.0
    assert result["macro_f1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert result["confusion"]["matrix"] == [[1, 0, 1], [1, 0, 0], [0, 0, 0]]


def test_nothing_to_score_gives_nulls_not_an_error() -> None:
    result = compare_classes([])
    assert result["accuracy"] is None and result["macro_f1"] is None and result["per_class"] == {}
    assert result["confusion"]["matrix"] == []


def test_bootstrap_intervals_are_seeded() -> None:
    pairs = [("a", "a")] * 30 + [("a", "b")] * 5 + [("b", "b")] * 20 + [("b", "a")] * 7
    assert compare_classes(pairs, seed=3) == compare_classes(pairs, seed=3)
    assert compare_classes(pairs, seed=3)["macro_f1_interval"] != compare_classes(pairs, seed=4)["macro_f1_interval"]


def test_many_classes_fall_back_to_the_wilson_bounds_instead_of_a_huge_bootstrap() -> None:
    pairs = [(f"c{i}", f"c{i}") for i in range(200)] + [(f"c{i}", f"c{i + 1}") for i in range(200)]
    result = compare_classes(pairs, resamples=1000)
    assert result["per_class"]["c5"]["intervals"]["f1"] == f1_bounds(1, 1, 1)


def test_wilson_intervals_and_f1_bounds_stay_within_zero_and_one() -> None:
    assert interval(0, 0) is None and f1_bounds(0, 0, 0) is None
    assert interval(0, 5)[0] == 0.0 and interval(5, 5)[1] == pytest.approx(1.0)
    low, high = f1_bounds(0, 0, 7)
    assert low == 0.0 < high < 1.0


def test_no_category_is_its_own_class_name() -> None:
    assert compare_classes([("SP0", NO_CATEGORY)])["classes"] == [NO_CATEGORY, "SP0"]
