"""What the report reads beside the counts: rule ids, co-flags, a kept column's breakdown, the browser's sample."""

from __future__ import annotations

import polars as pl

from pipeline.report.html import insights


def labels(rows: list[dict]) -> pl.LazyFrame:
    base = {"status": "ok", "rule_ids": None, "confidence": None}
    return pl.DataFrame([{**base, **r} for r in rows]).lazy()


def test_co_flags_count_rows_two_policies_both_flagged() -> None:
    frame = labels([{"row_number": 1, "policy": "spam", "violation": 1}, {"row_number": 1, "policy": "hate",
                                                                          "violation": 1},
                    {"row_number": 2, "policy": "spam", "violation": 1}, {"row_number": 2, "policy": "hate",
                                                                          "violation": 0},
                    {"row_number": 3, "policy": "hate", "violation": 1, "status": "failed"}])
    assert insights.co_flags(frame) == [{"a": "hate", "b": "spam", "both": 1, "a_flagged": 1, "b_flagged": 2}]


def test_rule_ids_of_flagged_labels_are_counted() -> None:
    frame = labels([{"row_number": 1, "policy": "spam", "violation": 1, "rule_ids": ["SP1", "SP3"]},
                    {"row_number": 2, "policy": "spam", "violation": 1, "rule_ids": ["SP3"]},
                    {"row_number": 3, "policy": "spam", "violation": 0, "rule_ids": ["SP9"]}])
    assert insights.rule_counts(frame) == [("spam", "SP3", 2), ("spam", "SP1", 1)]


def test_a_kept_column_with_few_values_is_broken_down_and_a_gold_column_is_skipped() -> None:
    rows = [{"row_number": i, "policy": "spam", "violation": i % 2, "id": str(i), "lang": "en" if i < 6 else "de",
             "gold": i % 2} for i in range(10)]
    found = insights.breakdown(labels(rows), skip={"gold"})
    assert found is not None and found["column"] == "lang"
    assert {r["value"]: (r["ok"], r["violations"]) for r in found["rows"]} == {"en": (6, 3), "de": (4, 2)}


def test_the_browser_embeds_every_label_up_to_its_limit_then_a_fixed_sample() -> None:
    few = labels([{"row_number": i, "policy": "spam", "violation": 0, "id": str(i)} for i in range(5)])
    assert [r["id"] for r in insights.browser_rows(few, 5)] == ["0", "1", "2", "3", "4"]
    total = insights.BROWSER_ROWS + 500
    many = labels([{"row_number": i, "policy": "spam", "violation": 0, "id": str(i)} for i in range(total)])
    picked = insights.browser_rows(many, total)
    assert len(picked) == insights.BROWSER_ROWS and picked == insights.browser_rows(many, total)
    assert max(r["row_number"] for r in picked) > insights.BROWSER_ROWS  # spread over the input, not its head
