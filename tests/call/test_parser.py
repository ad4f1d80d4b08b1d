from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.call.parser import InvalidOutput, PolicyLabels, parse_verdict, verdict_reader
from pipeline.core.records import ANSWER_FORMATS, OutputFormat, Verdict


def render(verdict: Verdict, output_format: OutputFormat) -> str:
    """Write a verdict the way the model is asked to, in one of the three formats."""
    if output_format is OutputFormat.BINARY:
        return str(verdict.violation)
    obj: dict[str, object] = {"violation": verdict.violation, "policy_category": verdict.category}
    if output_format is OutputFormat.RATIONALE:
        obj["rule_ids"] = list(verdict.rule_ids)
        obj["confidence"] = verdict.confidence
        obj["rationale"] = verdict.rationale
    return json.dumps(obj, ensure_ascii=False)


# ---- the three formats --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0", "1", " 1 ", "\n0\n", "\t1\r\n"])
def test_binary_answer_with_surrounding_whitespace(text: str) -> None:
    assert parse_verdict(text) == Verdict(int(text.strip()))


def test_category_answer() -> None:
    assert parse_verdict('{"violation": 1, "policy_category": "H2.f"}') == Verdict(1, "H2.f")
    assert parse_verdict('{"violation": 0, "policy_category": null}') == Verdict(0, None)


def test_rationale_answer() -> None:
    text = (
        '{"violation": 1, "policy_category": "H2.f", "rule_ids": ["H2.d", "H2.f"], '
        '"confidence": "high", "rationale": "Threatens a named person."}'
    )
    assert parse_verdict(text) == Verdict(1, "H2.f", ("H2.d", "H2.f"), "high", "Threatens a named person.")


def test_rule_ids_is_a_tuple_of_str() -> None:
    verdict = parse_verdict('{"violation": 1, "rule_ids": ["A", 2]}')
    assert verdict.rule_ids == ("A", "2")
    assert isinstance(verdict.rule_ids, tuple)


# ---- tolerated variants --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"violation": 1, "policy_category": "H2.f"}\n```',
        '```\n{"violation": 1, "policy_category": "H2.f"}\n```',
        '```json\n{"violation": 1, "policy_category": "H2.f"}',  # cut before the closing fence
        'Answer: {"violation": 1, "policy_category": "H2.f"}',
        'Output: ```json\n{"violation": 1, "policy_category": "H2.f"}\n```',
        'Here is my verdict: {"violation": 1, "policy_category": "H2.f"} Let me know.',
        'The content threatens someone.\n\n{"violation": 1, "policy_category": "H2.f"}',
        '  \n{"violation": 1, "policy_category": "H2.f"}\n  ',
        '{"result": {"violation": 1, "policy_category": "H2.f"}}',
        '{"Violation": 1, "Policy_Category": "H2.f"}',
    ],
)
def test_wrapped_json_is_found(text: str) -> None:
    assert parse_verdict(text) == Verdict(1, "H2.f")


@pytest.mark.parametrize(
    "text",
    ["Answer: 1", "Output: 1", "answer:1", "**Answer:** 1", "Final answer: 1", "```\n1\n```", "1.", "`1`"],
)
def test_labelled_or_fenced_binary(text: str) -> None:
    assert parse_verdict(text) == Verdict(1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [('"1"', 1), ('"0"', 0), ("true", 1), ("false", 0), (" 1.0", 1)],
)
def test_violation_as_string_or_boolean(value: str, expected: int) -> None:
    assert parse_verdict('{"violation": ' + value + "}").violation == expected


@pytest.mark.parametrize("category", ['"none"', '"None"', '"null"', '""', '"  "', "null"])
def test_empty_category_spellings_mean_none(category: str) -> None:
    assert parse_verdict('{"violation": 0, "policy_category": ' + category + "}").category is None


def test_rule_ids_given_as_a_single_string() -> None:
    assert parse_verdict('{"violation": 1, "rule_ids": "H2.d"}').rule_ids == ("H2.d",)
    assert parse_verdict('{"violation": 0, "rule_ids": ""}').rule_ids == ()
    assert parse_verdict('{"violation": 0, "rule_ids": null}').rule_ids == ()


@pytest.mark.parametrize(("given", "expected"), [("HIGH", "high"), (" Medium ", "medium"), ("low", "low")])
def test_confidence_is_lowercased(given: str, expected: str) -> None:
    assert parse_verdict('{"violation": 1, "confidence": "' + given + '"}').confidence == expected


@pytest.mark.parametrize("confidence", ['"very high"', '"0.9"', "0.9", "null", "[]"])
def test_unknown_confidence_becomes_none(confidence: str) -> None:
    assert parse_verdict('{"violation": 1, "confidence": ' + confidence + "}").confidence is None


def test_descriptive_fields_of_odd_types_do_not_fail_the_row() -> None:
    verdict = parse_verdict('{"violation": 1, "policy_category": ["H2.f"], "rule_ids": {"a": 1}}')
    assert verdict == Verdict(1, "H2.f", ())
    assert parse_verdict('{"violation": 1, "rationale": "  "}').rationale is None


def test_same_verdict_twice_is_accepted() -> None:
    text = '{"violation": 1, "policy_category": "H2.f"}\nAgain: {"violation": 1, "policy_category": "H2.f"}'
    assert parse_verdict(text) == Verdict(1, "H2.f")


def test_prose_with_braces_around_the_answer() -> None:
    assert parse_verdict('Set {x} aside. {"violation": 0} (done {)') == Verdict(0)


# ---- strictness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_answer(text: str) -> None:
    with pytest.raises(InvalidOutput, match=r"^empty answer$"):
        parse_verdict(text)


@pytest.mark.parametrize("value", ["2", "-1", '"yes"', '"no"', '"true"', "0.5", "null", "[1]", '{"a": 1}'])
def test_violation_must_be_zero_or_one(value: str) -> None:
    with pytest.raises(InvalidOutput, match="violation must be 0 or 1"):
        parse_verdict('{"violation": ' + value + ', "policy_category": "H2.f"}')


def test_missing_violation() -> None:
    with pytest.raises(InvalidOutput, match="no violation field"):
        parse_verdict('{"policy_category": "H2.f"}')
    with pytest.raises(InvalidOutput, match="no violation field"):
        parse_verdict('My answer: {"label": 1}')


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry, but I can’t help with that.",
        "I cannot assist with this request.",
        "Sorry, I won't do that.",
    ],
)
def test_refusal_is_invalid(text: str) -> None:
    with pytest.raises(InvalidOutput, match=r"^refusal: "):
        parse_verdict(text)


def test_two_different_verdicts_are_rejected() -> None:
    with pytest.raises(InvalidOutput, match="two different verdicts"):
        parse_verdict('{"violation": 1} or maybe {"violation": 0}')
    with pytest.raises(InvalidOutput, match="two different verdicts"):
        parse_verdict('{"violation": 1, "policy_category": "A"} {"violation": 1, "policy_category": "B"}')


@pytest.mark.parametrize(
    "text",
    [
        "lorem ipsum",
        "01",
        "10",
        "0 or 1",
        "The answer is 1 because",
        "2",
        "-1",
        "yes",
        "true",
        "{",
        "}",
        "{}",
        "[]",
        "[1]",
        "null",
        '"1"x',
        '{"violation": 1,}',  # trailing comma is not JSON
        '{"violation": 0 or 1, "policy_category": "<rule id>"}',  # the format template echoed back
        "```json\n```",
        "Answer:",
        "<|channel|>final<|message|>",
    ],
)
def test_junk_is_invalid(text: str) -> None:
    with pytest.raises(InvalidOutput):
        parse_verdict(text)


def test_reason_is_one_line_and_quotes_at_most_80_characters() -> None:
    text = "lorem ipsum\n" * 50
    with pytest.raises(InvalidOutput) as caught:
        parse_verdict(text)
    reason = str(caught.value)
    assert reason.startswith("not a verdict: 'lorem ipsum\\nlorem")
    assert "\n" not in reason
    assert reason.endswith("…")
    assert len(reason) < 120


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidOutput):
        parse_verdict("{" + '"a": {' * 5000 + "}" * 5001)
    with pytest.raises(InvalidOutput):
        parse_verdict('{"violation": ' + "[" * 900 + "]" * 900 + "}")


# ---- properties ----------------------------------------------------------------------------------

_id_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Z"))
_id = st.text(_id_chars, min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s.lower() not in {"none", "null", "n/a", "na", "nil"}
)
verdicts = st.builds(
    Verdict,
    violation=st.sampled_from([0, 1]),
    category=st.none() | _id,
    rule_ids=st.lists(_id, max_size=4).map(tuple),
    confidence=st.sampled_from([None, "low", "medium", "high"]),
    rationale=st.none() | st.text(min_size=1, max_size=200).filter(lambda s: s.strip() == s and s != ""),
)


@settings(max_examples=300)
@given(verdicts, st.sampled_from(ANSWER_FORMATS), st.sampled_from(["", " ", "\n", "Answer: "]))
def test_rendered_verdict_parses_back(verdict: Verdict, output_format: OutputFormat, prefix: str) -> None:
    parsed = parse_verdict(prefix + render(verdict, output_format))
    assert parsed.violation == verdict.violation
    if output_format is not OutputFormat.BINARY:
        assert parsed.category == verdict.category
    if output_format is OutputFormat.RATIONALE:
        assert parsed == verdict


@settings(max_examples=300)
@given(verdicts)
def test_rendered_verdict_parses_back_from_a_code_fence(verdict: Verdict) -> None:
    assert parse_verdict(f"```json\n{render(verdict, OutputFormat.RATIONALE)}\n```") == verdict


@settings(max_examples=1000)
@given(st.text() | st.text(alphabet='{}[]":,01 \ntruefalsnviolation'))
def test_arbitrary_text_gives_a_verdict_or_invalid_output(text: str) -> None:
    try:
        verdict = parse_verdict(text)
    except InvalidOutput as error:
        assert "\n" not in str(error)
    else:
        assert verdict.violation in (0, 1)


@pytest.mark.parametrize("text", [
    '{"violation": 1, "policy_category": "S\\ud800", "rule_ids": ["\\udc00"], "rationale": "bad \\ud800 here"}',
    'Answer: {"violation": 1, "rationale": {"why": "\\udfff", "\\ud800": 1}}',
])
def test_a_lone_surrogate_escape_in_the_answer_becomes_a_question_mark(text: str) -> None:
    # the stdlib decoder makes a lone surrogate of it, which neither Parquet nor SQLite can store
    verdict = parse_verdict(text)
    for value in (verdict.category, *verdict.rule_ids, verdict.rationale):
        if value is not None:
            value.encode("utf-8")
    assert "?" in (verdict.rationale or "")


def test_a_surrogate_pair_escape_is_kept_as_its_character() -> None:
    assert parse_verdict('x {"violation": 1, "rationale": "\\ud83d\\ude00"}').rationale == "\U0001f600"


# ---- the policy's own label format -------------------------------------------------------------

SP = PolicyLabels.from_patterns(r"D-(SP\d)", r"SP[2-4]")


@pytest.mark.parametrize(("answer", "category", "violation"), [
    ("D-SP2, R-SP0", "SP2", 1),
    ("D-SP0, R-SP3", "SP0", 0),  # the first match decides: depiction, not request
    ("Reasoning first.\n\n**D-SP4** (phishing), R-SP4", "SP4", 1),
    ("D-SP1", "SP1", 0),
    ("D-SP9", "SP9", 0),  # a label the policy does not define is still a label; eval shows it as a class
])
def test_policy_labels_take_the_first_match_and_the_violation_pattern_decides(
        answer: str, category: str, violation: int) -> None:
    assert SP(answer) == Verdict(violation, category=category, rule_ids=(category,))


def test_violation_pattern_must_match_the_whole_label() -> None:
    read = PolicyLabels.from_patterns(r"\b(VALID|INVALID)\b", "INVALID")
    assert read("Classification: VALID").violation == 0  # "INVALID" contains "VALID": search would be wrong
    assert read("Classification: INVALID").violation == 1


def test_a_pattern_without_a_group_labels_with_the_whole_match() -> None:
    assert PolicyLabels.from_patterns(r"SP[0-4]", r"SP[2-4]")("label SP3.").category == "SP3"


def test_an_optional_group_that_did_not_take_part_falls_back_to_the_whole_match() -> None:
    assert PolicyLabels.from_patterns(r"D-(SP\d)?|VALID", r"SP[2-4]")("VALID").category == "VALID"


def test_empty_matches_are_skipped_for_the_first_real_label() -> None:
    assert PolicyLabels.from_patterns(r"(SP\d)?", r"SP[2-4]")("label: SP3").category == "SP3"


@pytest.mark.parametrize(("answer", "reason"), [
    ("", "empty answer"), ("  \n", "empty answer"), ("I cannot classify this.", "no label matching"),
    ('{"violation": 1, "policy_category": "SP2"}', "no label matching"),
])
def test_an_answer_without_a_label_is_invalid_output_naming_the_pattern(answer: str, reason: str) -> None:
    with pytest.raises(InvalidOutput) as info:
        SP(answer)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_policy_format_reader_and_the_json_reader_are_chosen_by_format() -> None:
    assert verdict_reader(OutputFormat.RATIONALE) is parse_verdict
    assert isinstance(verdict_reader(OutputFormat.POLICY, "SP(\\d)", "[2-4]"), PolicyLabels)


@settings(max_examples=200)
@given(st.text(st.characters(exclude_categories=()), max_size=300))
def test_policy_labels_never_fail_other_than_invalid_output(answer: str) -> None:
    try:
        verdict = SP(answer)
    except InvalidOutput:
        return
    assert verdict.category and verdict.category.startswith("SP") and verdict.violation in (0, 1)


@pytest.mark.parametrize("answer", ["D-ＳＰ３", "D-SP\u200b3, D-SP0", "D-\ufeffSP3", "D-S\u00adP3"])
def test_a_lookalike_or_invisibly_split_label_is_read_as_the_label_it_shows(answer: str) -> None:
    assert SP(answer) == Verdict(1, category="SP3", rule_ids=("SP3",))


@pytest.mark.parametrize("answer", [
    "<think>Could be D-SP0, but the link asks for a password.</think>D-SP3",
    "analysisMaybe D-SP0? No: it asks for a password.assistantfinalD-SP3",
    "<|channel|>analysis<|message|>D-SP0 or D-SP3?<|end|><|start|>assistant<|channel|>final<|message|>D-SP3",
])
def test_a_label_weighed_in_reasoning_left_in_the_content_is_not_the_answer(answer: str) -> None:
    assert SP(answer).category == "SP3"


def test_an_answer_that_is_all_reasoning_has_no_label() -> None:
    with pytest.raises(InvalidOutput, match="no label matching"):
        SP("<think>D-SP3 perhaps</think>")
