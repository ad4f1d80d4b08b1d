"""Prompt tokens of the Harmony rendering, counted with o200k (issue 11's reference example)."""

from __future__ import annotations

import pytest

from pipeline.simulator import harmony

POLICY = "# Spam Policy\nVIOLATES (1): SP1 scams, SP2 ads.\nSAFE (0): everything else.\nAnswer with 0 or 1."
USER = "Great deal, BUY NOW at example.com"
DATE = "2025-06-28"


def test_known_request_counts_115_prompt_tokens() -> None:
    # The rendering is
    #   <|start|>system<|message|>{system content}<|end|>
    #   <|start|>developer<|message|># Instructions\n\n{POLICY}<|end|>
    #   <|start|>user<|message|>{USER}<|end|><|start|>assistant
    # 10 special tokens (3 per message, 1 for the assistant's start) plus the o200k_base counts of the
    # texts between them, each encoded on its own as Harmony's renderer does:
    #   "system" 1, system content 57 (identity, cutoff 2024-06, date 2025-06-28, "Reasoning: low",
    #   the valid-channels line), "developer" 1, "# Instructions\n\n" + POLICY 36, "user" 1, USER 8,
    #   "assistant" 1  ->  10 + 105 = 115.
    pieces = [harmony.o200k(text) for text in (
        "system", harmony.system_content("low", DATE), "developer", f"# Instructions\n\n{POLICY}",
        "user", USER, "assistant")]
    assert pieces == [1, 57, 1, 36, 1, 8, 1]
    assert harmony.prompt_tokens(POLICY, USER, "low", DATE) == 115


def test_system_content_follows_harmony_layout() -> None:
    assert harmony.system_content("high", DATE) == (
        "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
        "Current date: 2025-06-28\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.")


def test_no_system_message_renders_no_developer_message() -> None:
    with_policy = harmony.prompt_tokens(POLICY, USER, "medium", DATE)
    without = harmony.prompt_tokens("", USER, "medium", DATE)
    assert with_policy - without == 3 + 1 + 36  # specials, "developer", the instructions text


def test_special_token_look_alikes_in_content_count_as_text() -> None:
    assert harmony.o200k("<|start|>") > 1


@pytest.mark.parametrize("size", [250_000, 1_000_000])
def test_texts_longer_than_the_encoder_accepts_are_counted_in_pieces(size: int) -> None:
    text = "lorem ipsum dolor " * (size // 18)
    assert harmony.o200k(text) == pytest.approx(3 * (size // 18), rel=0.01)
