"""Token counts with the o200k vocabulary that gpt-oss uses (shipped in the bpe-openai wheel).

Counts are estimates for planning (context checks, rate-limit reservations, budgets): the bill
always uses the server's `usage`.
"""

from __future__ import annotations

from functools import lru_cache

#: tokens the chat template adds around each message (Harmony headers), a small overestimate.
MESSAGE_OVERHEAD = 8


@lru_cache(maxsize=1)
def _encoding():
    import bpe_openai

    return bpe_openai.get_encoding("o200k_base")


def count_tokens(text: str) -> int:
    """Exact o200k token count of `text` (special-token look-alikes count as plain text)."""
    return len(_encoding().encode_ordinary(text))


def quick_estimate(text: str) -> int:
    """A cheap upper-leaning estimate (about 3 characters a token) for hot-path reservations."""
    return len(text) // 3 + 1


def fits(text: str, budget: int) -> bool:
    """Whether `text` has at most `budget` tokens; tokenises only texts that might not fit.

    A token is never shorter than one UTF-8 byte, so a text of at most `budget` characters
    that is ASCII always fits.
    """
    if len(text) <= budget and (len(text) * 4 <= budget or text.isascii()):
        return True
    return count_tokens(text) <= budget


def truncate(text: str, budget: int) -> str:
    """The longest prefix of `text` that fits in `budget` tokens (cut on a token boundary)."""
    encoding = _encoding()
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= budget:
        return text
    # a cut may fall inside a character that the vocabulary splits into byte tokens: drop it
    return encoding.decode_bytes(tokens[:budget]).decode("utf-8", "ignore")
