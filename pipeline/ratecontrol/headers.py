"""What a response's headers say about waiting: Retry-After, retry-after-ms, x-ratelimit-*.

Nothing here sleeps or reads a clock: the caller passes ``now`` (epoch seconds) and a random number,
so every rule is a plain function with exact tests.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "RateLimitSnapshot",
    "parse_duration",
    "quota_headers",
    "quota_spent",
    "read_rate_limit_headers",
    "retry_after_seconds",
]

_RATELIMIT_PREFIX = "x-ratelimit-"
# Go-style durations as OpenAI and Groq send them: "1s", "250ms", "6m0s", "1m30.5s", "2h".
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:h|ms|us|µs|μs|ns|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_DIGITS = frozenset("0123456789.")
#: an unsuffixed X-RateLimit-Reset at or above these is a Unix time, not a duration
_EPOCH_MS = 1e12
_EPOCH_S = 1e9
_UNSUFFIXED = ("limit", "remaining", "reset")
#: the headers a body's repeated headers may add (a body says anything: only what the rules read)
_RULE_HEADERS = (_RATELIMIT_PREFIX, "retry-after")
#: entries of a body's repeated headers looked at (OpenRouter sends three; a host could send millions)
_BODY_HEADERS_READ = 32
#: a spent quota's reset may fall this much short of the Retry-After it explains (whole seconds, rounded up)
_ROUNDING_S = 1.0
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}



def parse_duration(value: str) -> float | None:
    """Seconds in a rate-limit reset value: ``"6m0s"``, ``"250ms"``, ``"1m30.5s"``, ``"2h"`` or ``"12.5"``.

    None for anything else. A leading minus sign (a reset already passed) gives 0.0.

    >>> parse_duration("1m30.5s")
    90.5
    """
    text = value.strip().lower()
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    if not text:
        return None
    if text[-1] in _DIGITS:  # a bare number of seconds
        try:
            seconds = float(text)
        except ValueError:
            return None
    elif _DURATION.fullmatch(text) is None:
        return None
    else:
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if not math.isfinite(seconds):
        return None
    return 0.0 if negative else max(seconds, 0.0)


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """One lower-cased copy, so a plain dict in any casing and aiohttp's CIMultiDict read alike."""
    return {key.lower(): value for key, value in headers.items()}


def _seconds(value: str | None, scale: float = 1.0) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value) * scale
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def retry_after_seconds(headers: Mapping[str, str], *, now: float) -> float | None:
    """How long the server asks us to wait, in seconds, or None when it does not say.

    Looked up in order of precision: ``retry-after-ms``; ``Retry-After`` as delta seconds or as an
    HTTP date (relative to ``now``, epoch seconds); else the largest ``x-ratelimit-reset-*`` whose
    matching ``x-ratelimit-remaining-*`` is 0 (a reset of a quota not yet spent is no reason to
    wait). A header with garbage is skipped; a time in the past gives 0.0.
    """
    h = _lower_keys(headers)
    ms = _seconds(h.get("retry-after-ms"), 1e-3)
    if ms is not None:
        return ms
    after = h.get("retry-after")
    if after is not None:
        seconds = _seconds(after)
        if seconds is None:
            seconds = _http_date_delta(after, now)
        if seconds is not None:
            return seconds
    waits = _spent_resets(h)
    return max(waits) if waits else None


def _spent_resets(h: Mapping[str, str]) -> list[float]:
    """Seconds until each quota that lower-cased ``h`` reports spent (remaining 0) resets, where readable."""
    waits = []
    for kind in ("requests", "tokens"):
        if _seconds(h.get(f"x-ratelimit-remaining-{kind}")) == 0.0:
            reset = h.get(f"x-ratelimit-reset-{kind}")
            seconds = None if reset is None else parse_duration(reset)
            if seconds is not None:
                waits.append(seconds)
    return waits


def quota_headers(headers: Mapping[str, str], *, now: float, body_headers: Any = None) -> dict[str, str]:
    """A refused reply's headers in the form the rate rules read, lower-cased.

    - ``body_headers``: headers the body repeats (OpenRouter's ``error.metadata.headers``), added
      where the reply itself lacks them: only ``x-ratelimit-*`` and ``retry-after*`` among its first
      `_BODY_HEADERS_READ` entries, with string or number values.
    - Unsuffixed ``x-ratelimit-limit|remaining|reset`` (OpenRouter's request caps, per minute or
      per day) become the request quota, ``x-ratelimit-*-requests``, unless those are present.
    - An unsuffixed reset is a Unix time in milliseconds (OpenRouter) or seconds when it is that
      large, else a duration; a Unix time becomes the seconds from ``now`` (epoch seconds).

    >>> h = quota_headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000060000"}, now=1_700_000_000)
    >>> h["x-ratelimit-remaining-requests"], h["x-ratelimit-reset-requests"]
    ('0', '60.000')
    """
    h = _lower_keys(headers)
    if isinstance(body_headers, Mapping):
        for key, value in itertools.islice(body_headers.items(), _BODY_HEADERS_READ):
            if isinstance(key, str) and key.lower().startswith(_RULE_HEADERS) \
                    and isinstance(value, str | int | float) and not isinstance(value, bool):
                h.setdefault(key.lower(), str(value))
    for name in _UNSUFFIXED:
        value = h.get(f"{_RATELIMIT_PREFIX}{name}")
        if value is not None and f"{_RATELIMIT_PREFIX}{name}-requests" not in h:
            if name == "reset":
                value = _reset_from(value, now)
                if value is None:
                    continue
            h[f"{_RATELIMIT_PREFIX}{name}-requests"] = value
    return h


def _reset_from(value: str, now: float) -> str | None:
    """An unsuffixed reset as seconds from ``now``: a Unix time (ms or s) or a duration."""
    number = _seconds(value)
    if number is not None and number >= _EPOCH_S:
        when = number / 1000.0 if number >= _EPOCH_MS else number
        return f"{max(when - now, 0.0):.3f}"
    return value if parse_duration(value) is not None else None


def quota_spent(headers: Mapping[str, str], *, lasting: float = 0.0) -> bool:
    """Whether lower-cased ``headers`` (see `quota_headers`) report a quota spent until a known reset
    at least ``lasting`` seconds away (a second of rounding allowed): a spent quota that explains a
    wait that long, not a token quota back in 5 s next to a Retry-After of an hour."""
    return any(seconds >= lasting - _ROUNDING_S for seconds in _spent_resets(headers))


def _http_date_delta(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC in RFC 5322
        when = when.replace(tzinfo=UTC)
    try:
        return max(when.timestamp() - now, 0.0)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(slots=True)
class RateLimitSnapshot:
    """What one response's ``x-ratelimit-*`` headers said; None where a header was absent or unreadable.

    Windows differ by host (OpenAI: requests per minute; Groq: requests per *day*, tokens per
    minute), so only ``remaining`` and ``reset`` are safe to act on; ``limit`` gives their scale.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    def capped(self, max_wait: float) -> RateLimitSnapshot:
        """The same snapshot with each reset cut to ``max_wait`` seconds (a garbage reset is no reason to stall)."""
        return replace(self, reset_requests_s=_at_most(self.reset_requests_s, max_wait),
                       reset_tokens_s=_at_most(self.reset_tokens_s, max_wait))


def _at_most(value: float | None, cap: float) -> float | None:
    return None if value is None else min(value, cap)


def _count(value: str | None) -> int | None:
    seconds = _seconds(value)
    return None if seconds is None else int(seconds)


def read_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitSnapshot | None:
    """The rate-limit headers of a response, or None when it has no usable ``x-ratelimit-*`` header.

    Called for every response, so a response without such headers costs one scan of its keys.
    """
    h = None
    for key in headers:
        if key.lower().startswith(_RATELIMIT_PREFIX):
            h = _lower_keys(headers)
            break
    if h is None:
        return None
    reset_requests = h.get("x-ratelimit-reset-requests")
    reset_tokens = h.get("x-ratelimit-reset-tokens")
    snapshot = RateLimitSnapshot(
        limit_requests=_count(h.get("x-ratelimit-limit-requests")),
        remaining_requests=_count(h.get("x-ratelimit-remaining-requests")),
        reset_requests_s=None if reset_requests is None else parse_duration(reset_requests),
        limit_tokens=_count(h.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_count(h.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=None if reset_tokens is None else parse_duration(reset_tokens),
    )
    if snapshot == _EMPTY:
        return None
    return snapshot


_EMPTY = RateLimitSnapshot()
