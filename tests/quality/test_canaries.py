"""Canary rules: reading a canary file and scoring answers against known verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_jsonl

from pipeline.quality.canaries import Canary, CanaryAnswer, CanaryError, parse_canaries, read_canaries, score


def test_verdicts_are_read_from_numbers_words_and_text() -> None:
    rows = [("f:0", "a", "spam", 1), ("f:1", "b", "spam", "0"), ("f:2", "c", "spam", "true"), ("f:3", "d", "spam", 0.0)]
    canaries, ignored = parse_canaries(rows, {"spam"})
    assert [c.expected for c in canaries] == [1, 0, 1, 0] and ignored == 0
    assert [c.index for c in canaries] == [0, 1, 2, 3]


@pytest.mark.parametrize(("row", "words"), [
    (("f:0", "a", "spam", 2), "violation must be 0 or 1"),
    (("f:0", "a", "spam", None), "violation must be 0 or 1"),
    (("f:0", "  ", "spam", 1), "empty text"),
    (("f:0", "a", "", 1), "no policy"),
])
def test_a_bad_canary_row_is_an_error_naming_it(row: tuple, words: str) -> None:
    with pytest.raises(CanaryError, match=words) as info:
        parse_canaries([row], {"spam"})
    assert str(info.value).startswith("f:0")


def test_only_wrong_verdicts_count_as_wrong_failed_answers_are_unanswered() -> None:
    canaries = [Canary(0, "f:0", "spam", "buy", 1), Canary(1, "f:1", "spam", "hi", 0),
                Canary(2, "f:2", "hate", "x", 1), Canary(3, "f:3", "hate", "y", 0)]
    answers = {0: CanaryAnswer("ok", 1), 1: CanaryAnswer("ok", 1), 2: CanaryAnswer("invalid_output", None)}
    s = score(canaries, answers)
    assert (s["total"], s["passed"], s["wrong"], s["unanswered"]) == (4, 1, 1, 2)
    assert s["per_policy"]["spam"] == {"total": 2, "passed": 1, "wrong": 1, "unanswered": 0}
    assert s["failures"] == [{"where": "f:1", "policy": "spam", "text": "hi", "expected": 0, "got": 1}]


def test_a_canary_file_in_any_input_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / "canaries.csv"
    path.write_text('text,policy,violation\n"buy now, click",spam,1\nhello,spam,0\nhello,self_harm,0\n')
    canaries, ignored = read_canaries(str(path), {"spam"})
    assert [(c.text, c.expected) for c in canaries] == [("buy now, click", 1), ("hello", 0)] and ignored == 1


def test_a_canary_file_without_the_needed_columns_or_rows_is_refused(tmp_path: Path) -> None:
    from pipeline.readers import InputError

    with pytest.raises(InputError, match="violation"):
        read_canaries(str(write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "policy": "spam"}])), {"spam"})
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "x", "policy": "spam", "violation": 1}\n{not json\n')
    with pytest.raises(CanaryError, match="line 2"):
        read_canaries(str(broken), {"spam"})
