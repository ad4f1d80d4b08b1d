"""Pure rate-limit bookkeeping: token buckets for RPM/TPM and the pauses a server orders.

Nothing here sleeps or reads a clock: every method takes ``now`` (seconds, any monotonic origin) and
answers with numbers; the async wrapper does the sleeping, and tests drive a simulated clock.
"""

from __future__ import annotations

import math

from pipeline.ratecontrol.headers import RateLimitSnapshot

__all__ = ["RateLimits", "TokenBucket"]

_EPSILON = 1e-9  # float slack: waiting exactly wait_time() seconds must be enough


class TokenBucket:
    """A continuously refilled bucket: ``per_minute`` units a minute, at most ``capacity`` banked.

    ``capacity = per_minute / 60 * burst_seconds`` (at least 1), so an idle client may send a short
    burst but never more than ``burst_seconds`` worth of quota at once. A cost larger than the
    capacity (one huge prompt under a small TPM) is allowed once the bucket is full and leaves it in
    debt, so it is delayed rather than refused forever, and the average rate still holds.

    >>> bucket = TokenBucket(per_minute=60, now=0.0)
    >>> bucket.take(1, now=0.0); bucket.wait_time(1, now=0.0)
    1.0
    """

    __slots__ = ("_burst_seconds", "_capacity", "_level", "_rate", "_updated")

    def __init__(self, *, per_minute: float, burst_seconds: float = 1.0, now: float, empty: bool = False) -> None:
        if not burst_seconds > 0:
            raise ValueError(f"burst_seconds must be positive, got {burst_seconds}")
        self._burst_seconds = burst_seconds
        self._updated = now
        self._level = 0.0
        self.set_rate(per_minute, now=now)
        self._level = 1.0 if empty else self._capacity  # full: an idle client may burst

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that goes backwards refills nothing
            self._level = min(self._capacity, self._level + elapsed * self._rate)
            self._updated = now

    @property
    def capacity(self) -> float:
        return self._capacity

    def available(self, *, now: float) -> float:
        """Units in the bucket at ``now``; negative while in debt."""
        self._refill(now)
        return self._level

    def wait_time(self, cost: float, *, now: float) -> float:
        """Seconds until ``cost`` can be taken (0.0 = now). Costs above the capacity wait for a full bucket."""
        self._refill(now)
        need = min(cost, self._capacity)
        missing = need - self._level
        if missing <= _EPSILON * max(1.0, need):
            return 0.0
        return missing / self._rate

    def take(self, cost: float, *, now: float) -> None:
        """Take ``cost`` units, going into debt if needed (after a zero ``wait_time``, or to settle)."""
        self._refill(now)
        self._level -= cost

    def refund(self, amount: float, *, now: float) -> None:
        """Give back units reserved but not used; the bucket never holds more than its capacity."""
        self._refill(now)
        self._level = min(self._capacity, self._level + amount)

    @property
    def per_minute(self) -> float:
        return self._rate * 60.0

    def set_rate(self, per_minute: float, *, now: float, empty: bool = False) -> None:
        """Change the rate from ``now`` on: time before ``now`` refills at the old rate.

        ``empty``: keep at most one unit banked (after a host refused the old rate, no burst at it).
        """
        if not 0 < per_minute < math.inf:
            raise ValueError(f"per_minute must be a positive number, got {per_minute}")
        self._refill(now)
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, self._rate * self._burst_seconds)
        self._level = min(self._level, 1.0 if empty else self._capacity)


class RateLimits:
    """The run's shared request (RPM) and token (TPM) budgets, plus what the server told us.

    ``rpm`` / ``tpm`` of None means unlimited. ``Retry-After`` → :meth:`pause_until`. ``x-ratelimit-*``
    → :meth:`observe`: a spent quota pauses until its reset; a quota under 5 % of its limit spaces
    request starts by ``reset / remaining`` (a token quota counted in mean-sized requests) so what is
    left lasts until the reset. Only ``remaining`` and ``reset`` are used, so it works whatever window
    the host counts in (minute, day).
    """

    LOW_FRACTION = 0.05

    def __init__(self, *, rpm: float | None, tpm: float | None, now: float, burst_seconds: float = 1.0) -> None:
        self.requests = TokenBucket(per_minute=rpm, burst_seconds=burst_seconds, now=now) if rpm else None
        self.tokens = TokenBucket(per_minute=tpm, burst_seconds=burst_seconds, now=now) if tpm else None
        self._paused_until = -math.inf
        self._pace_s = 0.0  # minimum gap between request starts while a server quota runs low
        self._pace_end = -math.inf
        self._last_start = -math.inf
        self._mean_tokens: float | None = None  # moving mean of reserved tokens per request

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def reserve(self, tokens: int, *, now: float) -> float:
        """0.0 when a request of about ``tokens`` tokens may start now (its quota is then taken);
        else the seconds to wait before asking again (nothing taken)."""
        ready = self._paused_until
        if now < self._pace_end:  # a server quota runs low: space the starts
            ready = max(ready, self._last_start + self._pace_s)
        if now < ready:
            return ready - now
        requests, budget = self.requests, self.tokens
        wait = 0.0 if requests is None else requests.wait_time(1, now=now)
        if budget is not None:
            wait = max(wait, budget.wait_time(tokens, now=now))
        if wait > 0.0:
            return wait
        if requests is not None:
            requests.take(1, now=now)
        if budget is not None:
            budget.take(tokens, now=now)
        self._last_start = now
        mean = self._mean_tokens
        self._mean_tokens = float(tokens) if mean is None else mean + 0.05 * (tokens - mean)
        return 0.0

    def settle(self, reserved: int, used: int, *, now: float) -> None:
        """Correct the token budget once the server's usage is known: charge or refund the difference."""
        if self.tokens is not None and used > reserved:
            self.tokens.take(used - reserved, now=now)
        elif self.tokens is not None and used < reserved:
            self.tokens.refund(reserved - used, now=now)

    def pause_until(self, instant: float) -> None:
        """Nobody may reserve before ``instant``; of two pauses the later one holds."""
        if instant > self._paused_until:
            self._paused_until = instant

    def observe(self, snapshot: RateLimitSnapshot, *, now: float) -> None:
        """Act on a response's ``x-ratelimit-*`` headers (see the class docstring)."""
        quotas = (
            (snapshot.limit_requests, snapshot.remaining_requests, snapshot.reset_requests_s, 1.0),
            (snapshot.limit_tokens, snapshot.remaining_tokens, snapshot.reset_tokens_s, self._mean_tokens),
        )
        gap, end, healthy = 0.0, -math.inf, False
        for limit, remaining, reset, per_request in quotas:
            if remaining is None or reset is None:
                continue
            if remaining <= 0:
                self.pause_until(now + reset)
            elif limit and remaining < self.LOW_FRACTION * limit and per_request:
                gap = max(gap, min(reset, reset * per_request / remaining))
                end = max(end, now + reset)
            else:
                healthy = True
        if gap > 0.0:
            self._pace_s = gap
            self._pace_end = end
        elif healthy:  # the window was reset: stop spacing requests
            self._pace_s = 0.0
            self._pace_end = -math.inf
