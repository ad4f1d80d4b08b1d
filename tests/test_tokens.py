from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tokens import count_tokens, fits, quick_estimate, truncate

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
