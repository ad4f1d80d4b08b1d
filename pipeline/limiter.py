"""Pure rate-limit bookkeeping: token buckets for RPM/TPM, server pauses, and an adaptive rate.

Nothing here sleeps or reads a clock. Every method takes ``now`` (seconds, any monotonic origin) and
answers with numbers; the async wrapper around it does the sleeping. That keeps the arithmetic exact
and testable, and lets the same objects be driven by a simulated clock.
"""

from __future__ import annotations

import math
from collections import deque

from pipeline.retry import RateLimitSnapshot

__all__ = ["AdaptiveRate", "RateLimits", "TokenBucket"]

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

    def __init__(self, *, per_minute: float, burst_seconds: float = 1.0, now: float) -> None:
        if burst_seconds <= 0:
            raise ValueError(f"burst_seconds must be positive, got {burst_seconds}")
        self._burst_seconds = burst_seconds
        self._rate = 0.0
        self._capacity = 0.0
        self._updated = now
        self._set_rate(per_minute)
        self._level = self._capacity

    def _set_rate(self, per_minute: float) -> None:
        if not per_minute > 0 or math.isinf(per_minute):
            raise ValueError(f"per_minute must be a positive number, got {per_minute}")
        self._rate = per_minute / 60.0
        self._capacity = max(1.0, self._rate * self._burst_seconds)

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:  # a clock that goes backwards refills nothing
            self._level = min(self._capacity, self._level + elapsed * self._rate)
            self._updated = now

    @property
    def per_minute(self) -> float:
        return self._rate * 60.0

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

    def set_rate(self, per_minute: float, *, now: float) -> None:
        """Change the rate from ``now`` on: time before ``now`` refills at the old rate."""
        self._refill(now)
        self._set_rate(per_minute)
        self._level = min(self._level, self._capacity)


class RateLimits:
    """The run's shared request (RPM) and token (TPM) budgets, plus what the server told us.

    ``rpm`` / ``tpm`` of None means unlimited. Servers speak through headers:
    - ``Retry-After`` → :meth:`pause_until`: nobody starts a request before that instant.
    - ``x-ratelimit-*`` → :meth:`observe`: a spent quota pauses until its reset; a quota that runs
      low (under 5 % of its limit) spaces requests so what is left lasts until the reset,
      ``gap = reset / remaining`` (in requests; a token quota is converted with the mean request
      size). That works whatever window the host counts in (minute, day), because it only uses
      ``remaining`` and ``reset``.
    """

    LOW_FRACTION = 0.05

    def __init__(
        self, *, rpm: float | None, tpm: float | None, now: float, burst_seconds: float = 1.0
    ) -> None:
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

    @property
    def pace_s(self) -> float:
        """Current minimum gap between request starts (0.0 when the server's quotas are healthy)."""
        return self._pace_s

    def reserve(self, tokens: int, *, now: float) -> float:
        """0.0 when a request of about ``tokens`` tokens may start now (its quota is then taken);
        else the seconds to wait before asking again (nothing taken)."""
        if now < self._paused_until:
            return self._paused_until - now
        if now < self._pace_end:
            ready = self._last_start + self._pace_s
            if now < ready:
                return ready - now
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait_time(1, now=now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_time(tokens, now=now))
        if wait > 0.0:
            return wait
        if self.requests is not None:
            self.requests.take(1, now=now)
        if self.tokens is not None:
            self.tokens.take(tokens, now=now)
        self._last_start = now
        mean = self._mean_tokens
        self._mean_tokens = float(tokens) if mean is None else mean + 0.05 * (tokens - mean)
        return 0.0

    def settle(self, reserved: int, used: int, *, now: float) -> None:
        """Correct the token budget once the server's usage is known: charge or refund the difference."""
        if self.tokens is None or used == reserved:
            return
        if used > reserved:
            self.tokens.take(used - reserved, now=now)
        else:
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
        gap = 0.0
        end = -math.inf
        healthy = False
        for limit, remaining, reset, per_request in quotas:
            if remaining is None or reset is None:
                continue
            if remaining <= 0:
                self.pause_until(now + reset)
            elif limit and remaining < self.LOW_FRACTION * limit and per_request:
                gap = max(gap, reset * per_request / remaining)
                end = max(end, now + reset)
            else:
                healthy = True
        if gap > 0.0:
            self._pace_s = gap
            self._pace_end = end
        elif healthy:  # the window was reset: stop spacing requests
            self._pace_s = 0.0
            self._pace_end = -math.inf


class AdaptiveRate:
    """A request rate for servers that throttle without publishing their limit (a hidden RPM).

    Unlimited until the first throttle (429). Then AIMD with a memory of where the limit was:

    - **Decrease** on a throttle: ``ceiling = min(observed_rps, rate)`` where ``observed_rps`` is what
      the server actually accepted lately (successes per second over the last few seconds, which
      under throttling is close to the hidden limit), and ``rate = max(min_rps, decrease_factor *
      ceiling)``. At most one decrease per ``cooldown_s``, and none for requests sent before the last
      decrease (``sent_at``): a burst of 429s for requests already in flight halves the rate once.
    - **Recover fast**: below ``RECOVER_TO * ceiling`` the rate closes ``RECOVER_PER_S`` of the gap
      each second, so the time spent far below the limit is a few seconds.
    - **Probe slowly**: on top, it grows by ``max(increase_rps, PROBE_PER_S * rate)`` per second.
      From 90 % of the ceiling to the ceiling takes ~20 s, so throttles come about once per
      ~25 s: with the rate mostly between 90 % and 100 % of the limit, throughput stays above ~85 %
      of the limit and 429s are about one per cycle.
    - **Limit moved up**: 10 % above the old ceiling without a throttle, the ceiling is forgotten and
      the rate grows ``STARTUP_PER_S`` per second again, as before the first throttle (also the mode
      of a rate started at ``initial_rps``).

    Successes only raise the rate for time that passed (at most 1 s per call: a silence teaches
    nothing) and not while the caller sends far less than allowed (``observed_rps`` below half the
    rate), so an idle stretch does not build up a rate the server never confirmed.
    """

    RECOVER_TO = 0.95
    RECOVER_PER_S = 1.0
    PROBE_PER_S = 0.005
    PROBE_PER_SUCCESS = 0.0005
    STARTUP_PER_S = 0.1
    FORGET_ABOVE = 1.05
    USE_OBSERVED = False
    HISTORY_STEP_S = 0.1
    HISTORY_LENGTH = 600

    __slots__ = (
        "_ceiling",
        "_history",
        "_last_decrease",
        "_rate",
        "_updated",
        "cooldown_s",
        "decrease_factor",
        "increase_rps",
        "min_rps",
    )

    def __init__(
        self,
        *,
        initial_rps: float | None = None,
        min_rps: float = 0.5,
        increase_rps: float = 0.01,
        decrease_factor: float = 0.5,
        cooldown_s: float = 1.0,
    ) -> None:
        if not 0.0 < decrease_factor < 1.0:
            raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        self.min_rps = min_rps
        self.increase_rps = increase_rps
        self.decrease_factor = decrease_factor
        self.cooldown_s = cooldown_s
        self._rate = None if initial_rps is None else max(min_rps, initial_rps)
        self._ceiling: float | None = None
        self._last_decrease = -math.inf
        self._updated: float | None = None
        # (since, rate) checkpoints, so a throttle is judged against the rate its request was sent at.
        self._history: deque[tuple[float, float | None]] = deque(maxlen=self.HISTORY_LENGTH)

    @property
    def current_rps(self) -> float | None:
        """Requests per second to allow now; None = unlimited (no throttle seen yet)."""
        return self._rate

    @property
    def ceiling_rps(self) -> float | None:
        """Where the last throttle happened; None before one, or once the rate passed it safely."""
        return self._ceiling

    def on_throttle(self, now: float, observed_rps: float, *, sent_at: float | None = None) -> bool:
        """A 429 (or other throttle signal) arrived. True when it lowered the rate."""
        # the server needs a moment to recover from the overload that caused the last decrease
        if (now if sent_at is None else sent_at) < self._last_decrease + self.cooldown_s:
            return False
        observed = observed_rps if observed_rps > 0 and math.isfinite(observed_rps) else None
        rate = self._rate if sent_at is None else self._rate_at(sent_at)
        if rate is not None:  # the server let through less than we sent; one throttle costs <= 1 halving
            base = rate if observed is None or not self.USE_OBSERVED else max(min(observed, rate), self.decrease_factor * rate)
        else:  # first throttle: what the server let through is all we know
            base = observed if observed is not None else self.min_rps / self.decrease_factor
        self._ceiling = base
        self._rate = max(self.min_rps, self.decrease_factor * base)
        self._last_decrease = now
        self._updated = now
        self._history.append((now, self._rate))
        return True

    def _rate_at(self, instant: float) -> float | None:
        """The rate in force at ``instant`` (the latest checkpoint at or before it)."""
        for since, rate in reversed(self._history):
            if since <= instant:
                return rate
        return self._history[0][1] if self._history else self._rate

    def on_success(self, now: float, *, observed_rps: float | None = None) -> None:
        """A request succeeded: raise the rate for the time elapsed since the last update."""
        rate = self._rate
        if rate is None:
            return
        if self._updated is None:
            self._updated = now
            return
        if now < self._last_decrease + self.cooldown_s:
            return  # hold the lowered rate while the server recovers
        dt = min(now - max(self._updated, self._last_decrease + self.cooldown_s), max(1.0, 2.0 / rate))
        if dt <= 0.0:
            return
        self._updated = now
        if observed_rps is not None and observed_rps < 0.25 * rate:
            return  # we are not using the rate we have: nothing learnt about the limit
        ceiling = self._ceiling
        if ceiling is None or rate >= self.FORGET_ABOVE * ceiling:  # no limit known, or it moved up
            self._ceiling = None
            rate += rate * self.STARTUP_PER_S * dt
        else:
            target = self.RECOVER_TO * ceiling
            if rate < target:
                rate += (target - rate) * min(1.0, self.RECOVER_PER_S * dt)
            probe = max(self.increase_rps, self.PROBE_PER_S * rate) * dt
            rate += min(probe, self.PROBE_PER_SUCCESS * rate)
        self._rate = rate
        if not self._history or now - self._history[-1][0] >= self.HISTORY_STEP_S:
            self._history.append((now, rate))
