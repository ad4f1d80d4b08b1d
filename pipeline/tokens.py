"""Token counts with the o200k vocabulary that gpt-oss uses (shipped in the bpe-openai wheel).

Counts are estimates for planning (context checks, rate-limit reservations, budgets): the bill
always uses the server's `usage`.
"""

from __future__ import annotations

from functools import lru_cache

#: tokens the chat template adds around each message (Harmony headers), a small overestimate.
MESSAGE_OVERHEAD = 8
#: the longest o200k token in bytes: a text of more than budget x this many bytes cannot fit.
_MAX_TOKEN_BYTES = 128
#: the tokenizer refuses inputs of a few MB; longer texts are counted piece by piece.
_CHUNK_CHARS = 200_000


@lru_cache(maxsize=1)
def _encoding():
    import bpe_openai

    return bpe_openai.get_encoding("o200k_base")


def count_tokens(text: str) -> int:
    """o200k token count of `text` (special-token look-alikes count as plain text).

    Exact up to 200,000 characters; longer texts are counted in pieces cut at whitespace, which
    may differ from one whole encoding by a token per piece.
    """
    encode = _encoding().encode_ordinary
    if len(text) <= _CHUNK_CHARS:
        return len(encode(text))
    return sum(len(encode(piece)) for piece in _pieces(text))


def prompt_estimate(system_tokens: int, user: str) -> int:
    """Prompt tokens of one request, cheaply: the policy's counted tokens plus the content's estimate.

    The one place the hot path estimates a prompt (rate-limit reservations, budget, missing usage
    uses `count_tokens` instead). ``system_tokens`` already includes its message overhead.
    """
    return system_tokens + quick_estimate(user) + MESSAGE_OVERHEAD


def _pieces(text: str):
    start = 0
    while start < len(text):
        end = min(len(text), start + _CHUNK_CHARS)
        if end < len(text):
            cut = text.rfind(" ", start + _CHUNK_CHARS // 2, end)
            end = cut if cut > start else end
        yield text[start:end]
        start = end


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
    if len(text) > budget * _MAX_TOKEN_BYTES:  # more characters than the budget could ever hold
        return False
    return count_tokens(text) <= budget


def truncate(text: str, budget: int) -> str:
    """The longest prefix of `text` that fits in `budget` tokens (cut on a token boundary)."""
    encoding = _encoding()
    text = text[: budget * _MAX_TOKEN_BYTES]  # the rest could never fit
    tokens = [t for piece in _pieces(text) for t in encoding.encode_ordinary(piece)]
    if len(tokens) <= budget:
        return text
    # a cut may fall inside a character that the vocabulary splits into byte tokens: drop it
    return encoding.decode_bytes(tokens[:budget]).decode("utf-8", "ignore")
