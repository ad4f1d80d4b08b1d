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


@lru_cache(maxsize=1)
def _counter():
    # the Rust tokenizer's own counter: no token list is built (several times faster)
    from bpe_openai import _bindings

    return _bindings.tokenizer_for_encoding("o200k_base").count


def count_tokens(text: str) -> int:
    """o200k token count of `text` (special-token look-alikes count as plain text).

    Exact up to 200,000 characters; longer texts are counted in pieces cut at whitespace, which
    may differ from one whole encoding by a token per piece.
    """
    if len(text) > _CHUNK_CHARS:
        return sum(count_tokens(piece) for piece in _pieces(text))
    try:
        return _counter()(text)
    except UnicodeEncodeError:  # lone surrogates: counted as the tokenizer would encode them
        return len(_encoding().encode_ordinary(text))


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


# -- the prompt as gpt-oss sees it (Harmony) --------------------------------------------------
# The server renders a chat request with the Harmony format (openai/harmony, docs/format.md and
# src/encoding.rs): a system message it writes itself, the request's system message as the
# developer message, the user message, then the start of the assistant's turn:
#
#   <|start|>system<|message|>{identity}\nKnowledge cutoff: 2024-06\nCurrent date: {date}\n\n
#   Reasoning: {effort}\n\n# Valid channels: analysis, commentary, final. Channel must be included
#   for every message.<|end|><|start|>developer<|message|># Instructions\n\n{policy}<|end|>
#   <|start|>user<|message|>{content}<|end|><|start|>assistant
#
# Special tokens count 1 each, role names are ordinary text (1 token each), and every message's
# content is tokenised on its own (the special tokens around it are hard boundaries), so the
# count is a sum of parts.

#: the model identity and knowledge cutoff Harmony's default system message states.
MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
_CHANNELS = "# Valid channels: analysis, commentary, final. Channel must be included for every message."
#: <|start|> role <|message|> ... <|end|>: the tokens every message adds around its content.
_MESSAGE_FRAME = 4
#: <|start|>assistant: the open assistant turn the model completes.
_ASSISTANT_START = 2


def _today() -> str:
    import time

    return time.strftime("%Y-%m-%d", time.gmtime())


def harmony_system_message(effort: str, date: str | None) -> str:
    """The text of the system message the server writes (no date line when `date` is None)."""
    top = [MODEL_IDENTITY, f"Knowledge cutoff: {KNOWLEDGE_CUTOFF}"]
    if date is not None:
        top.append(f"Current date: {date}")
    return "\n".join(top) + f"\n\nReasoning: {effort}\n\n{_CHANNELS}"


def policy_tokens(system: str) -> int:
    """o200k tokens of a policy as the developer message's content (``# Instructions`` + policy).

    Count it once per policy and pass it to `harmony_prompt_tokens` for every row.
    """
    return count_tokens(f"# Instructions\n\n{system}")


@lru_cache(maxsize=16)
def harmony_overhead(effort: str, date: str | None) -> int:
    """Prompt tokens of a request besides the policy's and the content's own tokens."""
    system = _MESSAGE_FRAME + count_tokens(harmony_system_message(effort, date))
    return system + 2 * _MESSAGE_FRAME + _ASSISTANT_START


def harmony_prompt_tokens(system_tokens: int, user_text: str | int, effort: str, *, date: str | None = "today") -> int:
    """Exact prompt tokens gpt-oss is billed for one (policy, content) request.

    `system_tokens` comes from `policy_tokens(system message)`; `user_text` is the content as
    sent, or its o200k token count. `date` is the server's current date (``YYYY-MM-DD``, today by
    default; None for a server that states none).

    >>> harmony_prompt_tokens(policy_tokens("Answer the user's questions like a robot."),
    ...                       "What is the capital of the largest country in the world?", "low", date=None)
    83
    """
    user = user_text if isinstance(user_text, int) else count_tokens(user_text)
    return harmony_overhead(effort, _today() if date == "today" else date) + system_tokens + user
