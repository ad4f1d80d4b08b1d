"""The simulator's own rate limits: token buckets for requests and tokens per minute."""

from __future__ import annotations

import math
import time
from email.utils import formatdate


class Bucket:
    """A token bucket holding one second's worth (at least 1), refilled continuously."""

    __slots__ = ("capacity", "level", "per_minute", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` fits; a cost above capacity needs a full bucket (then goes negative)."""
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        """``x-ratelimit-*-{kind}``: the per-minute limit, what is left now, time until full."""
        reset = max(0.0, (self.capacity - self.level) / self.rate)
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.per_minute)),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.level))),
            f"x-ratelimit-reset-{kind}": duration(reset),
        }


def duration(seconds: float) -> str:
    """OpenAI's reset style.

    >>> duration(0.25), duration(1.0), duration(1.5)
    ('250ms', '1s', '1.5s')
    """
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _sync(bucket: Bucket | None, per_minute: float | None, now: float) -> Bucket | None:
    """The bucket for the current limit: refilled, rebuilt if the limit changed, None if unlimited."""
    if per_minute is None:
        return None
    if bucket is None or bucket.per_minute != per_minute:
        return Bucket(per_minute, now)
    bucket.refill(now)
    return bucket


class RateLimits:
    """Requests-per-minute and tokens-per-minute buckets; limits are read on every call."""

    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None

    def _refresh(self, rpm: float | None, tpm: float | None) -> None:
        now = time.monotonic()
        self.requests = _sync(self.requests, rpm, now)
        self.tokens = _sync(self.tokens, tpm, now)

    def take(self, rpm: float | None, tpm: float | None, tokens: int) -> float:
        """0 when one request of ``tokens`` may pass (and is counted), else seconds until it would."""
        if rpm is None and tpm is None:
            self.requests = self.tokens = None
            return 0.0
        self._refresh(rpm, tpm)
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait_for(1)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_for(tokens))
        if wait == 0.0:
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens
        return wait

    def headers(self, rpm: float | None, tpm: float | None) -> dict[str, str]:
        """The x-ratelimit-* headers for the limits in force."""
        self._refresh(rpm, tpm)
        headers: dict[str, str] = {}
        if self.requests is not None:
            headers.update(self.requests.headers("requests"))
        if self.tokens is not None:
            headers.update(self.tokens.headers("tokens"))
        return headers


def retry_after_headers(style: str, wait: float) -> dict[str, str]:
    """How a 429 says when to come back: "seconds", "http-date", "ms" (retry-after-ms) or "none"."""
    if style == "seconds":
        return {"Retry-After": str(max(1, math.ceil(wait)))}
    if style == "http-date":
        return {"Retry-After": formatdate(time.time() + max(1, math.ceil(wait)), usegmt=True)}
    if style == "ms":
        return {"retry-after-ms": str(max(1, math.ceil(wait * 1000)))}
    return {}
