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

An answer whose fields are of the wrong type or whose usage is implausible is a transient failure:
it is never cached, so a host's glitch cannot poison the store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.ratecontrol.decide import Attempt, AttemptKind
from pipeline.ratecontrol.headers import quota_headers, quota_spent, retry_after_seconds
from pipeline.records import Usage

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
    if not isinstance(data, dict):
        raise _Unusable(f"not a chat completion: {_snippet(body)}")
    error = data.get("error")
    choices = data.get("choices")
    if error and not choices:  # OpenRouter: an error after the stream started, as HTTP 200
        raise _Unusable(f"upstream error: {_error_text(data, body)}")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Unusable(f"not a chat completion: {_snippet(body)}")
    choice = choices[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    model = data.get("model")
    if type(message) is not dict or not (finish is None or type(finish) is str) \
            or not (model is None or type(model) is str):
        raise _Unusable("implausible answer: fields of the wrong type")
    if finish == "error":  # OpenRouter: the upstream provider failed mid-answer
        detail = choice.get("error")
        text = detail.get("message") if isinstance(detail, dict) else detail
        raise _Unusable(f"upstream error: {_one_line(text or 'finish_reason error')}")
    reasoning = message.get("reasoning")
    if reasoning is None:
        reasoning = message.get("reasoning_content")
    provider = data.get("provider")
    content = message.get("content")
    return Completion(
        content=content if type(content) is str else _content(content),
        reasoning=reasoning if isinstance(reasoning, str) else None,
        finish_reason=finish,
        usage=_usage(data.get("usage")),
        model=model,
        provider=provider if isinstance(provider, str) else None,
    )


def _judge_completion(completion: Completion) -> Reading:
    if completion.finish_reason == "content_filter" and not (completion.content or "").strip():
        return Reading(Attempt(AttemptKind.FILTERED, "the host's content filter withheld the answer"),
                       completion)
    return Reading(_ANSWERED, completion)


def _content(raw: Any) -> str | None:
    """A string, or the text parts of a list of content parts joined; else _Unusable."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        texts = []
        for part in raw:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "output_text") \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    raise _Unusable(f"implausible answer: content is a {type(raw).__name__}")


def _usage(raw: Any) -> Usage | None:
    """The usage block; None when absent (the caller estimates); _Unusable when implausible."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _Unusable("implausible answer: usage is not an object")
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    if not isinstance(prompt_details, dict) or not isinstance(completion_details, dict):
        raise _Unusable("implausible answer: usage details are not objects")
    prompt, cached = _count(raw.get("prompt_tokens")), _count(prompt_details.get("cached_tokens"))
    completion, reasoning = _count(raw.get("completion_tokens")), _count(completion_details.get("reasoning_tokens"))
    if cached > prompt or reasoning > completion:
        raise _Unusable("implausible answer: usage parts exceed their totals")
    cost = raw.get("cost")
    server_cost = None
    if cost is not None and isinstance(cost, int | float) and not isinstance(cost, bool):
        if not math.isfinite(cost) or cost < 0:
            raise _Unusable(f"implausible answer: cost {cost!r}")
        server_cost = float(cost)
    return Usage(prompt, cached, completion, reasoning, False, server_cost)


def _count(value: Any) -> int:
    if type(value) is int and 0 <= value <= MAX_PLAUSIBLE_TOKENS:  # the common case
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Unusable(f"implausible answer: token count {value!r}")
    if not 0 <= value <= MAX_PLAUSIBLE_TOKENS or value != int(value):
        raise _Unusable(f"implausible answer: token count {value!r}")
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
