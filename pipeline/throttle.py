"""The shared throttle every worker passes before a call: the async edge of `pipeline.limiter`.

It combines the configured RPM/TPM buckets, pauses ordered by the server (Retry-After,
x-ratelimit-*), an adaptive rate for hidden limits and a circuit breaker. With no limit configured
and nothing heard from the server, `acquire` returns at once: the fast path costs one clock read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from pipeline.breaker import CircuitBreaker
from pipeline.limiter import AdaptiveRate, RateLimits, TokenBucket
from pipeline.retry import read_rate_limit_headers

#: fraction of a configured RPM/TPM a run aims for (`moderate run` passes it as `margin`).
LIMIT_MARGIN = 0.985


class RateMeter:
    """Successes per second over the last two seconds (quarter-second buckets)."""

    BUCKETS = 8
    WIDTH = 0.25

    span = BUCKETS * WIDTH

    def __init__(self) -> None:
        self._counts = [0] * self.BUCKETS
        self._slot = 0
        self._first: float | None = None

    def tick(self, now: float) -> None:
        slot = int(now / self.WIDTH)
        if slot != self._slot:
            self._advance(slot)
        if self._first is None:
            self._first = now
        self._counts[slot % self.BUCKETS] += 1

    def count(self, now: float) -> int:
        """Events in the last two seconds."""
        slot = int(now / self.WIDTH)
        if slot != self._slot:
            self._advance(slot)
        return sum(self._counts)

    def rate(self, now: float) -> float:
        """Events per second; over the time since the first event while that is shorter than
        the window (so the first seconds of a run are not under-estimated)."""
        slot = int(now / self.WIDTH)
        if slot != self._slot:
            self._advance(slot)
        first = self._first
        if first is None:
            return 0.0
        span = min(self.span, max(now - first, self.WIDTH))
        return sum(self._counts) / span

    def _advance(self, slot: int) -> None:
        for s in range(max(self._slot + 1, slot - self.BUCKETS + 1), slot + 1):
            self._counts[s % self.BUCKETS] = 0
        self._slot = slot


class Throttle:
    def __init__(self, *, rpm: float | None, tpm: float | None, adaptive: bool = True,
                 clock: Callable[[], float] = time.monotonic, margin: float = 1.0) -> None:
        self._clock = clock
        now = clock()
        # Aim a little under the configured limits: a server counting the same limit with its own
        # clock then never sees a request early, so jitter costs no 429s.
        self.limits = RateLimits(rpm=rpm and rpm * margin, tpm=tpm and tpm * margin, now=now)
        self._margin = margin
        self.adaptive = AdaptiveRate() if adaptive else None
        self.breaker = CircuitBreaker()
        self.meter = RateMeter()
        self.stress = RateMeter()
        self.sent = RateMeter()
        self.rejections = RateMeter()
        self._configured_rpm = rpm
        #: True once any limit applies; False keeps `acquire` on the fast path.
        self._engaged = bool(rpm or tpm)
        self.throttled = 0
        self.breaker_pauses = 0

    async def acquire(self, tokens: int) -> None:
        """Wait until a request of about `tokens` tokens may start, and take its quota."""
        limits = self.limits
        now = self._clock()
        self.sent.tick(now)
        if not self._engaged and now >= limits.paused_until:
            return
        while True:
            wait = limits.reserve(tokens, now=now)
            if wait <= 0.0:
                return
            await asyncio.sleep(wait)
            now = self._clock()

    def settle(self, reserved: int, used: int) -> None:
        if self.limits.tokens is not None:
            self.limits.settle(reserved, used, now=self._clock())

    def on_success(self) -> None:
        now = self._clock()
        self.meter.tick(now)
        self.breaker.record(True, now=now)
        adaptive = self.adaptive
        if adaptive is not None and adaptive.current_rps is not None:
            adaptive.on_success(now, observed_rps=self.meter.rate(now))
            self._apply_rate(now)

    def on_throttle(self, retry_after: float | None, *, status: int = 429) -> None:
        """429/503: pause everyone for Retry-After, and lower the adaptive rate.

        A 429 always lowers the rate. A 503 without Retry-After (like a timeout) may be a random
        fault rather than overload, so it only counts when such signals are a large share of
        recent attempts (see `_stressed`).
        """
        now = self._clock()
        self.throttled += 1
        if retry_after is not None:
            self._engaged = True
            self.limits.pause_until(now + retry_after)
        self.rejections.tick(now)
        if self._configured_rpm and self.rejections.count(now) < 3:
            return  # under a configured limit one 429 is jitter: the pause above is enough
        if status == 429 or retry_after is not None or self._stressed(now):
            self._decrease(now)

    def on_failure(self, *, timeout: bool) -> None:
        """A transport error, 5xx or broken body: feeds the breaker (and the rate, for timeouts)."""
        now = self._clock()
        until = self.breaker.record(False, now=now)
        if until is not None:
            self.breaker_pauses += 1
            self._engaged = True
            self.limits.pause_until(until)
        if timeout and self._stressed(now):
            self._decrease(now)

    def _stressed(self, now: float) -> bool:
        """Overload signals (503s, timeouts) are at least a quarter of recent answers (min. 5)."""
        self.stress.tick(now)
        stress = self.stress.count(now)
        return stress >= 5 and stress >= 0.25 * (stress + self.meter.count(now))

    def _decrease(self, now: float) -> None:
        # What the server accepted lately is the best guess of its limit; before any success,
        # half of what we were sending.
        observed = self.meter.rate(now) or 0.5 * self.sent.rate(now)
        if self.adaptive is not None and self.adaptive.on_throttle(now, observed):
            self._engaged = True
            self._apply_rate(now)

    def on_headers(self, headers: Mapping[str, str]) -> None:
        """Read x-ratelimit-* headers, when the server sends them, to slow down before a 429."""
        if "x-ratelimit-remaining-requests" not in headers and "x-ratelimit-remaining-tokens" not in headers:
            return
        snapshot = read_rate_limit_headers(headers)
        if snapshot is not None:
            self.limits.observe(snapshot, now=self._clock())
            # a spent or low quota (see RateLimits.observe) takes `acquire` off the fast path
            if _short(snapshot.limit_requests, snapshot.remaining_requests) or _short(
                snapshot.limit_tokens, snapshot.remaining_tokens
            ):
                self._engaged = True

    def _apply_rate(self, now: float) -> None:
        rps = self.adaptive.current_rps if self.adaptive else None
        if rps is None:
            return
        per_minute = rps * 60.0
        if self._configured_rpm:
            per_minute = min(per_minute, self._configured_rpm * self._margin)
        if self.limits.requests is None:
            self.limits.requests = TokenBucket(per_minute=per_minute, now=now)
        else:
            self.limits.requests.set_rate(per_minute, now=now)


def _short(limit: int | None, remaining: int | None) -> bool:
    """A quota that is spent, or under `RateLimits.LOW_FRACTION` of its limit."""
    if remaining is None:
        return False
    return remaining <= 0 or bool(limit and remaining < RateLimits.LOW_FRACTION * limit)
