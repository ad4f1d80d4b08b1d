"""What a host's reply means: a chat completion, or a typed reason why not (pure, no IO).

Hosts disagree on how they say "no". `read_reply` knows each documented shape and turns any reply
into an `Attempt` (for the retry decision) plus, for a billed answer, its `Completion`:

- OpenAI / vLLM / Groq / OpenRouter errors: ``{"error": {"message": ...}}`` or vLLM's
  ``{"object": "error", "message": ...}``, with the HTTP status telling the kind;
- ModelsLab: ``{"status": "error", "message": ...}`` with *any* HTTP status (often 200), a full
  queue as 429 with ``retry_after`` in the body, and ``{"status": "processing", "fetch_result": URL,
  "eta": S}`` for an answer to fetch later;
- OpenRouter: errors after generation started come as HTTP 200 with an ``error`` object, or as a
  choice with ``finish_reason: "error"``; ``content_filter`` with empty content is withheld output;
- ``message.content`` may be a string or a list of parts (``[{"type": "text", "text": ...}]``).

Every answer the host produced is billed, so it is read as one whatever is wrong with it: a field of
the wrong type (model, finish_reason) or an impossible usage detail (cached or reasoning tokens) is
dropped and noted, implausible totals are replaced by our estimate (marked as one), and the verdict
stands. An answer with no text to read (content a number or an object) is a billed transient failure:
retried, counted, never cached. Only bodies that are no answer at all are unbilled failures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.core.records import Usage
from pipeline.ratecontrol.decide import Attempt, AttemptKind
from pipeline.ratecontrol.headers import quota_headers, quota_spent, retry_after_seconds

__all__ = ["Completion", "Reading", "decode_completion", "describe_error", "read_reply"]

#: no request of ours has this many tokens: a usage above it is a host's bug, not a bill.
MAX_PLAUSIBLE_TOKENS = 4_000_000
_REFUSAL_STATUSES = frozenset({429, 503})
_TRANSIENT_STATUSES = frozenset({408, 409, 425})
_FATAL_STATUSES = frozenset({401, 403, 404})
# ModelsLab answers every error as {"status": "error", "message": ...}; its docs name the causes
# only in words, so the words decide: a bad key, no credit or an unknown model stops the run.
_FATAL_WORDS = (
    ("key", ("invalid", "not valid", "wrong", "missing", "expired", "unauthori", "not found")),
    ("credit", ("insufficient", "not enough", "no ", "out of", "exhausted", "low")),
    ("balance", ("insufficient", "not enough", "low", "zero")),
    ("subscription", ("expired", "inactive", "no ", "required", "not active")),
    ("model", ("not found", "invalid", "does not exist", "unknown", "not available", "not supported")),
)
_BUSY_WORDS = ("queue", "rate limit", "too many", "busy", "try again", "retry", "overloaded", "capacity")


@dataclass(slots=True)
class Completion:
    """The parts of a chat completion the pipeline uses."""

    content: str | None
    reasoning: str | None
    finish_reason: str | None
    usage: Usage | None
    model: str | None
    #: the upstream provider that served it (OpenRouter)
    provider: str | None = None
    #: details that could not be used as sent (dropped, counted as 0, or estimated), for the label's error
    odd: str | None = None
    #: billed, but there is no text to read a verdict from (content a number or an object)
    unusable: bool = False


@dataclass(slots=True)
class Reading:
    attempt: Attempt
    #: set for billed answers (a verdict, junk, a cut-off or filtered answer)
    completion: Completion | None = None
    #: for a reply that is not a plain answer: its rate-limit headers as the rules read them (those
    #: its body repeats included, see `quota_headers`); None: the reply's own headers
    headers: Mapping[str, str] | None = None


_ANSWERED = Attempt(AttemptKind.ANSWER)  # frozen: one shared instance for every answer


class _Unusable(Exception):
    """A 200 whose body is not a usable chat completion."""


def read_reply(status: int, headers: Mapping[str, str], body: bytes, *, now: float) -> Reading:
    """Classify one HTTP reply. ``now`` (epoch seconds) reads an HTTP-date Retry-After.

    The verdict itself is parsed by the caller: an ANSWER here means "a completion arrived".
    """
    data = _json(body)
    ok = 200 <= status < 300
    if ok and isinstance(data, dict) and "choices" in data and "status" not in data:  # the common case
        try:
            completion = _completion(data, body)
        except _Unusable as exc:
            return Reading(Attempt(AttemptKind.FAILED, str(exc)))
        return _judge_completion(completion)
    limits = quota_headers(headers, now=now, body_headers=_body_headers(data))
    reading = _read_other(status, limits, data, body, now=now)
    reading.headers = limits
    return reading


def _read_other(status: int, headers: dict[str, str], data: Any, body: bytes, *, now: float) -> Reading:
    """`read_reply` for anything but a plain answer; ``headers`` as `quota_headers` gives them."""
    ok = 200 <= status < 300
    retry_after = retry_after_seconds(headers, now=now)
    if isinstance(data, dict) and (hosted := _host_status(data, status, retry_after)) is not None:
        return Reading(hosted)
    if ok:
        try:
            completion = _completion(data, body)
        except _Unusable as exc:
            return Reading(Attempt(AttemptKind.FAILED, str(exc)))
        return _judge_completion(completion)
    message = f"HTTP {status}: {_error_text(data, body)}"
    if status in _REFUSAL_STATUSES:
        spent = quota_spent(headers, lasting=retry_after or 0.0)
        return Reading(Attempt(AttemptKind.REFUSED, message, retry_after, quota_spent=spent))
    if status == 402:  # OpenRouter: with Retry-After an in-flight budget, without it no credit
        kind = AttemptKind.REFUSED if retry_after is not None else AttemptKind.FATAL
        return Reading(Attempt(kind, message, retry_after))
    if status in _FATAL_STATUSES or not 400 <= status < 600:  # a redirect or odd code: a wrong URL
        return Reading(Attempt(AttemptKind.FATAL, message))
    if status == 408:
        return Reading(Attempt(AttemptKind.TIMEOUT, message, retry_after))
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return Reading(Attempt(AttemptKind.FAILED, message, retry_after))
    return Reading(Attempt(AttemptKind.ROW_ERROR, message))


def _body_headers(data: Any) -> Any:
    """Headers an error body repeats: OpenRouter's ``{"error": {"metadata": {"headers": {...}}}}``."""
    if isinstance(data, dict) and isinstance(error := data.get("error"), dict):
        metadata = error.get("metadata")
        if isinstance(metadata, dict):
            return metadata.get("headers")
    return None


def describe_error(status: int, body: bytes) -> str:
    """One line for a non-200 answer: its message in any known error shape, else a snippet."""
    return f"HTTP {status}: {_error_text(_json(body), body)}"


def decode_completion(body: bytes) -> Completion:
    """The completion in a 200 body; raises ValueError when there is none."""
    try:
        return _completion(_json(body), body)
    except _Unusable as exc:
        raise ValueError(str(exc)) from None


def _host_status(data: dict, status: int, retry_after: float | None) -> Attempt | None:
    """ModelsLab's ``status`` field, whatever the HTTP status; None for other bodies."""
    state = data.get("status")
    if state == "processing":
        url = data.get("fetch_result") or data.get("future_links")
        url = url[0] if isinstance(url, list) and url else url
        eta = _number(data.get("eta"))
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return Attempt(AttemptKind.QUEUED, "answer queued by the host", eta, url)
        return Attempt(AttemptKind.FAILED, "host queued the answer without a URL to fetch it", eta)
    if state not in ("error", "failed"):
        return None
    message = _one_line(data.get("message") or data.get("messege") or data.get("error") or "unknown error")
    body_wait = _number(data.get("retry_after"))
    wait = body_wait if body_wait is not None else retry_after
    text = f"host error (HTTP {status}): {message}"
    lowered = message.lower()
    if status == 429 or body_wait is not None or any(w in lowered for w in _BUSY_WORDS):
        return Attempt(AttemptKind.REFUSED, text, wait)
    if status in (401, 402, 403, 404) or _fatal_words(lowered):
        return Attempt(AttemptKind.FATAL, text)
    return Attempt(AttemptKind.FAILED, text, wait)


def _fatal_words(message: str) -> bool:
    return any(noun in message and any(w in message for w in words) for noun, words in _FATAL_WORDS)


def _completion(data: Any, body: bytes) -> Completion:
    """The completion in a body; _Unusable when the body is no answer at all (nothing was billed)."""
    if not isinstance(data, dict):
        raise _Unusable(f"not a chat completion: {_snippet(body)}")
    error = data.get("error")
    choices = data.get("choices")
    if error and not choices:  # OpenRouter: an error after the stream started, as HTTP 200
        raise _Unusable(f"upstream error: {_error_text(data, body)}")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Unusable(f"not a chat completion: {_snippet(body)}")
    choice = choices[0]
    if choice.get("finish_reason") == "error":  # OpenRouter: the upstream provider failed mid-answer
        detail = choice.get("error")
        text = detail.get("message") if isinstance(detail, dict) else detail
        raise _Unusable(f"upstream error: {_one_line(text or 'finish_reason error')}")
    # from here on the host produced an answer and bills it, whatever is wrong with its details
    odd: list[str] = []
    finish = _text_field(choice.get("finish_reason"), "finish_reason", odd)
    model = _text_field(data.get("model"), "model", odd)
    message = choice.get("message") or {}
    unusable = type(message) is not dict
    if unusable:
        odd.append(f"message is a {type(message).__name__}")
        message = {}
    reasoning = message.get("reasoning")
    if reasoning is None:
        reasoning = message.get("reasoning_content")
    provider = data.get("provider")
    content = message.get("content")
    if not (content is None or isinstance(content, str | list)):
        odd.append(f"content is a {type(content).__name__}")
        unusable, content = True, None
    return Completion(
        content=content if type(content) is str else _content(content),
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=finish,
        usage=_usage(data.get("usage"), odd),
        model=model,
        provider=provider if isinstance(provider, str) else None,
        odd="; ".join(odd) or None,
        unusable=unusable,
    )


def _text_field(value: Any, name: str, odd: list[str]) -> str | None:
    """A string field of the answer; anything else is dropped and noted."""
    if value is None or type(value) is str:
        return value
    odd.append(f"{name} {_one_line(repr(value))[:40]} dropped")
    return None


def _judge_completion(completion: Completion) -> Reading:
    if completion.unusable:  # billed, but no text to read a verdict from: retried like a broken body
        return Reading(Attempt(AttemptKind.FAILED, f"implausible answer: {completion.odd}"), completion)
    if completion.finish_reason == "content_filter" and not (completion.content or "").strip():
        return Reading(Attempt(AttemptKind.FILTERED, "the host's content filter withheld the answer"),
                       completion)
    if completion.odd:  # a usable verdict: the odd detail was dropped, and the label says so
        return Reading(Attempt(AttemptKind.ANSWER, f"odd details from the host: {completion.odd}"), completion)
    return Reading(_ANSWERED, completion)


def _content(raw: list | None) -> str | None:
    """The text parts of a list of content parts, joined."""
    if raw is None:
        return None
    texts = []
    for part in raw:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("text", "output_text") \
                and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts)


def _usage(raw: Any, odd: list[str]) -> Usage | None:
    """The usage block; None when absent or its totals are implausible (the caller estimates, and the
    usage says so). An impossible detail (cached or reasoning tokens) is counted as 0 and noted."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        odd.append("usage is not an object: estimated")
        return None
    try:
        prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    except _Unusable as exc:
        odd.append(f"{exc}: usage estimated")
        return None
    prompt_details = _details(raw, "prompt_tokens_details", odd)
    completion_details = _details(raw, "completion_tokens_details", odd)
    cached = _detail(prompt_details.get("cached_tokens"), prompt, "cached_tokens", odd)
    reasoning = _detail(completion_details.get("reasoning_tokens"), completion, "reasoning_tokens", odd)
    cost = raw.get("cost")
    server_cost = None
    if cost is not None and isinstance(cost, int | float) and not isinstance(cost, bool):
        if math.isfinite(cost) and cost >= 0:
            server_cost = float(cost)
        else:
            odd.append(f"cost {cost!r} dropped")
    return Usage(prompt, cached, completion, reasoning, False, server_cost)


def _details(raw: dict, name: str, odd: list[str]) -> dict:
    details = raw.get(name) or {}
    if isinstance(details, dict):
        return details
    odd.append(f"{name} not an object, dropped")
    return {}


def _detail(value: Any, total: int, name: str, odd: list[str]) -> int:
    """A part of a usage total (cached, reasoning tokens): 0, noted, when it cannot be a part of it."""
    try:
        count = _count(value)
    except _Unusable:
        count = total + 1
    if count <= total:
        return count
    odd.append(f"{name} {_one_line(repr(value))[:40]} dropped")
    return 0


def _count(value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_PLAUSIBLE_TOKENS:  # the common case
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Unusable(f"implausible token count {_one_line(repr(value))[:40]}")
    if not 0 <= value <= MAX_PLAUSIBLE_TOKENS or value != int(value):
        raise _Unusable(f"implausible token count {value!r}")
    return int(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _error_text(data: Any, body: bytes) -> str:
    """The message of an error body (OpenAI, vLLM, ModelsLab shapes), else a snippet of it."""
    if isinstance(data, dict):
        detail = data.get("error")
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        if detail is None and (data.get("object") == "error" or "message" in data):
            detail = data.get("message")
        if detail is not None:
            return _one_line(detail)
    return _snippet(body)


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())[:200]


def _snippet(body: bytes) -> str:
    text = " ".join(body[:120].decode("utf-8", "replace").split())
    return repr(text) if text else "empty body"
