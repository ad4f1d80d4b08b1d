"""The simulator's keyword rule: format detection, topics, verdicts, rendering, token counts."""

from __future__ import annotations

import orjson
import pytest

from pipeline.core.records import ANSWER_FORMATS, OutputFormat, Policy
from pipeline.plan.prompt import FORMAT_INSTRUCTIONS, render_system
from pipeline.simulator import rules

SPAM = Policy("spam", "# Spam Policy\nINSTRUCTIONS\n{{OUTPUT_FORMAT}}\nVIOLATES: SP1 scams, SP2 ads.")


@pytest.mark.parametrize("fmt", ANSWER_FORMATS)
def test_output_format_is_detected_from_the_pipeline_instructions(fmt: OutputFormat) -> None:
    assert rules.output_format(render_system(SPAM, fmt)) == fmt.value


def test_plain_policy_without_format_instructions_gets_binary() -> None:
    assert rules.output_format("Say 1 for spam.") == "binary"


def test_topic_is_picked_from_policy_words() -> None:
    assert rules.decide(rules.keywords_for("Harassment policy"), "you idiot").rule_ids == ("HH2",)
    assert rules.decide(rules.keywords_for("Self-harm policy"), "I want to die").category == "SH1"
    assert rules.decide(rules.keywords_for("Protecting minors"), "an underage user").category == "CS1"
    assert rules.decide(rules.keywords_for("Spam policy"), "Crypto GIVEAWAY today").category == "SP1"


def test_keywords_of_another_topic_do_not_count() -> None:
    assert rules.decide(rules.keywords_for("Spam policy"), "you idiot").violation == 0


def test_unknown_topic_falls_back_to_generic_keywords() -> None:
    keywords = rules.keywords_for("Policy about things")
    assert keywords == rules.GENERIC_KEYWORDS
    assert rules.decide(keywords, "a weapon").category == "GN1"


def test_combined_policy_uses_every_topic_earliest_first() -> None:
    keywords = rules.keywords_for("Harassment rules first. Then spam rules.")
    decision = rules.decide(keywords, "buy now, idiot")
    assert decision.violation == 1
    assert set(decision.rule_ids) == {"HH2", "SP2"}


def test_verdict_is_deterministic() -> None:
    keywords = rules.keywords_for("Spam policy")
    first = rules.decide(keywords, "Click here to BUY NOW")
    assert all(rules.decide(keywords, "Click here to BUY NOW") == first for _ in range(5))
    assert first.rule_ids == ("SP2", "SP3")


def test_binary_answer_is_one_character() -> None:
    assert rules.render_answer("binary", rules.Decision(1, ("SP2",), "buy now")) == "1"
    assert rules.render_answer("binary", rules.Decision(0)) == "0"


def test_category_answer_is_guide_json() -> None:
    hit = orjson.loads(rules.render_answer("category", rules.Decision(1, ("SP2",), "buy now")))
    miss = orjson.loads(rules.render_answer("category", rules.Decision(0)))
    assert hit == {"violation": 1, "policy_category": "SP2"}
    assert miss == {"violation": 0, "policy_category": None}


def test_rationale_answer_has_every_field() -> None:
    answer = orjson.loads(rules.render_answer("rationale", rules.Decision(1, ("SP2", "SP3"), "buy now")))
    assert answer["violation"] == 1 and answer["policy_category"] == "SP2"
    assert answer["rule_ids"] == ["SP2", "SP3"]
    assert answer["confidence"] in {"low", "medium", "high"}
    assert "buy now" in answer["rationale"]
    miss = orjson.loads(rules.render_answer("rationale", rules.Decision(0)))
    assert miss["violation"] == 0 and miss["policy_category"] is None and miss["rule_ids"] == []


def test_reasoning_is_one_short_sentence() -> None:
    text = rules.render_reasoning(rules.Decision(1, ("SP2",), "buy now"))
    assert text.count(".") == 1 and len(text) < 120


def test_token_counts_are_cheap_estimates() -> None:
    assert rules.count_tokens("") == 1
    assert rules.count_tokens("a" * 400) == 101
    assert rules.message_tokens("abcd") == rules.count_tokens("abcd") + 4
    assert rules.prompt_tokens(100, "abcd") == 100 + rules.message_tokens("abcd") + 3


@pytest.mark.parametrize(("tokens", "cached"), [(10, 0), (64, 64), (130, 128), (600, 576)])
def test_cached_prefix_is_whole_blocks_of_64(tokens: int, cached: int) -> None:
    assert rules.cached_tokens(tokens) == cached


def test_spam_policy_in_configs_is_a_spam_topic() -> None:
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "policies" / "spam.md"
    if not path.exists():
        pytest.skip("no spam policy shipped")
    system = render_system(Policy("spam", path.read_text()), OutputFormat.RATIONALE)
    assert FORMAT_INSTRUCTIONS[OutputFormat.RATIONALE] in system
    assert rules.decide(rules.keywords_for(system), "use promo code SAVE20").category == "SP2"
