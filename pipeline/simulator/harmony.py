"""Prompt tokens as gpt-oss sees them: the Harmony rendering of a request, counted with o200k.

The layout mirrors ``openai/harmony`` (``render_conversation_for_completion``) as vLLM uses it for
gpt-oss: a system message built from ``SystemContent`` defaults, the request's system message as
the developer message, the user message, then the start of the assistant's turn::

    <|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
    Knowledge cutoff: 2024-06
    Current date: 2026-11-28

    Reasoning: medium

    # Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>
    <|start|>developer<|message|># Instructions

    {policy}<|end|><|start|>user<|message|>{content}<|end|><|start|>assistant

(no newlines between messages). Each ``<|...|>`` is one special token; the text between them is
encoded on its own with o200k_base (``encode_ordinary``), as Harmony's renderer does.
"""

from __future__ import annotations

import datetime
from functools import lru_cache

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
CHANNELS_LINE = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
#: ``<|start|>``, ``<|message|>`` and ``<|end|>`` around each message.
_SPECIALS_PER_MESSAGE = 3
_CHUNK = 200_000  # characters encoded at once (bpe-openai refuses very long inputs)


@lru_cache(maxsize=1)
def _encoding():  # the bpe_openai Encoding
    import bpe_openai

    return bpe_openai.get_encoding("o200k_base")


def o200k(text: str) -> int:
    """o200k_base tokens of ``text`` with special-token look-alikes read as plain text."""
    encode = _encoding().encode_ordinary
    if len(text) <= _CHUNK:
        return len(encode(text))
    total, start = 0, 0
    while start < len(text):  # cut long texts at a space so few tokens straddle a cut
        end = len(text) if len(text) - start <= _CHUNK else text.rfind(" ", start + 1, start + _CHUNK)
        end = start + _CHUNK if end <= start else end
        total += len(encode(text[start:end]))
        start = end
    return total


@lru_cache(maxsize=1024)
def o200k_cached(text: str) -> int:
    """``o200k`` for the few texts that repeat (answers, reasoning sentences, roles)."""
    return o200k(text)


def system_content(effort: str, date: str) -> str:
    """The Harmony system message's text for a reasoning effort and a date (YYYY-MM-DD)."""
    return (f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {date}\n\n"
            f"Reasoning: {effort}\n\n{CHANNELS_LINE}")


def today() -> str:
    """Today's date in UTC, as Harmony writes it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")


@lru_cache(maxsize=512)
def prefix_tokens(policy: str, effort: str, date: str) -> int:
    """Tokens of the system and developer messages and the user message's header.

    No developer message is rendered when the request has no system message.
    """
    tokens = _SPECIALS_PER_MESSAGE + o200k("system") + o200k(system_content(effort, date))
    if policy:
        tokens += _SPECIALS_PER_MESSAGE + o200k("developer") + o200k(f"# Instructions\n\n{policy}")
    return tokens + _SPECIALS_PER_MESSAGE + o200k("user")


def prompt_tokens(policy: str, user: str, effort: str = "medium", date: str | None = None) -> int:
    """Prompt tokens of a (system, user) request rendered with Harmony.

    >>> prompt_tokens("", "hi", "low", "2025-06-28") == prefix_tokens("", "low", "2025-06-28") + 1 + 2
    True
    """
    assistant_start = 1 + o200k_cached("assistant")
    return prefix_tokens(policy, effort, date or today()) + o200k(user) + assistant_start
