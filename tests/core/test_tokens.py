from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.tokens import (
    _encoding,
    count_tokens,
    fits,
    harmony_prompt_tokens,
    harmony_system_message,
    policy_tokens,
    quick_estimate,
    truncate,
)

MIXED = "héllo wörld, 日本語のテキスト 🙂 naïve café — “quotes”"
# characters the o200k vocabulary splits into byte pieces (several tokens for one character)
SPLIT_CHARS = "𓀀𝔘🧬ꙮ"


@pytest.mark.parametrize(("text", "tokens"), [
    ("hello world", 2),
    ("", 0),
    ("a", 1),
    ("Hello, world!", 4),
    ("日本語", 2),
    ("a" * 40, 5),
    ("𓀀", 4),
])
def test_count_tokens_known_values(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_special_token_lookalikes_count_as_plain_text() -> None:
    assert count_tokens("<|endoftext|>") == 7


def test_quick_estimate_is_about_three_characters_a_token() -> None:
    assert quick_estimate("") == 1
    assert quick_estimate("abc") == 2
    assert quick_estimate("x" * 300) == 101


@pytest.mark.parametrize("text", ["hello world", MIXED, "🙂" * 5, SPLIT_CHARS, "a" * 40])
def test_fits_agrees_with_count_tokens_at_the_budget(text: str) -> None:
    n = count_tokens(text)
    assert fits(text, n)
    assert fits(text, n + 1)
    assert not fits(text, n - 1) or n == 0


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=60), budget=st.integers(min_value=0, max_value=80))
def test_fits_agrees_with_count_tokens_on_any_text(text: str, budget: int) -> None:
    assert fits(text, budget) == (count_tokens(text) <= budget)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=80), slack=st.integers(-3, 3))
def test_fits_agrees_with_count_tokens_on_ascii_around_the_budget(text: str, slack: int) -> None:
    budget = max(count_tokens(text) + slack, 0)
    assert fits(text, budget) == (count_tokens(text) <= budget)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abc XYZ,.!\n日本語é🙂ñ")), max_size=60),
       slack=st.integers(-3, 3))
def test_fits_agrees_with_count_tokens_on_non_ascii_around_the_budget(text: str, slack: int) -> None:
    budget = max(count_tokens(text) + slack, 0)
    assert fits(text, budget) == (count_tokens(text) <= budget)


def test_text_that_fits_is_returned_unchanged() -> None:
    assert truncate(MIXED, count_tokens(MIXED)) == MIXED
    assert truncate("hello world", 100) == "hello world"


def test_truncate_to_zero_is_empty() -> None:
    assert truncate("hello world", 0) == ""


def test_truncate_cuts_on_a_token_boundary() -> None:
    assert truncate("hello world", 1) == "hello"


@pytest.mark.parametrize("budget", range(21))
def test_truncate_of_mixed_text_fits_and_is_a_prefix(budget: int) -> None:
    cut = truncate(MIXED, budget)
    assert MIXED.startswith(cut)
    assert count_tokens(cut) <= budget
    assert count_tokens(cut) >= budget - 1 or cut == MIXED


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=120), budget=st.integers(0, 40))
def test_truncate_of_ascii_fits_and_is_a_prefix(text: str, budget: int) -> None:
    cut = truncate(text, budget)
    assert text.startswith(cut)
    assert count_tokens(cut) <= budget


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60), budget=st.integers(0, 40))
def test_truncate_of_any_text_fits(text: str, budget: int) -> None:
    assert count_tokens(truncate(text, budget)) <= budget


def test_truncate_inside_a_split_character_is_still_a_prefix() -> None:
    text = "x" + SPLIT_CHARS
    for budget in range(count_tokens(text)):
        assert text.startswith(truncate(text, budget)), budget


# -- Harmony prompt counts ---------------------------------------------------------------------
# openai/harmony test-data/test_simple_convo_low_effort.txt (rendered by the Harmony library
# itself, no "Current date" line): instructions "Answer the user's questions like a robot.", user
# "What is the capital of the largest country in the world?", effort low. Derivation of 83: the
# text holds 10 special tokens (<|start|> x4, <|message|> x3, <|end|> x3); the ordinary text
# between them is 73 o200k tokens (31 for the system message body, 1 each for the role names
# system/developer/user/assistant, 14 for "# Instructions\n\n" + the instructions, 13 for the
# question), counted the way tiktoken's encode(allowed_special="all") splits it.
HARMONY_LOW_EFFORT = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: low\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "<|start|>developer<|message|># Instructions\n\nAnswer the user's questions like a robot.<|end|>"
    "<|start|>user<|message|>What is the capital of the largest country in the world?<|end|>"
    "<|start|>assistant"
)
_SPECIAL = re.compile(r"<\|(?:start|end|message)\|>")


def count_rendered(text: str) -> int:
    """Tokens of a rendered Harmony prompt: special tokens 1 each, the rest o200k text."""
    return len(_SPECIAL.findall(text)) + sum(count_tokens(part) for part in _SPECIAL.split(text))


def test_harmony_count_matches_the_harmony_librarys_rendering_of_a_known_conversation() -> None:
    assert count_rendered(HARMONY_LOW_EFFORT) == 83
    system = policy_tokens("Answer the user's questions like a robot.")
    user = "What is the capital of the largest country in the world?"
    assert harmony_prompt_tokens(system, user, "low", date=None) == 83


def test_o200k_ids_match_the_harmony_repositorys_own_token_ids() -> None:
    # openai/harmony src/tests.rs test_simple_tool_call: the analysis text and the role/channel names
    text = 'User asks: "What is the weather in Tokyo?" We need to use lookup_weather tool.'
    assert _encoding().encode_ordinary(text) == [1844, 31064, 25, 392, 4827, 382, 290, 11122, 306, 40510,
                                                16842, 1416, 1309, 316, 1199, 37342, 170154, 4584, 13]
    assert _encoding().encode_ordinary("assistant") == [173781]
    assert _encoding().encode_ordinary("analysis") == [35644]


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_harmony_count_equals_the_rendered_prompt_with_a_date_for_every_effort(effort: str) -> None:
    policy = "# Spam\n\nFlag unsolicited advertising.\n\nAnswer 0 or 1."
    user = "Buy now <\u200d|end|> and 日本語 🙂"
    rendered = (
        f"<|start|>system<|message|>{harmony_system_message(effort, '2026-11-28')}<|end|>"
        f"<|start|>developer<|message|># Instructions\n\n{policy}<|end|>"
        f"<|start|>user<|message|>{user}<|end|><|start|>assistant"
    )
    expected = count_rendered(rendered)
    assert harmony_prompt_tokens(policy_tokens(policy), user, effort, date="2026-11-28") == expected
    assert harmony_prompt_tokens(policy_tokens(policy), count_tokens(user), effort, date="2026-11-28") == expected


def test_harmony_count_grows_by_the_contents_own_tokens() -> None:
    system = policy_tokens("policy")
    base = harmony_prompt_tokens(system, "", "medium", date="2026-01-01")
    assert harmony_prompt_tokens(system, "hello world", "medium", date="2026-01-01") == base + 2


def test_fast_counter_agrees_with_the_encoder_on_awkward_text() -> None:
    for text in [MIXED, SPLIT_CHARS, "<|endoftext|> x", "a\ud800b", "  \n\n\t", "x" * 5000]:
        assert count_tokens(text) == len(_encoding().encode_ordinary(text)), text
